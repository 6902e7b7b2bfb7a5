package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// corruptFetches bounds how often one read fetches a frame whose bytes do
// not match its digest (a flaky proxy, a bad disk on the registry) before it
// fails with EIO.
const corruptFetches = 3

// Frame returns frame i of layer x.
func (s *Source) Frame(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	f := &x.Frames[i]
	var err error
	for attempt := 1; attempt <= corruptFetches; attempt++ {
		var data []byte
		data, err = s.store.Frame(ctx, f.Digest, f.Size, func(ctx context.Context) ([]byte, error) {
			if x.Format == index.FormatZstd {
				return s.streamed(ctx, x, i)
			}
			comp, err := s.client.ReadRange(ctx, s.repo, x.Layer, f.CompressedOffset, f.CompressedSize)
			if err != nil {
				return nil, err
			}
			return x.DecodeFrame(i, comp)
		})
		if !errors.Is(err, index.ErrCorrupt) {
			return data, err
		}
		s.log.Warn("frame corrupt, fetching it again", "layer", x.Layer, "frame", i, "attempt", attempt, "err", err)
	}
	return nil, fmt.Errorf("frame %d of layer %s: %d fetches gave wrong bytes: %w", i, x.Layer, corruptFetches, err)
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
		w.blob, w.err = s.readWhole(ctx, x)
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

func (s *Source) readWhole(ctx context.Context, x *index.Index) ([]byte, error) {
	rc, err := s.client.OpenBlob(ctx, s.repo, x.Layer)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	blob, err := io.ReadAll(io.LimitReader(rc, x.BlobSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(blob)) != x.BlobSize {
		return nil, fmt.Errorf("%w: layer is %d bytes, index says %d", index.ErrCorrupt, len(blob), x.BlobSize)
	}
	return blob, nil
}
