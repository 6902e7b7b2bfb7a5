package layers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// Source serves frames of one image's layers: from the shared cache, else
// by a Range read of the frame's compressed bytes, decoded and verified by
// the cache before anyone sees them. It implements fusefs.FrameSource.
type Source struct {
	client *fetch.Client
	repo   string
	store  *cache.Store
	log    *slog.Logger

	mu    sync.Mutex               // guards whole
	whole map[digest.Digest]*whole // streamed layers (zstd), one fetch each
}

// NewSource serves layers stored in repo (registry host and repository).
func NewSource(client *fetch.Client, repo string, store *cache.Store, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{client: client, repo: repo, store: store, log: log, whole: map[digest.Digest]*whole{}}
}

// Frame returns frame i of layer x.
func (s *Source) Frame(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	f := &x.Frames[i]
	return s.store.Frame(ctx, f.Digest, f.Size, func(ctx context.Context) ([]byte, error) {
		if x.Format == index.FormatZstd {
			return s.streamed(ctx, x, i)
		}
		comp, err := s.client.ReadRange(ctx, s.repo, x.Layer, f.CompressedOffset, f.CompressedSize)
		if err != nil {
			return nil, err
		}
		return x.DecodeFrame(i, comp)
	})
}

// whole is one fetch of an entire layer blob shared by the frames of it.
type whole struct {
	once sync.Once
	blob []byte
	err  error
}

// streamed serves a frame of a layer that cannot be entered in the middle:
// the first such read fetches the whole blob once, later frames decode from
// that copy until the mount ends.
func (s *Source) streamed(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	s.mu.Lock()
	w := s.whole[x.Layer]
	if w == nil {
		w = &whole{}
		s.whole[x.Layer] = w
	}
	s.mu.Unlock()
	w.once.Do(func() {
		s.log.Info("fetching whole layer: its compression is not seekable", "layer", x.Layer, "len", x.BlobSize)
		w.blob, w.err = s.client.ReadRange(ctx, s.repo, x.Layer, 0, x.BlobSize)
	})
	if w.err != nil {
		// Let a later read try again rather than remembering the failure.
		s.mu.Lock()
		if s.whole[x.Layer] == w {
			delete(s.whole, x.Layer)
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("fetch whole layer %s: %w", x.Layer, w.err)
	}
	return x.DecodeFrame(i, w.blob)
}
