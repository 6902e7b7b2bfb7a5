package layers

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// windowOrigin says where the windows of an index kept as its toc alone
// are: the index blob it came from. It is kept in the local store as an
// index blob keyed by the toc's digest (index.Index.TOCDigest), so it can
// only ever describe that toc; the blob itself is content-addressed, so
// any repository that holds it serves the same bytes.
type windowOrigin struct {
	Version int           `json:"version"` // 1
	Repo    string        `json:"repo"`    // registry host and repository the blob was read from
	Blob    digest.Digest `json:"blob"`    // the index blob (toc || windows)
	Size    int64         `json:"size"`    // its size
	TOC     int64         `json:"toc"`     // the toc's length: the windows start there
}

// putWindowOrigin records where the windows of the toc x was decoded from are.
func putWindowOrigin(store *cache.Store, x *index.Index, o windowOrigin) error {
	o.Version = 1
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return store.PutIndex(x.TOCDigest(), data)
}

// getWindowOrigin returns where the windows of x (decoded from a toc
// alone) are. No record is an error wrapping fs.ErrNotExist.
func getWindowOrigin(store *cache.Store, x *index.Index) (windowOrigin, error) {
	var o windowOrigin
	data, err := store.GetIndex(x.TOCDigest())
	if err != nil {
		return o, fmt.Errorf("where the windows of layer %s are: %w", x.Layer, err)
	}
	if err := json.Unmarshal(data, &o); err != nil || o.Version != 1 || o.Blob.Validate() != nil || o.Repo == "" {
		return o, fmt.Errorf("where the windows of layer %s are: %w: bad record", x.Layer, fs.ErrNotExist)
	}
	if o.TOC <= 0 || o.TOC > o.Size {
		return o, fmt.Errorf("where the windows of layer %s are: %w: toc of %d bytes in a %d-byte blob", x.Layer, fs.ErrNotExist, o.TOC, o.Size)
	}
	if off, n := x.WindowRange(0, len(x.Frames)-1); off != o.TOC || off+n != o.Size {
		return o, fmt.Errorf("where the windows of layer %s are: %w: windows at [%d,+%d), the blob has [%d,%d)", x.Layer, fs.ErrNotExist, off, n, o.TOC, o.Size)
	}
	return o, nil
}

// readWindows fetches, with one Range read of the index blob o, the
// windows of frames first to last of x (see index.Index.Windows).
func readWindows(ctx context.Context, client *fetch.Client, o windowOrigin, x *index.Index, first, last int) ([][]byte, error) {
	off, n := x.WindowRange(first, last)
	var data []byte
	if n > 0 {
		var err error
		if data, err = client.ReadRange(ctx, o.Repo, o.Blob, off, n); err != nil {
			return nil, fmt.Errorf("windows of frames %d to %d of layer %s: %w", first, last, x.Layer, err)
		}
	}
	ws, err := x.Windows(first, last, data)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", x.Layer, err)
	}
	return ws, nil
}

// withWindows returns x with every window loaded, fetching them from
// where its toc came from when they are not.
func withWindows(ctx context.Context, client *fetch.Client, store *cache.Store, x *index.Index) (*index.Index, error) {
	if x.WindowsLoaded() {
		return x, nil
	}
	o, err := getWindowOrigin(store, x)
	if err != nil {
		return nil, err
	}
	data, err := client.ReadRange(ctx, o.Repo, o.Blob, o.TOC, o.Size-o.TOC)
	if err != nil {
		return nil, fmt.Errorf("windows of layer %s: %w", x.Layer, err)
	}
	return x.WithWindows(data)
}

