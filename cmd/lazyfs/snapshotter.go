package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/snapshotter"
)

// defaultSnapshotterSocket is where `lazyfs snapshotter` listens unless
// --address says otherwise; containerd's [proxy_plugins.lazyfs] names it.
const defaultSnapshotterSocket = "/run/lazyfs/snapshotter.sock"

func newSnapshotterCommand(g *cli.Globals) *cobra.Command {
	var (
		address    string
		debug      bool
		metricsAdr string
		background string
	)
	cmd := &cobra.Command{
		Use:   "snapshotter [--root DIR] [--address SOCKET]",
		Short: "Serve image layers to containerd as a remote snapshotter, mounted lazily",
		Long: `Serves containerd's snapshots API on a unix socket, for containerd's
[proxy_plugins] (see docs/containerd.md). A layer pulled with the
remote-snapshot labels ('lazyfs rpull') that has a lazyfs index is mounted
lazily under ROOT/snapshotter/snapshots/ID/fs, and containerd downloads
nothing of it; any other layer is unpacked by containerd as usual. One
process and one cache under --root serve every layer of every image.
SIGINT or SIGTERM stops it and unmounts the layers; on start it mounts the
lazy layers it had committed again. With --metrics-address it serves
Prometheus metrics (see docs/containerd.md, Metrics).`,
		Args: cli.ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			bgMode, err := cli.ParseBackground(background)
			if err != nil {
				return err
			}
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
			start := time.Now()
			root := filepath.Join(g.Root, "snapshotter")
			sn, err := snapshotter.New(ctx, snapshotter.Config{
				Root: root, Client: p.Client, Store: p.Store, Logger: g.Log, FUSEDebug: debug, Metrics: mx,
				Background: layers.BackgroundConfig{Mode: bgMode},
			})
			if err != nil {
				return err
			}
			defer sn.Close()
			l, err := listenUnix(address)
			if err != nil {
				return err
			}
			defer os.Remove(address)
			g.Log.Info("serving containerd's snapshots API", "path", address, "root", root, "dur", time.Since(start).Round(time.Millisecond))
			if err := snapshotter.Serve(ctx, l, sn); err != nil {
				return fmt.Errorf("serve %s: %w", address, err)
			}
			g.Log.Info("stopping: unmounting lazy layers")
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", defaultSnapshotterSocket, "unix socket to serve containerd's snapshots API on")
	cmd.Flags().BoolVar(&debug, "debug-fuse", false, "log every FUSE request")
	addMetricsFlag(cmd, &metricsAdr)
	cli.AddBackgroundFlag(cmd.Flags(), &background)
	return cmd
}

// listenUnix listens on a unix socket only root can use. A socket left by
// a snapshotter that is gone is replaced; one that answers is not.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another process serves on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l, nil
}
