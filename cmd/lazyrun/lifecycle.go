package main

import (
	"errors"
	"fmt"
	"strings"
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
				if !all && c.State.Status != runtime.StatusRunning {
					continue
				}
				if quiet {
					fmt.Fprintln(w, c.ShortID())
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s ago\t%s\t\t%s\n", c.ShortID(), c.Image, quoteCommand(c.Command),
					units.HumanDuration(timeSince(c.Created)), describeStatus(c), c.Name)
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
			rt := runtime.New(runtime.Config{Root: g.Root, Logger: g.Log})
			var errs []error
			for _, a := range args {
				c, err := rt.Lookup(a)
				if err == nil {
					err = rt.Remove(c, force, volumes)
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
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	cmd.Flags().BoolVarP(&volumes, "volumes", "v", false, "also remove the container's anonymous volumes")
	return cmd
}
