package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/fusefs"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/layers"
)

func newMountCommand(g *cli.Globals) *cobra.Command {
	var debug bool
	cmd := &cobra.Command{
		Use:   "mount [--root DIR] [--insecure] REF MOUNTPOINT",
		Short: "Mount an image read-only; file bytes are fetched when first read",
		Long: `Mounts the merged layers of an image at MOUNTPOINT and serves it in the
foreground. The mount is ready when MOUNTPOINT is a mount point. SIGINT or
SIGTERM (or 'lazyfs umount MOUNTPOINT') unmounts it; on exit it reports the
bytes and requests fetched and the cache hits.`,
		Args: cli.ExactArgs(2, "an image reference and a mount point"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, dir := args[0], args[1]
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("mount point %s: not a directory", dir)
			}
			start := time.Now()
			p, err := g.Open()
			if err != nil {
				return err
			}
			defer p.Close()
			img, err := p.Client.Resolve(ctx, ref)
			if err != nil {
				return err
			}
			ls, err := p.Resolver.Layers(ctx, img)
			if err != nil {
				return err
			}
			idxs := make([]*index.Index, len(ls))
			for i, l := range ls {
				idxs[i] = l.Index
				g.Log.Debug("layer ready", "layer", l.Desc.Digest, "origin", l.Origin)
			}
			src := layers.NewSource(p.Client, img.Repo, p.Store, g.Log)
			src.SetReadTimeout(g.ReadTimeout)
			defer src.Close()
			m, err := fusefs.MountLayers(dir, idxs, src, fusefs.Config{
				FSName: "lazyfs:" + ref,
				Logger: g.Log,
				Debug:  debug,
			})
			if err != nil {
				return err
			}
			g.Log.Info("mounted", "image", ref, "digest", img.Digest, "path", dir, "layers", len(ls), "dur", time.Since(start).Round(time.Millisecond))
			done := make(chan struct{})
			go func() { m.Wait(); close(done) }()
			select {
			case <-done: // unmounted from outside (lazyfs umount, umount)
			case <-ctx.Done():
				if err := m.Unmount(); err != nil {
					return err
				}
				<-done
			}
			fs, cs := p.Client.Stats(), p.Store.Stats()
			fmt.Fprintf(g.Stderr, "lazyfs: unmounted %s: fetched %s in %d requests (%d retries); cache: %d memory hits, %d disk hits, %d misses\n",
				dir, cli.HumanBytes(fs.BytesFetched), fs.Requests, fs.Retries, cs.MemoryHits, cs.DiskHits, cs.Misses)
			return nil
		},
	}
	cmd.Flags().BoolVar(&debug, "debug-fuse", false, "log every FUSE request")
	return cmd
}
