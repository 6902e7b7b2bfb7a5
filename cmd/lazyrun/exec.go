package main

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
	"github.com/lazyfs/lazyfs/runtime/spec"
)

func newExecCommand(g *cli.Globals) *cobra.Command {
	var (
		opt runtime.ExecOptions
		env []string
	)
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in a running container",
		Long: `Runs COMMAND inside the running CONTAINER, in its namespaces, root and cgroup,
with its environment (plus -e), its user and working directory unless -u and
-w say otherwise, as docker exec does. lazyrun exits with the command's exit
code; 126 when it cannot be run, 127 when it was not found.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return cli.Usagef("\"lazyrun exec\" requires at least 2 arguments: a container and a command; see 'lazyrun exec --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if opt.Env, err = spec.UserEnv(nil, env, os.Environ()); err != nil {
				return cli.UsageError{Err: err}
			}
			opt.Args = args[1:]
			rt, err := openLocal(g)
			if err != nil {
				return err
			}
			c, err := rt.Lookup(args[0])
			if err != nil {
				return err
			}
			// On success this process becomes the program's helper and
			// never comes back here.
			return rt.Exec(cmd.Context(), c, opt)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after CONTAINER belong to the command
	f.BoolVarP(&opt.Interactive, "interactive", "i", false, "keep stdin attached")
	f.BoolVarP(&opt.TTY, "tty", "t", false, "allocate a pseudo-terminal")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass the caller's)")
	f.StringVarP(&opt.WorkingDir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&opt.User, "user", "u", "", "user to run as: name|uid[:group|gid]")
	return cmd
}

func newLogsCommand(g *cli.Globals) *cobra.Command {
	var (
		opt  runtime.LogsOptions
		tail string
	)
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Print a container's output",
		Long: `Prints what the container's program wrote, stdout to stdout and stderr to
stderr, from the log its supervisor keeps (containers/ID/container.log, in
docker's json-file format, rotated at 4 MiB into container.log.1). With -f it
goes on printing until the container stops.`,
		Args: cli.ExactArgs(1, "a container"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt.Tail = -1
			if tail != "all" {
				n, err := strconv.Atoi(tail)
				if err != nil {
					return cli.Usagef("--tail %q: want a number or all", tail)
				}
				if n >= 0 {
					opt.Tail = n
				}
			}
			rt, err := openLocal(g)
			if err != nil {
				return err
			}
			c, err := rt.Lookup(args[0])
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opt.Stdout, opt.Stderr = g.Stdout, g.Stderr
			return rt.Logs(ctx, c, opt)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&opt.Follow, "follow", "f", false, "follow the output while the container runs")
	f.StringVarP(&tail, "tail", "n", "all", "number of lines to show from the end")
	f.BoolVarP(&opt.Timestamps, "timestamps", "t", false, "show timestamps")
	return cmd
}
