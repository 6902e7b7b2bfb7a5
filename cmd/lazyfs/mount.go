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
	var (
		debug      bool
		metricsAdr string
		background string
	)
	cmd := &cobra.Command{
		Use:   "mount [--root DIR] [--insecure] REF MOUNTPOINT",
		Short: "Mount an image read-only; file bytes are fetched when first read",
		Long: `Mounts the merged layers of an image at MOUNTPOINT and serves it in the
foreground. The mount is ready when MOUNTPOINT is a mount point. SIGINT or
SIGTERM (or 'lazyfs umount MOUNTPOINT') unmounts it; on exit it reports the
bytes and requests fetched and the cache hits. With --metrics-address it
serves Prometheus metrics meanwhile (see docs/containerd.md, Metrics).`,
		Args: cli.ExactArgs(2, "an image reference and a mount point"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ref, dir := args[0], args[1]
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("mount point %s: not a directory", dir)
			}
			bgMode, err := cli.ParseBackground(background)
			if err != nil {
				return err
			}
			start := time.Now()
			p, err := g.Open()
			if err != nil {
				return err
			}
			defer p.Close()
			mx, stopMetrics, err := startMetrics(g, p, metricsAdr)
			if err != nil {
				return err
			}
			defer stopMetrics()
			img, err := p.Client.Resolve(ctx, ref)
			if err != nil {
				mx.MountFailed()
				return err
			}
			ls, err := p.Resolver.Layers(ctx, img)
			if err != nil {
				mx.MountFailed()
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
			cfg := fusefs.Config{
				FSName: "lazyfs:" + ref,
				Logger: g.Log,
				Debug:  debug,
			}
			if mx != nil {
				src.SetMetrics(mx.Image(img.Repo))
				cfg.OnIOError = mx.ReadError
			}
			m, err := fusefs.MountLayers(dir, idxs, src, cfg)
			if err != nil {
				mx.MountFailed()
				return err
			}
			mx.MountStarted()
			defer mx.MountEnded()
			g.Log.Info("mounted", "image", ref, "digest", img.Digest, "path", dir, "layers", len(ls), "dur", time.Since(start).Round(time.Millisecond))
			bg := src.StartBackground(idxs, layers.BackgroundConfig{Mode: bgMode, Name: ref})
			defer bg.Stop()
			defer watchBackground(mx, img.Repo, bg)()
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
	addMetricsFlag(cmd, &metricsAdr)
	cli.AddBackgroundFlag(cmd.Flags(), &background)
	return cmd
}
