package main

import (
	"context"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/image-spec/identity"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/snapshotter"
)

func newRpullCommand(g *cli.Globals) *cobra.Command {
	var address, namespace, snapshotterName string
	cmd := &cobra.Command{
		Use:   "rpull [--address CONTAINERD_SOCKET] [--namespace default] REF",
		Short: "Pull an image into containerd with its layers mounted lazily by 'lazyfs snapshotter'",
		Long: `Pulls REF into containerd's image store and unpacks it with the lazyfs
snapshotter, telling the snapshotter which image and layer each snapshot is
(containerd's remote-snapshot labels, which 'ctr pull' does not set). Layers
with a lazyfs index are mounted lazily and never downloaded; the others are
downloaded and unpacked by containerd. Then 'ctr run --snapshotter lazyfs REF'
runs it. Registries on loopback are spoken to over plain HTTP, every registry
with --insecure.`,
		Args: cli.ExactArgs(1, "an image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			named, err := reference.ParseDockerRef(args[0])
			if err != nil {
				return cli.Usagef("image reference %q: %v", args[0], err)
			}
			ref := named.String()
			ctx := namespaces.WithNamespace(cmd.Context(), namespace)
			client, err := containerd.New(address, containerd.WithDefaultNamespace(namespace))
			if err != nil {
				return fmt.Errorf("connect to containerd at %s: %w", address, err)
			}
			defer client.Close()
			start := time.Now()
			img, err := client.Pull(ctx, ref,
				containerd.WithResolver(newResolver(g.Insecure)),
				containerd.WithPullUnpack,
				containerd.WithPullSnapshotter(snapshotterName),
				containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
			)
			if err != nil {
				return fmt.Errorf("pull %s: %w", ref, err)
			}
			lazy, total, err := lazyLayers(ctx, client, img, snapshotterName)
			if err != nil {
				return err
			}
			g.Log.Info("pulled", "image", ref, "digest", img.Target().Digest, "snapshotter", snapshotterName,
				"lazy", lazy, "layers", total, "dur", time.Since(start).Round(time.Millisecond))
			fmt.Fprintf(g.Stdout, "%s %s: %d of %d layers mounted lazily\n", ref, img.Target().Digest, lazy, total)
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", "/run/containerd/containerd.sock", "containerd's socket")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "containerd namespace")
	cmd.Flags().StringVar(&snapshotterName, "snapshotter", "lazyfs", "name of the lazyfs proxy plugin in containerd's config")
	return cmd
}

// lazyLayers counts the image's layers whose snapshot is a lazy mount.
func lazyLayers(ctx context.Context, client *containerd.Client, img containerd.Image, sn string) (lazy, total int, err error) {
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("layers of %s: %w", img.Name(), err)
	}
	svc := client.SnapshotService(sn)
	for _, chainID := range identity.ChainIDs(diffIDs) {
		info, err := svc.Stat(ctx, chainID.String())
		if err != nil {
			return 0, 0, fmt.Errorf("snapshot %s of %s: %w", chainID, img.Name(), err)
		}
		if info.Labels[snapshotter.LabelLayer] != "" {
			lazy++
		}
	}
	return lazy, len(diffIDs), nil
}

// newResolver talks to registries as the rest of lazyfs does: plain HTTP
// on loopback (or everywhere with --insecure), credentials from the docker
// config and credential helpers.
func newResolver(insecure bool) remotes.Resolver {
	plain := docker.MatchLocalhost
	if insecure {
		plain = func(string) (bool, error) { return true, nil }
	}
	auth := docker.NewDockerAuthorizer(docker.WithAuthCreds(credentials))
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(plain), docker.WithAuthorizer(auth)),
	})
}

// credentials looks a registry host up in the docker keychain. A host
// without credentials is anonymous, not an error.
func credentials(host string) (string, string, error) {
	if host == "registry-1.docker.io" {
		host = name.DefaultRegistry
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return "", "", nil
	}
	a, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s: %w", host, err)
	}
	if cfg.IdentityToken != "" {
		return "", cfg.IdentityToken, nil
	}
	return cfg.Username, cfg.Password, nil
}
