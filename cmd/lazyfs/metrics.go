package main

import (
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/metrics"
)

var _ layers.Metrics = (*metrics.Image)(nil)

// addMetricsFlag adds --metrics-address to a command that serves mounts.
func addMetricsFlag(cmd *cobra.Command, addr *string) {
	cmd.Flags().StringVar(addr, "metrics-address", "",
		"serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks a free port, logged at Info); off when empty")
}

// startMetrics makes the process's metrics, watching p's cache, and serves
// them on addr. With addr "" metrics are off: it returns a nil Registry
// (whose methods do nothing) and a no-op stop. stop shuts the server down.
func startMetrics(g *cli.Globals, p *cli.Parts, addr string) (mx *metrics.Registry, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	mx = metrics.New()
	mx.WatchCache(p.Store.Stats)
	srv, err := mx.Listen(addr, g.Log)
	if err != nil {
		return nil, nil, err
	}
	g.Log.Info("serving metrics", "path", "http://"+srv.Addr()+"/metrics")
	return mx, func() {
		if err := srv.Close(); err != nil {
			g.Log.Warn("metrics server", "err", err)
		}
	}, nil
}

// watchBackground adds a background fetch of image to the metrics (mx nil:
// none); the returned func removes it.
func watchBackground(mx *metrics.Registry, image string, b *layers.Background) (unwatch func()) {
	return mx.WatchBackground(image, func() metrics.Background { return backgroundMetrics(b.Progress()) })
}

// backgroundMetrics is a background fetch's progress as metrics reads it.
func backgroundMetrics(p layers.BackgroundProgress) metrics.Background {
	return metrics.Background{State: p.State.String(), Frames: p.Frames, Cached: p.Cached, Bytes: p.Bytes,
		CachedBytes: p.CachedBytes, Fetched: p.Fetched, Requests: p.Requests}
}
