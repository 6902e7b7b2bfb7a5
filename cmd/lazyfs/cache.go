package main

import (
	"fmt"
	"path/filepath"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/internal/cli"
)

func newCacheCommand(g *cli.Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache stats|prune",
		Short: "Show or shrink the frame cache shared by all mounts",
	}
	stats := &cobra.Command{
		Use:   "stats [--root DIR]",
		Short: "Show what the cache holds",
		Args:  cli.ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := cache.Usage(filepath.Join(g.Root, "cache"))
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "root:     %s\nframes:   %d (%s)\nindexes:  %d (%s)\n",
				g.Root, u.Frames, cli.HumanBytes(u.FrameBytes), u.Indexes, cli.HumanBytes(u.IndexBytes))
			return nil
		},
	}
	var keep string
	var all bool
	prune := &cobra.Command{
		Use:   "prune [--root DIR] [--keep-storage SIZE] [--all]",
		Short: "Remove least recently used frames (frames are fetched again when read)",
		Args:  cli.ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var keepBytes int64
			if keep != "" {
				n, err := units.RAMInBytes(keep)
				if err != nil {
					return cli.UsageError{Err: fmt.Errorf("--keep-storage %q: %w", keep, err)}
				}
				keepBytes = n
			}
			s, err := cache.Open(cache.Config{Dir: filepath.Join(g.Root, "cache"), Logger: g.Log, MemoryBytes: -1})
			if err != nil {
				return err
			}
			defer s.Close()
			res, err := s.Prune(cmd.Context(), cache.PruneOptions{KeepBytes: keepBytes, Indexes: all})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "Deleted frames: %d\nDeleted indexes: %d\nTotal reclaimed space: %s\n",
				res.Frames, res.Indexes, cli.HumanBytes(res.FrameBytes+res.IndexBytes))
			return nil
		},
	}
	prune.Flags().StringVar(&keep, "keep-storage", "", "amount of frame data to keep (e.g. 2GB); default none")
	prune.Flags().BoolVarP(&all, "all", "a", false, "also remove layer indexes")
	cmd.AddCommand(stats, prune)
	return cmd
}
