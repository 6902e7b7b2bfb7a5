package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/layers"
)

// DefaultRoot holds all state unless --root says otherwise.
const DefaultRoot = "/var/lib/lazyfs"

// globals are the flags every command takes.
type globals struct {
	root      string
	insecure  bool
	logLevel  string
	timeout   time.Duration
	cacheSize string
	retries   int
	stdout    io.Writer
	stderr    io.Writer
	log       *slog.Logger
}

type usageError struct{ error }

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "lazyfs",
		Short:         "Mount OCI images from a registry without pulling them",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)}
			}
			g.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.root, "root", DefaultRoot, "directory that holds all lazyfs state")
	pf.BoolVar(&g.insecure, "insecure", false, "allow plain HTTP and unverified TLS for registries other than localhost")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.DurationVar(&g.timeout, "fetch-timeout", 30*time.Second, "deadline of each registry request")
	pf.StringVar(&g.cacheSize, "cache-size", "0", "frames kept on disk before the least recently used are evicted (e.g. 20GB); 0 = no limit")
	pf.IntVar(&g.retries, "retries", 4, "retries of a failed registry request (connection errors, 429, 5xx)")
	root.AddCommand(
		newIndexCommand(g),
		newMountCommand(g),
		newInspectCommand(g),
		newUmountCommand(g),
		newCacheCommand(g),
	)
	return root
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%q takes %s (got %d argument(s)); see 'lazyfs %s --help'", cmd.CommandPath(), names, len(args), cmd.Name())}
		}
		return nil
	}
}

// parts are the pieces most commands need, opened from the flags.
type parts struct {
	client   *fetch.Client
	store    *cache.Store
	resolver *layers.Resolver
}

func (g *globals) open() (*parts, error) {
	retries := g.retries
	if retries == 0 {
		retries = -1 // fetch.Config's zero means its default
	}
	client := fetch.New(fetch.Config{Insecure: g.insecure, Logger: g.log, UserAgent: "lazyfs",
		RequestTimeout: g.timeout, Retries: retries})
	maxDisk, err := units.RAMInBytes(g.cacheSize)
	if err != nil || maxDisk < 0 {
		return nil, usageError{fmt.Errorf("--cache-size %q: want a size such as 20GB or 0", g.cacheSize)}
	}
	store, err := cache.Open(cache.Config{Dir: filepath.Join(g.root, "cache"), Logger: g.log, MaxDiskBytes: maxDisk})
	if err != nil {
		return nil, fmt.Errorf("open cache under %s: %w", g.root, err)
	}
	r := layers.NewResolver(layers.Config{Client: client, Store: store, Logger: g.log})
	return &parts{client: client, store: store, resolver: r}, nil
}

func (p *parts) Close() { p.store.Close() }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func shortDigest(d fmt.Stringer) string {
	s := d.String()
	if _, hex, ok := strings.Cut(s, ":"); ok && len(hex) >= 12 {
		return hex[:12]
	}
	return s
}
