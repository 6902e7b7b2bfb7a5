package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
)

func newPortCommand(g *cli.Globals, code *exitCoder) *cobra.Command {
	return &cobra.Command{
		Use:   "port CONTAINER [PRIVATE_PORT[/PROTO]]",
		Short: "List a running container's published ports, or the host addresses of one",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return cli.Usagef("\"lazyrun port\" requires 1 or 2 arguments: a container and a port; see 'lazyrun port --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := openLocal(g)
			if err != nil {
				return err
			}
			c, err := rt.Lookup(args[0])
			if err != nil {
				return err
			}
			ports := publishedPorts(c)
			if len(args) == 1 {
				for _, p := range ports {
					fmt.Fprintf(g.Stdout, "%d/%s -> %s\n", p.Port, p.Proto, p.HostAddr())
				}
				return nil
			}
			port, proto, _ := strings.Cut(args[1], "/")
			if proto == "" {
				proto = "tcp"
			}
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil {
				return fmt.Errorf("invalid port %q: want PORT[/PROTO]", args[1])
			}
			found := false
			for _, p := range ports {
				if p.Port == int(n) && p.Proto == proto {
					fmt.Fprintln(g.Stdout, p.HostAddr())
					found = true
				}
			}
			if !found {
				// docker's words, and its exit code.
				fmt.Fprintf(g.Stderr, "Error: No public port '%d/%s' published for %s\n", n, proto, args[0])
				*code = exitFailed
			}
			return nil
		},
	}
}

// publishedPorts are the ports c's supervisor serves now, by container
// port: none unless it runs (or waits to restart).
func publishedPorts(c *runtime.Container) []runtime.PublishedPort {
	if !c.State.Alive() {
		return nil
	}
	ports := slices.Clone(c.State.Ports)
	slices.SortStableFunc(ports, func(a, b runtime.PublishedPort) int {
		if a.Port != b.Port {
			return a.Port - b.Port
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return ports
}

// describePorts renders c's published ports as docker ps' PORTS column.
func describePorts(c *runtime.Container) string {
	var s []string
	for _, p := range publishedPorts(c) {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}
