package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/layers"
)

// DefaultRoot holds all state unless --root says otherwise.
const DefaultRoot = "/var/lib/lazyfs"

// Globals are the flags every command of both programs takes.
type Globals struct {
	Root      string
	Insecure  bool
	LogLevel  string
	Timeout   time.Duration
	CacheSize string
	Retries   int
	// ReadTimeout bounds how long a read of the mount waits for a frame
	// before it fails with EIO.
	ReadTimeout time.Duration
	Stdout      io.Writer
	Stderr      io.Writer
	Log         *slog.Logger // set by Setup
}

// UsageError marks an error as the user's: the command was called wrongly.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is a usage error, including cobra's own
// "unknown command" and "unknown flag" errors.
func IsUsage(err error) bool {
	var u UsageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown ")
}

// AddFlags registers the global flags on a root command.
func (g *Globals) AddFlags(pf *pflag.FlagSet) {
	pf.StringVar(&g.Root, "root", DefaultRoot, "directory that holds all lazyfs state")
	pf.BoolVar(&g.Insecure, "insecure", false, "allow plain HTTP and unverified TLS for registries other than localhost")
	pf.StringVar(&g.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.DurationVar(&g.Timeout, "fetch-timeout", 30*time.Second, "deadline of each registry request")
	pf.StringVar(&g.CacheSize, "cache-size", "0", "frames kept on disk before the least recently used are evicted (e.g. 20GB); 0 = no limit")
	pf.IntVar(&g.Retries, "retries", 4, "retries of a failed registry request (connection errors, 429, 5xx)")
	pf.DurationVar(&g.ReadTimeout, "read-timeout", layers.DefaultReadTimeout, "how long a read of a file not yet fetched waits before it fails with EIO (0 = as long as the fetch takes)")
}

// Setup makes the logger from --log-level; call it from PersistentPreRunE.
func (g *Globals) Setup() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.LogLevel)); err != nil {
		return Usagef("--log-level %q: want debug, info, warn or error", g.LogLevel)
	}
	g.Log = slog.New(slog.NewTextHandler(g.Stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

// ExactArgs is cobra.ExactArgs with a message that names what is expected.
func ExactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return Usagef("%q takes %s (got %d argument(s)); see '%s --help'", cmd.CommandPath(), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// Parts are the pieces most commands need, opened from the flags.
type Parts struct {
	Client   *fetch.Client
	Store    *cache.Store
	Resolver *layers.Resolver
}

// Open opens the registry client, the frame cache under --root and the
// index resolver. Close releases them.
func (g *Globals) Open() (*Parts, error) {
	retries := g.Retries
	if retries == 0 {
		retries = -1 // fetch.Config's zero means its default
	}
	client := fetch.New(fetch.Config{Insecure: g.Insecure, Logger: g.Log, UserAgent: "lazyfs",
		RequestTimeout: g.Timeout, Retries: retries})
	maxDisk, err := units.RAMInBytes(g.CacheSize)
	if err != nil || maxDisk < 0 {
		return nil, Usagef("--cache-size %q: want a size such as 20GB or 0", g.CacheSize)
	}
	store, err := cache.Open(cache.Config{Dir: filepath.Join(g.Root, "cache"), Logger: g.Log, MaxDiskBytes: maxDisk})
	if err != nil {
		return nil, fmt.Errorf("open cache under %s: %w", g.Root, err)
	}
	r := layers.NewResolver(layers.Config{Client: client, Store: store, Logger: g.Log})
	return &Parts{Client: client, Store: store, Resolver: r}, nil
}

// Close releases what Open opened.
func (p *Parts) Close() { p.Store.Close() }

// IsTerminal reports whether w is a terminal.
func IsTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// HumanBytes formats n in binary units, as "1.5 MiB".
func HumanBytes(n int64) string {
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

// ShortDigest is the first 12 hex digits of a digest, as docker shows IDs.
func ShortDigest(d fmt.Stringer) string {
	s := d.String()
	if _, hex, ok := strings.Cut(s, ":"); ok && len(hex) >= 12 {
		return hex[:12]
	}
	return s
}

// DefaultBackground is the --background default of every command that
// serves a mount: fetch the rest of the image once the start-up is quiet.
const DefaultBackground = "idle"

// AddBackgroundFlag adds --background to a command that serves a mount.
func AddBackgroundFlag(f *pflag.FlagSet, mode *string) {
	f.StringVar(mode, "background", DefaultBackground,
		"fetch the rest of the image in the background so that it stops depending on the registry: off, idle (once the start-up is quiet, pausing for reads that miss) or full (at once, pausing for reads that miss)")
}

// ParseBackground reads --background's value; a bad one is a usage error
// naming the flag.
func ParseBackground(s string) (layers.BackgroundMode, error) {
	m, err := layers.ParseBackgroundMode(s)
	if err != nil {
		return m, Usagef("--background %q: want off, idle or full", s)
	}
	return m, nil
}
