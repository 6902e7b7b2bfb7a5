package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/runtime"
)

func newCommitCommand(g *cli.Globals) *cobra.Command {
	var opt runtime.CommitOptions
	cmd := &cobra.Command{
		Use:   "commit [OPTIONS] CONTAINER REPOSITORY[:TAG]",
		Short: "Create an image from a stopped container's changes and push it",
		Long: `Turns the container's upper layer into a new layer on top of the image it
was created from and pushes the result to REPOSITORY[:TAG], with its layer
indexes, so the new image runs lazily at once. Prints the new image's digest.

The new image's config is the container's: the command, environment, user,
working directory, anonymous volumes, published ports and stop signal it ran
with, then each --change applied. A change is a Dockerfile instruction: CMD,
ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR.

As docker commit, but: the container must be stopped (lazyrun does not pause
a running one) and the image is pushed (there is no local image store).`,
		Args: cli.ExactArgs(2, "a container and a repository[:tag]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[1]
			if err := fetch.ValidatePushRef(ref); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			c, err := rt.Lookup(args[0])
			if err != nil {
				return err
			}
			img, err := rt.Commit(ctx, c, ref, opt)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Stdout, img.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opt.Message, "message", "m", "", "commit message (the history entry's comment)")
	f.StringVarP(&opt.Author, "author", "a", "", `author (e.g. "Jane Doe <jane@example.com>")`)
	f.StringArrayVarP(&opt.Changes, "change", "c", nil, `apply a Dockerfile instruction to the image's config (e.g. 'CMD ["sh"]', 'ENV A=b')`)
	return cmd
}
