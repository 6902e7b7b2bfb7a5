package main

import (
	"fmt"
	"sync"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/layers"
)

func newIndexCommand(g *cli.Globals) *cobra.Command {
	var push bool
	var span, blockSpan int64
	cmd := &cobra.Command{
		Use:   "index [--push] [--root DIR] [--insecure] REF",
		Short: "Build the index of every layer of an image (and push it beside the image)",
		Long: `Streams each layer of the image once and builds its index: the file table
and the frames that let any byte range be read without the rest of the layer.
The indexes are kept under --root; with --push they are also pushed as one OCI
artifact whose subject is the image manifest, so every machine finds them.`,
		Args: cli.ExactArgs(1, "one image reference"),
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
			var total int64
			for _, l := range img.Manifest.Layers {
				total += l.Size
			}
			cfg := layers.Config{Client: p.Client, Store: p.Store, Logger: g.Log, Build: index.BuildOptions{Span: span, BlockSpan: blockSpan}}
			if cli.IsTerminal(g.Stderr) {
				bar := progressbar.NewOptions64(total,
					progressbar.OptionSetWriter(g.Stderr),
					progressbar.OptionSetDescription("indexing "+args[0]),
					progressbar.OptionShowBytes(true),
					progressbar.OptionClearOnFinish(),
					progressbar.OptionThrottle(100*1e6))
				cfg.Progress = layerProgress(bar)
			}
			built, err := layers.NewResolver(cfg).Build(ctx, img)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LAYER\tFORMAT\tSIZE\tENTRIES\tFRAMES\tINDEX\tTOC")
			for _, l := range built {
				data, err := l.Index.MarshalBinary()
				if err != nil {
					return err
				}
				toc, _, err := index.TOCLen(data)
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", cli.ShortDigest(l.Desc.Digest), l.Index.Format,
					cli.HumanBytes(l.Desc.Size), len(l.Index.Entries), len(l.Index.Frames), cli.HumanBytes(int64(len(data))), cli.HumanBytes(toc))
			}
			tw.Flush()
			if !push {
				return nil
			}
			desc, err := p.Resolver.Push(ctx, img, built)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "pushed index %s for %s@%s\n", desc.Digest, img.Repo, img.Digest)
			return nil
		},
	}
	cmd.Flags().BoolVar(&push, "push", false, "push the indexes to the registry as an artifact referring to the image")
	cmd.Flags().Int64Var(&span, "span", index.DefaultSpan, "uncompressed bytes between frame starts that keep a deflate window")
	cmd.Flags().Int64Var(&blockSpan, "block-span", index.DefaultBlockSpan, "uncompressed bytes between frame starts at deflate blocks inside a span, keeping no window (gzip; -1: none)")
	return cmd
}

// layerProgress folds the per-layer byte counts of parallel builds into one bar.
func layerProgress(bar *progressbar.ProgressBar) func(digest.Digest, int64, int64) {
	var mu sync.Mutex // guards seen and the bar
	seen := map[digest.Digest]int64{}
	return func(layer digest.Digest, read, _ int64) {
		mu.Lock()
		defer mu.Unlock()
		bar.Add64(read - seen[layer])
		seen[layer] = read
	}
}