// readRun fetches the compressed bytes of frames first to last of x with
// one Range read and, when x's windows are not loaded, the windows of
// frames first to winLast (none when winLast < first) with another from o,
// at the same time. wins[k-first] is frame k's window (nil when loaded,
// none, or not asked for).
func readRun(ctx context.Context, client *fetch.Client, repo string, o windowOrigin, x *index.Index, first, last, winLast int) (buf []byte, wins [][]byte, err error) {
	off := x.Frames[first].CompressedOffset
	n := x.Frames[last].CompressedOffset + x.Frames[last].CompressedSize - off
	wins = make([][]byte, last-first+1)
	if _, wn := x.WindowRange(first, winLast); wn == 0 || winLast < first {
		buf, err = client.ReadRange(ctx, repo, x.Layer, off, n)
		return buf, wins, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		ws, err := readWindows(gctx, client, o, x, first, winLast)
		copy(wins, ws)
		return err
	})
	g.Go(func() (err error) {
		buf, err = client.ReadRange(gctx, repo, x.Layer, off, n)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return buf, wins, nil
}

// A frame's window that cannot be cut from the frame before it is fetched
// beside the frame, with the windows of the frames near it: the windows of
// frames [k·windowGroupFrames, (k+1)·windowGroupFrames) of a toc take one
// Range read of ~10–15 KB each, made once however many of the group's
// frames are loading, and kept until each has been taken. At most
// maxWindowGroups groups are kept; the oldest fetched go first. Groups of 8
// saved requests while read-ahead fetched every window; now that a frame
// after a cached one cuts its window from it, a group of one fetches less
// (make bench, python3 cold: 1.49 s and 1.8 MB of index reads with 8,
// 1.43 s and 0.65 MB with 1; go run 4.54 s → 4.41 s).
const (
	windowGroupFrames = 1
	maxWindowGroups   = 32
)

type winGroupKey struct {
	toc   digest.Digest
	group int
}

// winGroup is one fetch of a group's windows.
type winGroup struct {
	done  chan struct{} // closed when ws and err are set
	ws    [][]byte      // per frame of the group; nil for none
	err   error
	left  int    // windows not yet taken; guarded by Source.mu
	taken []bool // per frame: its window was taken (a refetch after corrupt bytes takes it again); guarded by Source.mu
}

// window returns the window of frame i of x (which needs one), fetching
// its group's windows from o unless a fetch of them is running or done.
func (s *Source) window(ctx context.Context, o windowOrigin, x *index.Index, i int) ([]byte, error) {
	key := winGroupKey{x.TOCDigest(), i / windowGroupFrames}
	first := key.group * windowGroupFrames
	last := min(first+windowGroupFrames, len(x.Frames)) - 1
	s.mu.Lock()
	g := s.winGroups[key]
	mine := g == nil
	if mine {
		g = &winGroup{done: make(chan struct{})}
		s.winGroups[key] = g
		s.winOrder = append(s.winOrder, key)
		s.evictWindowGroupsLocked()
	}
	s.mu.Unlock()
	if mine {
		ws, err := readWindows(ctx, s.client, o, x, first, last)
		s.mu.Lock()
		g.ws, g.err = ws, err
		g.taken = make([]bool, len(ws))
		for _, w := range ws {
			if w != nil {
				g.left++
			}
		}
		if err != nil && s.winGroups[key] == g {
			delete(s.winGroups, key) // the next reader tries again
		}
		s.mu.Unlock()
		close(g.done)
	}
	select {
	case <-g.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if g.err != nil {
		return nil, g.err
	}
	w := g.ws[i-first]
	s.mu.Lock()
	if !g.taken[i-first] {
		g.taken[i-first] = true
		if g.left--; g.left <= 0 && s.winGroups[key] == g {
			delete(s.winGroups, key)
		}
	}
	s.mu.Unlock()
	return w, nil
}

// evictWindowGroupsLocked drops the oldest finished groups past
// maxWindowGroups. s.mu is held.
func (s *Source) evictWindowGroupsLocked() {
	for len(s.winGroups) > maxWindowGroups && len(s.winOrder) > 0 {
		k := s.winOrder[0]
		g := s.winGroups[k]
		if g != nil {
			select {
			case <-g.done:
			default:
				return // the oldest is still fetching: keep it, and its followers
			}
			delete(s.winGroups, k)
		}
		s.winOrder = s.winOrder[1:]
	}
	if len(s.winOrder) > 4*maxWindowGroups {
		// Keys of groups taken whole pile up: keep only those still there.
		s.winOrder = slices.DeleteFunc(s.winOrder, func(k winGroupKey) bool { return s.winGroups[k] == nil })
	}
}
