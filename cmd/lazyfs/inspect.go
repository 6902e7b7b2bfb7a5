package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newInspectCommand(g *cli.Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect [--root DIR] [--insecure] REF",
		Short: "Show an image's layers and how each will be read",
		Args:  cli.ExactArgs(1, "one image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			p, err := g.Open()
			if err != nil {
				return err
			}
			defer p.Close()
			img, err := p.Client.Resolve(ctx, args[0])
			if err != nil {
				return err
			}
			ls, err := p.Resolver.Inspect(ctx, img)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "image:    %s\ndigest:   %s\nplatform: %s/%s\n", args[0], img.Digest, img.Config.OS, img.Config.Architecture)
			if len(ls) > 0 && ls[0].Artifact != nil {
				fmt.Fprintf(g.Stdout, "index:    %s\n", ls[0].Artifact.Digest)
			} else {
				fmt.Fprintf(g.Stdout, "index:    none in the registry (lazyfs index --push %s builds one)\n", args[0])
			}
			fmt.Fprintln(g.Stdout)
			tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LAYER\tMEDIA TYPE\tSIZE\tINDEX\tTOC\tWINDOWS\tPATH")
			for _, l := range ls {
				where := "none"
				switch {
				case l.Local:
					where = "local"
				case l.Remote != nil:
					where = "registry"
				}
				path := "lazy"
				switch {
				case !l.Lazy:
					path = "whole: " + l.WhyNot
				case where == "none":
					path = "lazy, after streaming the layer once to index it"
				}
				toc, wins := "-", "-"
				if l.TOCSize > 0 {
					toc, wins = cli.HumanBytes(l.TOCSize), cli.HumanBytes(l.WindowsSize)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cli.ShortDigest(l.Desc.Digest), l.Desc.MediaType,
					cli.HumanBytes(l.Desc.Size), where, toc, wins, path)
			}
			return tw.Flush()
		},
	}
}

func newUmountCommand(g *cli.Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a lazyfs mount (its lazyfs mount process then exits)",
		Args:  cli.ExactArgs(1, "one mount point"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := unix.Unmount(args[0], 0); err != nil {
				return fmt.Errorf("unmount %s: %w", args[0], err)
			}
			return nil
		},
	}
}
