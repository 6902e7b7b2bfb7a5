package snapshotter

import (
	"context"
	"errors"
	"net"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"google.golang.org/grpc"
)

// stopGrace is how long Serve lets running calls finish once ctx ends.
const stopGrace = 10 * time.Second

// Serve answers containerd's snapshots API (the proxy plugin protocol) for
// sn on l until ctx ends, then stops accepting calls, lets the running ones
// finish for a few seconds and returns nil. It does not close sn.
func Serve(ctx context.Context, l net.Listener, sn *Snapshotter) error {
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopGrace):
		srv.Stop()
		<-stopped
	}
	<-served
	return nil
}
