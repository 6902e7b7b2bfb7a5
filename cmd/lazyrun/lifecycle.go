package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
)

var timeSince = time.Since

func newPsCommand(g *cli.Globals) *cobra.Command {
	var all, quiet bool
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List containers (running ones; -a for all)",
		Args:  cli.ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt := runtime.New(runtime.Config{Root: g.Root, Logger: g.Log})
			cs, err := rt.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(g.Stdout, 0, 8, 3, ' ', 0)
			if !quiet {
				fmt.Fprintln(w, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tPORTS\tNAMES")
			}
			for _, c := range cs {
				if !all && !c.State.Alive() {
					continue
				}
				if quiet {
					fmt.Fprintln(w, c.ShortID())
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s ago\t%s\t%s\t%s\n", c.ShortID(), imageOf(c), quoteCommand(c.Command),
					units.HumanDuration(timeSince(c.Created)), describeStatus(c), describePorts(c), c.Name)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all containers, not only running ones")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show container IDs")
	return cmd
}

// quoteCommand shortens a command line for ps, as docker does.
func quoteCommand(argv []string) string {
	s := strings.Join(argv, " ")
	if len(s) > 20 {
		s = s[:19] + "…"
	}
	return `"` + s + `"`
}

func newRmCommand(g *cli.Globals) *cobra.Command {
	var force, volumes bool
	cmd := &cobra.Command{
		Use:   "rm [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Remove containers with their upper layers",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("\"lazyrun rm\" requires at least 1 argument: a container; see 'lazyrun rm --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := openLocal(g)
			if err != nil {
				return err
			}
			var errs []error
			for _, a := range args {
				c, err := rt.Lookup(a)
				if err == nil {
					err = rt.Remove(cmd.Context(), c, force, volumes)
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(g.Stdout, a)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first (or clean up after a dead one)")
	cmd.Flags().BoolVarP(&volumes, "volumes", "v", false, "also remove the container's anonymous volumes")
	return cmd
}

// eachContainer applies fn to each named container, at most 8 at once as
// docker's CLI does, prints each name that succeeded in the order given, and
// returns every error.
func eachContainer(g *cli.Globals, names []string, fn func(c *runtime.Container) error) error {
	rt, err := openLocal(g)
	if err != nil {
		return err
	}
	errs := make([]error, len(names))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := rt.Lookup(name)
			if err == nil {
				err = fn(c)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, name := range names {
		if errs[i] == nil {
			fmt.Fprintln(g.Stdout, name)
		}
	}
	return errors.Join(errs...)
}

func requireContainers(verb string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cli.Usagef("\"lazyrun %s\" requires at least 1 argument: a container; see 'lazyrun %s --help'", verb, verb)
		}
		return nil
	}
}

func newStopCommand(g *cli.Globals) *cobra.Command {
	var (
		timeout int
		sig     string
	)
	cmd := &cobra.Command{
		Use:   "stop [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Stop running containers",
		Long: `Sends each container's program its stop signal (--stop-signal, else the
image's STOPSIGNAL, else SIGTERM) and kills it if it has not exited after the
timeout (--stop-timeout, else 10 seconds). A stopped container is not
restarted whatever its --restart policy; lazyrun start runs it again.`,
		Args: requireContainers("stop"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opt runtime.StopOptions
			if cmd.Flags().Changed("time") {
				d := time.Duration(timeout) * time.Second
				if timeout < 0 {
					d = -1
				}
				opt.Timeout = &d
			}
			if sig != "" {
				s, err := runtime.ParseSignal(sig)
				if err != nil {
					return cli.UsageError{Err: err}
				}
				opt.Signal = s
			}
			rt, err := openLocal(g)
			if err != nil {
				return err
			}
			return eachContainer(g, args, func(c *runtime.Container) error {
				return rt.Stop(cmd.Context(), c, opt)
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing the container (-1: for ever)")
	cmd.Flags().StringVarP(&sig, "signal", "s", "", "signal to send instead of the container's stop signal")
	return cmd
}

func newKillCommand(g *cli.Globals) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Send a signal to running containers' programs (SIGKILL by default)",
		Args:  requireContainers("kill"),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.ParseSignal(sig)
			if err != nil {
				return cli.UsageError{Err: err}
			}
			rt, err := openLocal(g)
			if err != nil {
				return err
			}
			return eachContainer(g, args, func(c *runtime.Container) error {
				return rt.Kill(cmd.Context(), c, s)
			})
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal to send")
	return cmd
}

func newStartCommand(g *cli.Globals, stdin io.Reader, code *exitCoder) *cobra.Command {
	var attach, interactive bool
	cmd := &cobra.Command{
		Use:   "start [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Start stopped containers again (with the same upper layer)",
		Long: `Starts each container again under a new supervisor, with the changes it made
so far, detached. With -a (one container only) lazyrun stays attached as run
does and exits with the container's exit code. A container that runs is left
alone; a dead one (its supervisor was killed) is cleaned up and started.`,
		Args: requireContainers("start"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if attach && len(args) > 1 {
				return cli.Usagef("you cannot start and attach multiple containers at once")
			}
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			if !attach {
				return eachContainer(g, args, func(c *runtime.Container) error {
					if c.State.Alive() {
						return nil
					}
					_, err := rt.Start(cmd.Context(), c, runtime.StartOptions{})
					return err
				})
			}
			c, err := rt.Lookup(args[0])
			if err != nil {
				return err
			}
			if c.State.Alive() {
				return fmt.Errorf("container %s is running: lazyrun cannot attach to it", c.Name)
			}
			io_ := runtime.IO{Stdout: g.Stdout, Stderr: g.Stderr}
			if interactive {
				io_.Stdin = stdin
			}
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
			defer signal.Stop(sigs)
			st, err := rt.Start(cmd.Context(), c, runtime.StartOptions{Attach: &io_, Signals: sigs})
			if err != nil {
				return err
			}
			exit, err := st.Wait()
			if err != nil {
				return err
			}
			*code = exitCoder(exit)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&attach, "attach", "a", false, "attach the container's output and exit with its code")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "attach the container's stdin (with -a, for a container run with -i)")
	return cmd
}

func newRestartCommand(g *cli.Globals) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "restart [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Stop and start containers again",
		Args:  requireContainers("restart"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opt runtime.StopOptions
			if cmd.Flags().Changed("time") {
				d := time.Duration(timeout) * time.Second
				opt.Timeout = &d
			}
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			return eachContainer(g, args, func(c *runtime.Container) error {
				if err := rt.Stop(cmd.Context(), c, opt); err != nil {
					return err
				}
				_, err := rt.Start(cmd.Context(), c, runtime.StartOptions{})
				return err
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait for the container to stop before killing it")
	return cmd
}

// imageOf is what ps shows as a container's image: its reference, or the
// directory it runs on (--rootfs).
func imageOf(c *runtime.Container) string {
	if c.Rootfs != "" {
		return c.Rootfs
	}
	return c.Image
}
