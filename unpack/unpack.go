package unpack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// FrameSource returns the uncompressed bytes of frame number i of a layer.
//
// Safe for concurrent use. The returned slice is shared and must not be
// modified. The bytes match layer.Frames[i].Digest; on mismatch the error
// wraps index.ErrCorrupt. If ctx ends first it returns ctx.Err() promptly.
// layers.Source implements it (as it implements fusefs.FrameSource).
type FrameSource interface {
	Frame(ctx context.Context, layer *index.Index, i int) ([]byte, error)
}

// ErrBadDigest is wrapped when a layer digest is not a canonical sha256
// digest: such a digest is never turned into a path.
var ErrBadDigest = errors.New("unpack: invalid layer digest")

const (
	algoDir    = "sha256"
	locksDir   = "locks"
	tempPrefix = ".tmp-"
	// dirPerm keeps other users of the host out of the layers: they hold
	// the image's setuid programs and device nodes.
	dirPerm = 0o700
	// lockPoll is how often a process waiting for another's unpack of the
	// same layer tries the lock again (flock cannot wait on a context).
	lockPoll = 20 * time.Millisecond
)

// Config says where a Store keeps its layers. The zero value is not usable:
// Dir is required.
type Config struct {
	Dir    string       // the layers live in Dir/sha256/<hex>; ROOT/layers for lazyrun
	Logger *slog.Logger // nil = silent
}

// Store is a directory of unpacked layers. It keeps no state in memory:
// several processes may share one directory.
type Store struct {
	dir string
	log *slog.Logger
}

// New returns the Store of cfg.Dir.
func New(cfg Config) *Store {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{dir: cfg.Dir, log: log}
}

// hexOf returns the hex part of a canonical sha256 digest.
func hexOf(d digest.Digest) (string, error) {
	h, ok := strings.CutPrefix(string(d), "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		s := string(d)
		if len(s) > 80 {
			s = s[:80] + "…"
		}
		return "", fmt.Errorf("%w: %q", ErrBadDigest, s)
	}
	return h, nil
}

// Path returns the directory layer d is (or would be) unpacked in.
func (s *Store) Path(d digest.Digest) (string, error) {
	h, err := hexOf(d)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, algoDir, h), nil
}

// Has reports whether layer d is unpacked (a whole layer: only a finished
// unpack is renamed to its Path).
func (s *Store) Has(d digest.Digest) bool {
	p, err := s.Path(d)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// RootOpaque reports whether the layer unpacked at dir makes its root
// opaque (".wh..wh..opq" at the top): overlayfs does not honour that on a
// lower layer's root, so the layers below it must be left out of the mount.
func RootOpaque(dir string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(dir, overlayOpaque, buf)
	return err == nil && string(buf[:n]) == "y"
}

// Result is what Unpack did.
type Result struct {
	Path    string        // the layer's directory
	Already bool          // it was unpacked before (by this process or another)
	Entries int           // entries of the index written, whiteouts included
	Bytes   int64         // content bytes written
	Skipped int           // hard links left out: their target is not a file of the layer
	Dur     time.Duration // how long it took, waiting for another process included
}

// Unpack writes layer x out under Path(x.Layer), reading its content from
// src, unless it is there already. Every frame should be in src's cache:
// Unpack reads them in order, once each, and asks for no other data.
//
// On error nothing is left at Path; a crash leaves a temporary directory
// that the next Unpack of the layer removes. If another process is
// unpacking the same layer, Unpack waits for it (or for ctx) and then
// reports Already.
func (s *Store) Unpack(ctx context.Context, x *index.Index, src FrameSource) (Result, error) {
	start := time.Now()
	final, err := s.Path(x.Layer)
	if err != nil {
		return Result{}, err
	}
	res := Result{Path: final}
	if s.Has(x.Layer) {
		res.Already, res.Dur = true, time.Since(start)
		return res, nil
	}
	h := filepath.Base(final)
	parent := filepath.Dir(final)
	for _, d := range []string{s.dir, parent, filepath.Join(s.dir, locksDir)} {
		if err := os.Mkdir(d, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return res, fmt.Errorf("unpack %s: %w", x.Layer, err)
		}
	}
	unlock, err := lock(ctx, filepath.Join(s.dir, locksDir, h))
	if err != nil {
		return res, fmt.Errorf("unpack %s: lock: %w", x.Layer, err)
	}
	defer unlock()
	if s.Has(x.Layer) {
		res.Already, res.Dur = true, time.Since(start)
		return res, nil
	}
	// Whoever held the lock before us and left a temporary directory
	// died: nobody else writes this layer's temporary directories.
	stale, _ := filepath.Glob(filepath.Join(parent, tempPrefix+h+"-*"))
	for _, p := range stale {
		s.log.Debug("removing an unfinished unpack", "layer", x.Layer, "path", p)
		if err := os.RemoveAll(p); err != nil {
			return res, fmt.Errorf("unpack %s: remove %s: %w", x.Layer, p, err)
		}
	}
	tmp, err := os.MkdirTemp(parent, tempPrefix+h+"-")
	if err != nil {
		return res, fmt.Errorf("unpack %s: %w", x.Layer, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	u, err := newUnpacker(ctx, tmp, x, src, s.log)
	if err != nil {
		return res, fmt.Errorf("unpack %s: %w", x.Layer, err)
	}
	err = u.run()
	if err == nil {
		// The rename says "done": what it names must be on disk first.
		err = unix.Syncfs(u.root)
	}
	u.close()
	if err != nil {
		return res, fmt.Errorf("unpack %s: %w", x.Layer, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE); err != nil {
		return res, fmt.Errorf("unpack %s: rename into place: %w", x.Layer, err)
	}
	done = true
	if d, err := os.Open(parent); err == nil {
		d.Sync() //nolint:errcheck // the rename is done; this only hurries it to disk
		d.Close()
	}
	res.Entries, res.Bytes, res.Skipped, res.Dur = u.entries, u.bytes, u.skipped, time.Since(start)
	s.log.Debug("layer unpacked", "op", "unpack", "layer", x.Layer, "path", final,
		"entries", res.Entries, "len", res.Bytes, "dur", res.Dur)
	return res, nil
}

// lock takes an exclusive flock on path (made if missing), waiting for it
// until ctx ends, and returns its release.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
