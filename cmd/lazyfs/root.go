package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
)

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &cli.Globals{Stdout: stdout, Stderr: stderr}
	root := &cobra.Command{
		Use:           "lazyfs",
		Short:         "Mount OCI images from a registry without pulling them",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.Setup()
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return cli.UsageError{Err: err} })
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newIndexCommand(g),
		newMountCommand(g),
		newInspectCommand(g),
		newUmountCommand(g),
		newCacheCommand(g),
		newSnapshotterCommand(g),
		newRpullCommand(g),
	)
	return root
}
