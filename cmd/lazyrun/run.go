package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
	"github.com/lazyfs/lazyfs/runtime/spec"
)

func newRunCommand(g *cli.Globals, stdin io.Reader, code *exitCoder) *cobra.Command {
	var (
		s                     runtime.Spec
		name, entrypoint      string
		env, envFiles         []string
		publish               []string
		memory, cpus, network string
		pids, restart, pull   string
		detach, prefetch      bool
		rootfs                bool
		stopTimeout           int
	)
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Run a command in a new container, mounting its image lazily",
		Long: `Creates a container from IMAGE and runs it, as docker run does. The image
is not pulled: its files are fetched when first read. If the image has no
index yet, one is built first by streaming each layer once (the log says so).
As with docker, an image this root has pulled or run before is used as
recorded, without asking the registry (--pull=always asks every time).

A small supervisor process (lazyrun again, in a session of its own) serves
the image, holds the container's output (see lazyrun logs) and records its
exit. With -p it forwards each published host port to the container's
loopback, which has a network namespace of its own (--net=private). In the
foreground lazyrun stays attached and exits with the
container's exit code; 125 when lazyrun itself failed, 126 when the command
cannot be run, 127 when it was not found. With -d it prints the container's
ID once the program runs and returns; the container goes on.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.Usagef("\"lazyrun run\" requires at least 1 argument: an image; see 'lazyrun run --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s.Process.Args = args[1:]
			if cmd.Flags().Changed("entrypoint") {
				s.Process.EntrypointSet = true
				if entrypoint != "" {
					s.Process.Entrypoint = []string{entrypoint}
				}
			}
			var err error
			// Kept resolved, so a restart sees the values of today.
			if s.Process.Env, err = spec.UserEnv(envFiles, env, os.Environ()); err != nil {
				return cli.UsageError{Err: err}
			}
			for _, v := range s.Process.Volumes {
				if _, _, err := spec.ParseVolume(v); err != nil {
					return cli.UsageError{Err: err}
				}
			}
			for _, p := range publish {
				b, err := spec.ParsePublish(p)
				if err != nil {
					return cli.UsageError{Err: err}
				}
				s.Ports = append(s.Ports, b...)
			}
			netSet := cmd.Flags().Changed("net") || cmd.Flags().Changed("network")
			switch {
			case network != runtime.NetHost && network != runtime.NetNone && network != runtime.NetPrivate:
				return cli.Usagef("--net %q: want host, private or none", network)
			case len(s.Ports) > 0 && !netSet:
				s.Net = runtime.NetPrivate
			case len(s.Ports) > 0 && network != runtime.NetPrivate:
				// docker warns and drops the ports with --net=host.
				return cli.Usagef("conflicting options: -p/--publish and --net=%s: ports are published into a private network namespace (--net=private, the default with -p)", network)
			default:
				s.Net = network
			}
			s.NoPrefetch = !prefetch
			if _, err := cli.ParseBackground(s.Background); err != nil {
				return err
			}
			switch s.Cow {
			case runtime.CowOverlay, runtime.CowFuse:
			default:
				return cli.Usagef("--cow %q: want overlay or fuse", s.Cow)
			}
			if memory != "" {
				if s.Memory, err = spec.ParseMemory(memory); err != nil {
					return cli.UsageError{Err: err}
				}
			}
			if cpus != "" {
				if s.NanoCPUs, err = spec.ParseCPUs(cpus); err != nil {
					return cli.UsageError{Err: err}
				}
			}
			if pids != "" {
				if s.PidsLimit, err = spec.ParsePidsLimit(pids); err != nil {
					return cli.UsageError{Err: err}
				}
			}
			if s.Restart, err = runtime.ParseRestartPolicy(restart); err != nil {
				return cli.UsageError{Err: err}
			}
			if s.Remove && s.Restart.Name != "" && s.Restart.Name != runtime.RestartNo {
				return cli.Usagef("conflicting options: --restart and --rm")
			}
			if s.StopSignal != "" {
				if _, err := runtime.ParseSignal(s.StopSignal); err != nil {
					return cli.UsageError{Err: err}
				}
			}
			if cmd.Flags().Changed("stop-timeout") {
				s.StopTimeout = &stopTimeout
			}
			pullPolicy, err := runtime.ParsePullPolicy(pull)
			if err != nil {
				return cli.UsageError{Err: err}
			}
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			if detach {
				c, err := rt.Create(cmd.Context(), args[0], runtime.RunOptions{Name: name, Spec: s, Pull: pullPolicy, Rootfs: rootfs})
				if err != nil {
					return err
				}
				if _, err := rt.Start(cmd.Context(), c, runtime.StartOptions{}); err != nil {
					return err
				}
				fmt.Fprintln(g.Stdout, c.ID)
				return nil
			}
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
			defer signal.Stop(sigs)
			exit, err := rt.Run(cmd.Context(), args[0], runtime.RunOptions{
				Name:    name,
				Spec:    s,
				Pull:    pullPolicy,
				Rootfs:  rootfs,
				IO:      runtime.IO{Stdin: stdin, Stdout: g.Stdout, Stderr: g.Stderr},
				Signals: sigs,
			})
			if err != nil {
				return err
			}
			*code = exitCoder(exit)
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after IMAGE belong to the command
	f.Bool("help", false, "help for run")
	f.StringVar(&name, "name", "", "assign a name to the container")
	f.BoolVarP(&detach, "detach", "d", false, "run the container in the background and print its ID")
	f.BoolVar(&s.Remove, "rm", false, "remove the container and its anonymous volumes when it exits")
	f.StringVar(&restart, "restart", runtime.RestartNo, "restart policy when the program exits: no, on-failure[:max-retries], always, unless-stopped")
	f.StringVar(&s.StopSignal, "stop-signal", "", "signal that stops the container (default: the image's STOPSIGNAL, else SIGTERM)")
	f.IntVar(&stopTimeout, "stop-timeout", 10, "seconds to wait for the program to stop before killing it (-1: for ever)")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass the caller's)")
	f.StringArrayVar(&envFiles, "env-file", nil, "read environment variables from a file")
	f.StringVarP(&s.Process.WorkingDir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&s.Process.User, "user", "u", "", "user to run as: name|uid[:group|gid]")
	f.StringArrayVar(&s.Process.GroupAdd, "group-add", nil, "additional groups to join")
	f.StringArrayVarP(&s.Process.Volumes, "volume", "v", nil, "bind mount a host path or a named volume: HOST|NAME:CONTAINER[:ro|rw], or CONTAINER for an anonymous volume")
	f.StringVarP(&s.Process.Hostname, "hostname", "h", "", "container host name")
	f.StringVar(&entrypoint, "entrypoint", "", "overwrite the image's entrypoint (\"\" clears it)")
	f.BoolVarP(&s.Interactive, "interactive", "i", false, "keep stdin open and attached")
	f.BoolVarP(&s.Process.TTY, "tty", "t", false, "allocate a pseudo-terminal")
	f.StringVarP(&memory, "memory", "m", "", "memory limit (e.g. 512m, 1g)")
	f.StringVar(&cpus, "cpus", "", "number of CPUs (e.g. 0.5)")
	f.StringVar(&pids, "pids-limit", "", "process limit; 0 or -1 = unlimited")
	f.StringVar(&pull, "pull", string(runtime.PullMissing), "when to ask the registry what IMAGE names: missing (only if this root has not pulled or run it), always, or never")
	f.BoolVar(&rootfs, "rootfs", false, "IMAGE is a directory holding the container's root file system, as with podman: it is the lower layer of the container's overlay, not written to (no image config, no FUSE)")
	f.BoolVar(&s.RecordPrefetch, "record-prefetch", false, "note what the container reads of its image until the program exits, and push that to the registry as the image's prefetch profile")
	f.BoolVar(&prefetch, "prefetch", true, "fetch what the image's prefetch profile names, if it has one, as the container starts")
	cli.AddBackgroundFlag(f, &s.Background)
	f.StringVar(&s.Cow, "cow", runtime.CowOverlay, "who keeps the container's changes: overlay (kernel overlayfs over the lazy mount) or fuse (lazyfs' own copy-on-write)")
	f.StringArrayVarP(&publish, "publish", "p", nil, "publish a container's port on the host: [IP:][HOSTPORT:]PORT[/tcp], HOSTPORT empty or 0 for a free one, ranges as START-END")
	f.StringVar(&network, "net", runtime.NetHost, "network: host (the host's network; the default without -p), private (loopback only, reached through -p; the default with -p) or none (loopback only)")
	f.StringVar(&network, "network", runtime.NetHost, "same as --net")
	return cmd
}

// describeStatus renders a container's status as docker ps does.
func describeStatus(c *runtime.Container) string {
	st := c.State
	switch st.Status {
	case runtime.StatusRunning:
		return "Up " + units.HumanDuration(timeSince(st.StartedAt))
	case runtime.StatusRestarting:
		return fmt.Sprintf("Restarting (%d) %s ago", st.ExitCode, units.HumanDuration(timeSince(st.FinishedAt)))
	case runtime.StatusExited:
		return fmt.Sprintf("Exited (%d) %s ago", st.ExitCode, units.HumanDuration(timeSince(st.FinishedAt)))
	case runtime.StatusDead:
		return "Dead"
	}
	return "Created"
}
