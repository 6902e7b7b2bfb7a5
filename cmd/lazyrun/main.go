// Command lazyrun runs containers from OCI images in a registry without
// pulling them first: the image is mounted lazily (see lazyfs) and the
// container writes into its own upper layer. Its commands and flags follow
// docker's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
)

func main() {
	if filepath.Base(os.Args[0]) == runtime.InitArg0 {
		os.Exit(runtime.Init())
	}
	// Signals are the container's business while one runs: each command
	// that runs one takes them itself.
	code := run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	os.Exit(code)
}

// Exit codes of lazyrun itself, as docker's CLI: 125 when lazyrun failed or
// was called wrongly, 1 for a failed lifecycle command; `run` otherwise
// exits with the container's code.
const (
	exitFailed = 1
	exitUsage  = 125
)

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var code exitCoder
	cmd := newRootCommand(stdin, stdout, stderr, &code)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	var se *runtime.StartError
	switch {
	case err == nil:
		return int(code)
	case errors.As(err, &se):
		fmt.Fprintf(stderr, "lazyrun: %v\n", err)
		return se.Code
	case cli.IsUsage(err):
		fmt.Fprintf(stderr, "lazyrun: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "lazyrun: %v\n", err)
		if cmd.CalledAs() == "run" {
			return exitUsage
		}
		return exitFailed
	}
}

// exitCoder lets a command that succeeded still choose the exit code, as
// `run` passes on the container's.
type exitCoder int

func newRootCommand(stdin io.Reader, stdout, stderr io.Writer, code *exitCoder) *cobra.Command {
	g := &cli.Globals{Stdout: stdout, Stderr: stderr}
	root := &cobra.Command{
		Use:           "lazyrun",
		Short:         "Run containers from registry images without pulling them first",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.Setup()
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return cli.UsageError{Err: err} })
	g.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newRunCommand(g, stdin, code),
		newPsCommand(g),
		newRmCommand(g),
		newPullCommand(g),
		newImagesCommand(g),
		newCommitCommand(g),
	)
	return root
}

// open gives a runtime on the flags' root.
func open(g *cli.Globals) (*runtime.Runtime, *cli.Parts, error) {
	p, err := g.Open()
	if err != nil {
		return nil, nil, err
	}
	rt := runtime.New(runtime.Config{Root: g.Root, Client: p.Client, Store: p.Store, Resolver: p.Resolver, ReadTimeout: g.ReadTimeout, Logger: g.Log})
	return rt, p, nil
}
