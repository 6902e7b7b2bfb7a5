package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/runtime"
)

func newPullCommand(g *cli.Globals) *cobra.Command {
	var parallel int
	var unpack bool
	cmd := &cobra.Command{
		Use:   "pull [OPTIONS] IMAGE",
		Short: "Fetch every file of an image into the cache, so that it runs without the registry",
		Long: `Resolves IMAGE, finds (or builds) the index of each layer, and fetches every
frame of every layer that the cache does not hold yet, in few large requests.
Afterwards the image runs, every file of it, with the registry unreachable:
lazyrun run then uses the image as pulled. This is also the "pull everything
first" baseline that lazy starts are measured against.

With --unpack (the default) every layer is then written out from the cache
under ROOT/layers, as docker unpacks a pulled image: containers of the image
(--cow=overlay) run on a kernel overlay straight over those directories, with
no FUSE mount. --unpack=false keeps only the cache.`,
		Args: cli.ExactArgs(1, "one image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			n, err := runtime.ParseImageName(ref)
			if err != nil {
				return cli.UsageError{Err: err}
			}
			rt, p, err := open(g)
			if err != nil {
				return err
			}
			defer p.Close()
			out := g.Stdout
			if n.Digest == "" && !hasTag(ref) {
				fmt.Fprintf(out, "Using default tag: %s\n", n.Tag)
			}
			pr := &pullPrinter{out: out, bar: cli.IsTerminal(g.Stderr), stderr: g.Stderr, ref: ref}
			res, err := rt.Pull(cmd.Context(), ref, runtime.PullOptions{
				Parallel: parallel,
				Resolved: func(*fetch.Image) {
					tag := n.Tag
					if n.Digest != "" {
						tag = n.Digest.String()
					}
					_, path, _ := strings.Cut(n.Repository, "/")
					fmt.Fprintf(out, "%s: Pulling from %s\n", tag, path)
				},
				Indexed:  pr.start,
				Progress: pr.progress,
				Unpack:   unpack,
				Unpacked: pr.unpacked,
			})
			pr.finish()
			if err != nil {
				return err
			}
			d := res.Image.Digest
			if res.Image.IndexDigest != "" {
				d = res.Image.IndexDigest // what the tag names, as docker shows it
			}
			fmt.Fprintf(out, "Digest: %s\n", d)
			if res.Fetched() {
				fmt.Fprintf(out, "Status: Downloaded newer image for %s\n", ref)
			} else {
				fmt.Fprintf(out, "Status: Image is up to date for %s\n", ref)
			}
			fmt.Fprintln(out, n.String())
			return nil
		},
	}
	cmd.Flags().IntVar(&parallel, "parallel", 0, "requests in flight at once (0 = 6)")
	cmd.Flags().BoolVar(&unpack, "unpack", true, "unpack every layer under the root once cached, so that containers run on kernel overlayfs without FUSE")
	return cmd
}

// hasTag reports whether ref names a tag (a ':' after its last '/').
func hasTag(ref string) bool {
	i := strings.LastIndex(ref, "/")
	return strings.Contains(ref[i+1:], ":")
}

// pullPrinter shows a pull: a progress bar on a terminal, and docker's
// per-layer lines as layers complete.
type pullPrinter struct {
	out, stderr io.Writer
	bar         bool
	ref         string

	mu     sync.Mutex // guards the fields below; Progress calls come from the pull's goroutines
	pb     *progressbar.ProgressBar
	stored map[int]int64 // per layer
}

func (p *pullPrinter) start(ls []layers.Layer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stored = map[int]int64{}
	if !p.bar {
		return
	}
	var total int64
	for _, l := range ls {
		total += l.Index.TarSize
	}
	p.pb = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.stderr),
		progressbar.OptionSetDescription("pulling "+p.ref),
		progressbar.OptionShowBytes(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond))
}

func (p *pullPrinter) progress(pp layers.PullProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stored[pp.Layer] = pp.Stored
	if p.pb != nil {
		var sum int64
		for _, n := range p.stored {
			sum += n
		}
		p.pb.Set64(sum) //nolint:errcheck // a bar that cannot draw is no failure
	}
	if !pp.Done {
		return
	}
	if p.pb != nil {
		p.pb.Clear() //nolint:errcheck
	}
	status := "Pull complete"
	if pp.Present == pp.Total {
		status = "Already exists"
	}
	fmt.Fprintf(p.out, "%s: %s\n", cli.ShortDigest(pp.Digest), status)
}

// unpacked prints a layer's unpack as it ends: docker's "Extracting" done.
func (p *pullPrinter) unpacked(up runtime.UnpackProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pb != nil {
		p.pb.Clear() //nolint:errcheck
	}
	switch {
	case up.Err != nil:
		fmt.Fprintf(p.out, "%s: Not unpacked (runs over FUSE): %v\n", cli.ShortDigest(up.Digest), up.Err)
	case up.Result.Already:
		fmt.Fprintf(p.out, "%s: Already unpacked\n", cli.ShortDigest(up.Digest))
	default:
		fmt.Fprintf(p.out, "%s: Unpacked (%s in %d entries, %.1fs)\n", cli.ShortDigest(up.Digest),
			cli.HumanBytes(up.Result.Bytes), up.Result.Entries, up.Result.Dur.Seconds())
	}
}

func (p *pullPrinter) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pb != nil {
		p.pb.Finish() //nolint:errcheck
	}
}

func newImagesCommand(g *cli.Globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "images [OPTIONS]",
		Short: "List the images this root has pulled or run, with how much of each is cached",
		Long: `Lists every image reference this root has pulled or run. SIZE is the
compressed size of the layers, CACHED the uncompressed bytes of the image's
frames in the cache (and their share of the indexed layers' uncompressed size),
LAZY how many layers have an index here. The registry is not contacted.`,
		Args: cli.ExactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt := runtime.New(runtime.Config{Root: g.Root, Logger: g.Log})
			imgs, err := rt.Images()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(g.Stdout, 0, 8, 3, ' ', 0)
			if !quiet {
				fmt.Fprintln(w, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tCACHED\tLAZY")
			}
			for _, i := range imgs {
				if quiet {
					fmt.Fprintln(w, cli.ShortDigest(i.Config))
					continue
				}
				tag := i.Tag
				if tag == "" {
					tag = "<none>"
				}
				created := "N/A"
				if !i.Created.IsZero() {
					created = units.HumanDuration(timeSince(i.Created)) + " ago"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", familiarRepository(i.Repository), tag, cli.ShortDigest(i.Config),
					created, humanSize(i.Size), describeCached(i), i.Indexed, i.Layers)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	return cmd
}

// familiarRepository shortens Docker Hub names as docker does.
func familiarRepository(repo string) string {
	for _, p := range []string{"index.docker.io/library/", "index.docker.io/"} {
		if s, ok := strings.CutPrefix(repo, p); ok {
			return s
		}
	}
	return repo
}

// humanSize writes n in decimal units, as docker images does ("4.26MB").
func humanSize(n int64) string { return units.HumanSizeWithPrecision(float64(n), 3) }

// describeCached writes the cached bytes and, when the uncompressed size of
// the indexed layers is known, their share of it (rounded down, so 100%
// means all).
func describeCached(i runtime.ImageInfo) string {
	if i.Uncompressed == 0 {
		return humanSize(i.Cached)
	}
	return fmt.Sprintf("%s (%d%%)", humanSize(i.Cached), i.Cached*100/i.Uncompressed)
}
