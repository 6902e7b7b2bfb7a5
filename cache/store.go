package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// ErrClosed is returned by calls on a Store after Close.
var ErrClosed = errors.New("cache: store closed")

// Config configures a Store. Only Dir is required.
type Config struct {
	Dir          string        // the cache root, e.g. /var/lib/lazyfs/cache; created if missing
	MemoryBytes  int64         // in-memory tier size (cost = len(bytes)); 0 = 256 MiB; negative = no memory tier
	MaxDiskBytes int64         // frames on disk above this are evicted, least recently used first; 0 = unlimited
	FetchTimeout time.Duration // deadline of one shared load; 0 = 60s
	MaxLoads     int           // load functions running at once; 0 = 64
	Logger       *slog.Logger  // nil = silent
}

const (
	defaultMemoryBytes  = 256 << 20
	defaultFetchTimeout = 60 * time.Second
	defaultMaxLoads     = 64
)

// Store is the frame store of one cache root. It is safe for concurrent
// use; a process opens one per root and shares it among all its mounts.
// Other processes may use the same root at the same time.
type Store struct {
	dir     string
	maxDisk int64
	timeout time.Duration
	log     *slog.Logger

	memMu     sync.RWMutex                     // guards memClosed; read-held around every use of mem, so Close never closes it under a Get or Set
	mem       *ristretto.Cache[string, []byte] // keyed by hex; nil when the memory tier is off
	memClosed bool
	recent    *recentFrames // in front of mem; nil when the memory tier is off

	mu  sync.Mutex // guards rec
	rec recency
	// checked holds the hex digests of the file copies this Store has
	// verified (OpenCopy).
	checked sync.Map
	// scanned is closed once Open's scan of the frames is in rec: the scan
	// runs beside the first reads, since a start should not wait for a
	// walk of a cache shared by every image on the machine.
	scanned chan struct{}

	flightMu sync.Mutex         // guards flights and closed
	flights  map[string]*flight // keyed by hex; an entry stays until its frame is on disk (or known not to be)
	closed   bool

	loadSem chan struct{}   // one token per running load function
	stop    context.Context // ends at Close: cancels running loads
	cancel  context.CancelFunc
	wg      sync.WaitGroup // flight goroutines, owned by the Store
	once    sync.Once      // Close

	st struct {
		memoryHits, diskHits, misses, loads, loadErrors, corrupt atomic.Int64
		bytesLoaded, evictions, diskFull                         atomic.Int64
	}
}

// Open opens the cache root cfg.Dir, creating its directories if needed. In
// the background it scans the frames once to learn their sizes and ages
// (file mtimes), removes named temp files left by a crash (those older than
// ten minutes: younger ones may belong to another process writing now; they
// are never served nor counted as frames), and evicts down to
// cfg.MaxDiskBytes: frames are served meanwhile, and Stats waits for it.
// Frame files are not read here: each is verified when first used.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: open: no directory")
	}
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = defaultMemoryBytes
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = defaultFetchTimeout
	}
	if cfg.MaxLoads <= 0 {
		cfg.MaxLoads = defaultMaxLoads
	}
	if cfg.MaxDiskBytes < 0 {
		cfg.MaxDiskBytes = 0
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{filepath.Join(cfg.Dir, framesDir), filepath.Join(cfg.Dir, indexDir, indexAlgo)} {
		if err := os.MkdirAll(d, dirPerm); err != nil {
			return nil, fmt.Errorf("cache: open: %w", err)
		}
	}

	s := &Store{
		dir:     cfg.Dir,
		maxDisk: cfg.MaxDiskBytes,
		timeout: cfg.FetchTimeout,
		log:     log,
		flights: make(map[string]*flight),
		loadSem: make(chan struct{}, cfg.MaxLoads),
		scanned: make(chan struct{}),
	}
	s.rec.init()
	if cfg.MemoryBytes > 0 {
		counters := max(cfg.MemoryBytes/(64<<10)*10, 1000)
		var err error
		s.mem, err = ristretto.NewCache(&ristretto.Config[string, []byte]{
			NumCounters:        counters,
			MaxCost:            cfg.MemoryBytes,
			BufferItems:        64,
			IgnoreInternalCost: true,
		})
		if err != nil {
			return nil, fmt.Errorf("cache: open: memory tier: %w", err)
		}
		s.recent = newRecentFrames(max(cfg.MemoryBytes/16, 4<<20))
	}
	s.stop, s.cancel = context.WithCancel(context.Background())
	go s.scan()
	return s, nil
}

// scan learns the frames on disk (their sizes and ages), removes stale
// temp files, and evicts down to maxDisk; frames stored meanwhile are kept
// in the record (recency.rebuild).
func (s *Store) scan() {
	defer close(s.scanned)
	start := time.Now()
	r, err := scan(s.dir, start.Add(-staleTemp))
	if err != nil {
		s.log.Warn("cache: scan failed: frames already on disk are not counted nor evicted", "op", "open", "path", s.dir, "err", err)
		return
	}
	s.mu.Lock()
	s.rec.rebuild(r.frames, start)
	var victims []*entry
	if s.maxDisk > 0 {
		victims = s.rec.evict(s.maxDisk, 0)
	}
	s.mu.Unlock()
	s.removeFrames(victims, &s.st.evictions)
	s.log.Debug("cache scanned", "op", "open", "path", s.dir,
		"frames", len(r.frames), "temps_removed", r.removed, "evicted", len(victims), "dur", time.Since(start))
}

