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
	"strconv"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case runtime.InitArg0:
		os.Exit(runtime.Init())
	case runtime.ExecArg0:
		os.Exit(runtime.ExecInContainer())
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
		newStartCommand(g, stdin, code),
		newStopCommand(g),
		newRestartCommand(g),
		newKillCommand(g),
		newExecCommand(g),
		newLogsCommand(g),
		newPsCommand(g),
		newPortCommand(g, code),
		newRmCommand(g),
		newSuperviseCommand(g, code),
		newPullCommand(g),
		newImagesCommand(g),
		newHistoryCommand(g),
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
	sup, err := supervisorArgs(g)
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	rt := runtime.New(runtime.Config{Root: g.Root, Client: p.Client, Store: p.Store, Resolver: p.Resolver,
		ReadTimeout: g.ReadTimeout, SupervisorArgs: sup, Logger: g.Log})
	return rt, p, nil
}

// openLocal gives a runtime for the commands that read and change only the
// root (ps, stop, logs, ...): no registry client, no cache.
func openLocal(g *cli.Globals) (*runtime.Runtime, error) {
	sup, err := supervisorArgs(g)
	if err != nil {
		return nil, err
	}
	return runtime.New(runtime.Config{Root: g.Root, SupervisorArgs: sup, Logger: g.Log}), nil
}

// supervisorArgs are the arguments that make lazyrun a container's
// supervisor with the same global flags as this command: it serves the
// image, so it needs the registry and cache settings too.
func supervisorArgs(g *cli.Globals) ([]string, error) {
	root, err := filepath.Abs(g.Root) // the supervisor runs in /
	if err != nil {
		return nil, err
	}
	args := []string{"--root", root, "--log-level", g.LogLevel, "--fetch-timeout", g.Timeout.String(),
		"--cache-size", g.CacheSize, "--retries", strconv.Itoa(g.Retries), "--read-timeout", g.ReadTimeout.String()}
	if g.Insecure {
		args = append(args, "--insecure")
	}
	return append(args, "supervise"), nil
}

func newSuperviseCommand(g *cli.Globals, code *exitCoder) *cobra.Command {
	return &cobra.Command{
		Use:    "supervise CONTAINER-ID",
		Short:  "Supervise a container (started by run and start, not by hand)",
		Hidden: true,
		Args:   cli.ExactArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			*code = exitCoder(rt.Supervise(args[0]))
			return nil
		},
	}
}