// Close stops the Store: running loads are cancelled and Close waits for
// the goroutines that ran them; calls waiting for them return an error.
// Later Frame, Put and Prune calls return ErrClosed; Has, GetIndex and
// PutIndex keep working on the directory. Close is idempotent and always
// returns nil.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.flightMu.Lock()
		s.closed = true
		s.flightMu.Unlock()
		s.cancel()
		<-s.scanned
		s.wg.Wait()
		s.memMu.Lock()
		s.memClosed = true
		s.memMu.Unlock()
		if s.mem != nil {
			s.mem.Close()
		}
	})
	return nil
}

// MaxDiskBytes is the disk limit the Store was opened with (0: none).
func (s *Store) MaxDiskBytes() int64 { return s.maxDisk }

func (s *Store) isClosed() bool {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	return s.closed
}

// Stats are a Store's counters since Open. Every Frame call that returns
// bytes counts once as a MemoryHit, a DiskHit or a Miss (a miss was served
// by a load, possibly shared); a call that stops on its own ctx or fails
// counts in none of them.
type Stats struct {
	MemoryHits, DiskHits, Misses int64
	Loads, LoadErrors            int64 // load function calls, and those that returned an error
	Corrupt                      int64 // loaded or on-disk frames that failed verification
	BytesLoaded                  int64 // bytes returned by load functions
	DiskFrames                   int64 // frames on disk now, as this process knows them
	DiskBytes                    int64
	Evictions                    int64 // frames removed to stay under MaxDiskBytes or to make room on a full disk (Prune not counted)
	DiskFull                     int64 // frame writes that found the file system full (ENOSPC, EDQUOT)
}

// Stats returns the Store's counters.
func (s *Store) Stats() Stats {
	<-s.scanned // DiskFrames, DiskBytes and Evictions count the frames found at Open
	st := Stats{
		MemoryHits:  s.st.memoryHits.Load(),
		DiskHits:    s.st.diskHits.Load(),
		Misses:      s.st.misses.Load(),
		Loads:       s.st.loads.Load(),
		LoadErrors:  s.st.loadErrors.Load(),
		Corrupt:     s.st.corrupt.Load(),
		BytesLoaded: s.st.bytesLoaded.Load(),
		Evictions:   s.st.evictions.Load(),
		DiskFull:    s.st.diskFull.Load(),
	}
	s.mu.Lock()
	st.DiskFrames = int64(len(s.rec.byHex))
	st.DiskBytes = s.rec.bytes
	s.mu.Unlock()
	return st
}

// removeFrames deletes the files of entries already taken out of the
// record, adding how many went to *count. Called without locks held.
func (s *Store) removeFrames(victims []*entry, count *atomic.Int64) (n, bytes int64) {
	for _, e := range victims {
		err := os.Remove(framePath(s.dir, e.hex))
		switch {
		case err == nil:
			n++
			bytes += e.size
		case errors.Is(err, fs.ErrNotExist):
			// Removed by another process: already gone, nothing to count.
		default:
			s.log.Warn("cache: frame not removed", "op", "evict", "frame", "sha256:"+e.hex, "err", err)
		}
	}
	count.Add(n)
	return n, bytes
}

// PruneOptions says what Prune removes.
type PruneOptions struct {
	KeepBytes int64 // frames are removed, least recently used first, until at most this many bytes remain; 0 = all
	Indexes   bool  // also remove every index blob
}

// PruneResult is what Prune removed.
type PruneResult struct {
	Frames, FrameBytes  int64
	Indexes, IndexBytes int64
	TempFiles           int64 // stale temp files (left by a crash)
}

// Prune rescans the root (so frames other processes stored count too),
// removes stale temp files, then removes least recently used frames until
// at most opt.KeepBytes remain on disk, and with opt.Indexes every index
// blob. It stops early, returning ctx.Err() and what it removed so far, if
// ctx ends. Frames in the memory tier stay there: they are verified, and
// only the disk is pruned.
func (s *Store) Prune(ctx context.Context, opt PruneOptions) (PruneResult, error) {
	var res PruneResult
	if s.isClosed() {
		return res, ErrClosed
	}
	if opt.KeepBytes < 0 {
		return res, fmt.Errorf("cache: prune: negative KeepBytes %d", opt.KeepBytes)
	}
	<-s.scanned // its rebuild must not undo this one's
	start := time.Now()
	r, err := scan(s.dir, start.Add(-staleTemp))
	if err != nil {
		return res, err
	}
	res.TempFiles = r.removed
	s.mu.Lock()
	s.rec.rebuild(r.frames, start)
	s.mu.Unlock()

	var pruned atomic.Int64
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		s.mu.Lock()
		victims := s.rec.evict(opt.KeepBytes, 64)
		s.mu.Unlock()
		if len(victims) == 0 {
			break
		}
		n, b := s.removeFrames(victims, &pruned)
		res.Frames += n
		res.FrameBytes += b
	}

	if opt.Indexes {
		dir := filepath.Join(s.dir, indexDir, indexAlgo)
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("cache: prune: %w", err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() || !isHex64(e.Name()) {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				res.Indexes++
				res.IndexBytes += info.Size()
			} else if !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("cache: prune: %w", err)
			}
		}
	}
	s.log.Debug("cache pruned", "op", "prune", "frames", res.Frames, "bytes", res.FrameBytes,
		"indexes", res.Indexes, "dur", time.Since(start))
	return res, nil
}
