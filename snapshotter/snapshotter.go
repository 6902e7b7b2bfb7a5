package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/fusefs"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/metrics"
)

// Labels this snapshotter puts on the snapshot of a lazy layer. They carry
// containerd's inherited-label prefix, so containerd keeps them on its own
// record of the snapshot and passes them back on Update.
const (
	// LabelLayer is the layer's digest: the snapshot is a lazy mount of it.
	LabelLayer = "containerd.io/snapshot/lazyfs.layer"
	// LabelImage is the image the layer was mounted from, REPO@MANIFEST.
	LabelImage = "containerd.io/snapshot/lazyfs.image"
)

// The remote-snapshot labels a pull client sets on every layer it unpacks
// (containerd's snapshotters.AppendInfoHandlerWrapper; the CRI plugin with
// disable_snapshot_annotations = false). LabelSnapshotRef, the chain ID to
// commit as, comes with every layer containerd unpacks.
const (
	labelImageRef = "containerd.io/snapshot/cri.image-ref"
	labelManifest = "containerd.io/snapshot/cri.manifest-digest"
	labelDigest   = "containerd.io/snapshot/cri.layer-digest"
)

// errNotLazy wraps the reasons a layer is left to containerd to unpack that
// are no failure: no index exists, the layer's compression is not seekable.
var errNotLazy = errors.New("layer cannot be mounted lazily")

// Config wires a Snapshotter. Root, Client and Store are required.
type Config struct {
	Root   string        // holds metadata.db and snapshots/ID/{fs,work}
	Client *fetch.Client // reads manifests, indexes and frames
	Store  *cache.Store  // the frame cache and local index store, shared by every layer
	Logger *slog.Logger  // nil = silent
	// FindTimeout bounds finding one image's indexes in the registry
	// (manifest, config, referrers); 0 = 2 minutes.
	FindTimeout time.Duration
	FUSEDebug   bool // log every FUSE request of the lazy mounts
	// Metrics receives the lazy mounts (active, failed), their read
	// errors, and each repository's frame source metrics. nil = none.
	Metrics *metrics.Registry
	// Background is how each lazy layer is fetched in the background
	// after it is mounted (Name is set per layer); the zero value is off.
	// Every repository's requests share one layers.Traffic: a miss of any
	// image pauses them all.
	Background layers.BackgroundConfig
}

// Snapshotter implements containerd's snapshots.Snapshotter (and
// snapshots.Cleaner). Its methods are safe for concurrent use; metadata
// changes are serialized by the bolt store's write transactions.
type Snapshotter struct {
	cfg      Config
	log      *slog.Logger
	ms       *storage.MetaStore
	resolver *layers.Resolver
	overlay  []string // extra overlay mount options

	stop   context.Context // ends background lookups on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // background lookups, owned by the Snapshotter

	mu      sync.Mutex                // guards lazy, sources and images
	lazy    map[string]*lazyLayer     // committed lazy layers, by snapshot ID
	sources map[string]*layers.Source // frame sources, by repository
	traffic *layers.Traffic           // shared by the sources
	images  map[string]*imageCall     // recent image lookups, by REPO@MANIFEST

	closeOnce sync.Once
	closeErr  error
}

// lazyLayer is a snapshot whose directory is a FUSE mount of one layer.
type lazyLayer struct {
	layer digest.Digest
	mount *fusefs.Mount // nil when it could not be mounted again after a restart
	err   error         // why mount is nil

	bg      *layers.Background // its background fetch; nil when not mounted
	unwatch func()             // removes bg from the metrics
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)
var _ snapshots.Cleaner = (*Snapshotter)(nil)

// New opens (or creates) the snapshotter's state under cfg.Root and mounts
// again every lazy layer that the metadata lists as committed. A layer that
// cannot be mounted is logged; snapshots stacked on it fail to mount until
// the snapshotter is restarted with its index reachable.
func New(ctx context.Context, cfg Config) (*Snapshotter, error) {
	if cfg.Root == "" || cfg.Client == nil || cfg.Store == nil {
		return nil, errors.New("snapshotter: Root, Client and Store are required")
	}
	if cfg.FindTimeout <= 0 {
		cfg.FindTimeout = 2 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Root, "snapshots"), 0o700); err != nil {
		return nil, fmt.Errorf("snapshotter root: %w", err)
	}
	ms, err := storage.NewMetaStore(filepath.Join(cfg.Root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("open snapshot metadata under %s: %w", cfg.Root, err)
	}
	s := &Snapshotter{
		cfg:      cfg,
		log:      log,
		ms:       ms,
		resolver: layers.NewResolver(layers.Config{Client: cfg.Client, Store: cfg.Store, Logger: log}),
		lazy:     map[string]*lazyLayer{},
		sources:  map[string]*layers.Source{},
		images:   map[string]*imageCall{},
		traffic:  layers.NewTraffic(0),
	}
	// Like containerd's overlay snapshotter: no inode index, which would
	// tie the upper directory to these exact lower mounts.
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil {
		s.overlay = append(s.overlay, "index=off")
	}
	s.stop, s.cancel = context.WithCancel(context.Background())
	if err := s.restore(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Snapshotter) dir(id string) string { return filepath.Join(s.cfg.Root, "snapshots", id) }
func (s *Snapshotter) fsPath(id string) string {
	return filepath.Join(s.cfg.Root, "snapshots", id, "fs")
}
func (s *Snapshotter) workPath(id string) string {
	return filepath.Join(s.cfg.Root, "snapshots", id, "work")
}

// Stat returns the info of the snapshot named or keyed key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	var info snapshots.Info
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		var err error
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update changes a snapshot's labels. The labels that mark a lazy layer
// are kept whatever the update says: without them a restart would not
// mount the layer again.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	var out snapshots.Info
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, old, _, err := storage.GetInfo(ctx, info.Name)
		if err != nil {
			return err
		}
		if out, err = storage.UpdateInfo(ctx, info, fieldpaths...); err != nil {
			return err
		}
		keep := snapshots.Info{Name: info.Name, Labels: map[string]string{}}
		var paths []string
		for _, k := range []string{LabelLayer, LabelImage} {
			if v, ok := old.Labels[k]; ok && out.Labels[k] != v {
				keep.Labels[k] = v
				paths = append(paths, "labels."+k)
			}
		}
		if len(paths) > 0 {
			out, err = storage.UpdateInfo(ctx, keep, paths...)
		}
		return err
	})
	return out, err
}

// Usage returns what a snapshot takes on disk: measured in its directory
// for an active snapshot, as recorded at commit otherwise. A lazy layer
// takes nothing of its own (its frames are the cache's).
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		var err error
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return usage, err
	}
	if info.Kind == snapshots.KindActive {
		du, err := fs.DiskUsage(ctx, s.fsPath(id))
		if err != nil {
			return snapshots.Usage{}, fmt.Errorf("usage of snapshot %s: %w", key, err)
		}
		usage = snapshots.Usage(du)
	}
	return usage, nil
}

// Mounts returns the mounts of an active or view snapshot again.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var sn storage.Snapshot
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		var err error
		sn, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts of snapshot %s: %w", key, err)
	}
	return s.mounts(sn)
}

// Prepare creates an active snapshot key on parent. When the labels ask
// for a remote snapshot of a layer that has a lazyfs index, it mounts the
// layer, commits it under the label's chain ID and returns an error
// wrapping errdefs.ErrAlreadyExists: containerd then skips downloading and
// unpacking the layer. Otherwise (no labels, no index, any failure on the
// lazy path) it returns the mounts of a writable snapshot to unpack into.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	target := base.Labels[snapshots.LabelSnapshotRef]
	want, why := remoteRequest(base.Labels)
	if target != "" && why == "" && s.committed(ctx, target, parent) {
		s.log.Info("layer already mounted lazily", "layer", want.layer, "key", key, "target", target)
		return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
	}
	sn, err := s.create(ctx, snapshots.KindActive, key, parent, opts)
	if err != nil {
		return nil, err
	}
	if target == "" {
		s.log.Debug("snapshot prepared", "key", key, "parent", parent)
		return s.mountsOrRemove(ctx, key, sn)
	}
	if why != "" {
		s.log.Info("layer unpacked by containerd", "target", target, "why", why)
		return s.mountsOrRemove(ctx, key, sn)
	}
	start := time.Now()
	err = s.prepareLazy(ctx, sn.ID, key, parent, target, want)
	switch {
	case err == nil:
		s.log.Info("layer mounted lazily", "layer", want.layer, "image", want.image(), "target", target,
			"path", s.fsPath(sn.ID), "dur", time.Since(start).Round(time.Millisecond))
		return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
	case errdefs.IsAlreadyExists(err):
		return nil, err
	case errors.Is(err, errNotLazy):
		s.log.Info("layer unpacked by containerd", "layer", want.layer, "target", target, "why", err)
	default:
		s.cfg.Metrics.MountFailed()
		s.log.Warn("lazy mount failed: layer unpacked by containerd", "layer", want.layer, "target", target, "err", err)
	}
	return s.mountsOrRemove(ctx, key, sn)
}

// View creates a read-only snapshot key on parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	sn, err := s.create(ctx, snapshots.KindView, key, parent, opts)
	if err != nil {
		return nil, err
	}
	return s.mountsOrRemove(ctx, key, sn)
}

// Commit turns the active snapshot key into the committed snapshot name.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		du, err := fs.DiskUsage(ctx, s.fsPath(id))
		if err != nil {
			return fmt.Errorf("usage of snapshot %s: %w", key, err)
		}
		if _, err := storage.CommitActive(ctx, key, name, snapshots.Usage(du), opts...); err != nil {
			return fmt.Errorf("commit snapshot %s as %s: %w", key, name, err)
		}
		return nil
	})
}

// Remove deletes a snapshot (one without children), unmounting its lazy
// layer, and removes its directory.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var orphans []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		if _, _, err := storage.Remove(ctx, key); err != nil {
			return fmt.Errorf("remove snapshot %s: %w", key, err)
		}
		var err error
		orphans, err = s.orphans(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for _, id := range orphans {
		s.removeDir(id)
	}
	return nil
}

// Walk calls fn for every snapshot the filters match.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Cleanup removes the directories (and unmounts the lazy layers) of
// snapshots the metadata no longer lists.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var orphans []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		var err error
		orphans, err = s.orphans(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for _, id := range orphans {
		s.removeDir(id)
	}
	return nil
}

// Close unmounts every lazy layer (a busy one is detached), stops the
// background lookups and closes the metadata. Idempotent.
func (s *Snapshotter) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.mu.Lock()
		lazy, sources := s.lazy, s.sources
		s.lazy, s.sources = map[string]*lazyLayer{}, map[string]*layers.Source{}
		s.mu.Unlock()
		for id, l := range lazy {
			if l.mount != nil {
				s.unmount(id, l)
			}
		}
		for _, src := range sources {
			src.Close()
		}
		s.closeErr = s.ms.Close()
	})
	return s.closeErr
}

// create makes the snapshot's directory and metadata in one transaction.
func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (storage.Snapshot, error) {
	var (
		sn storage.Snapshot
		td string
	)
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		var err error
		if td, err = os.MkdirTemp(filepath.Join(s.cfg.Root, "snapshots"), "new-"); err != nil {
			return fmt.Errorf("snapshot directory: %w", err)
		}
		if err := os.Mkdir(filepath.Join(td, "fs"), 0o755); err != nil {
			return fmt.Errorf("snapshot directory: %w", err)
		}
		if kind == snapshots.KindActive {
			if err := os.Mkdir(filepath.Join(td, "work"), 0o711); err != nil {
				return fmt.Errorf("snapshot directory: %w", err)
			}
		}
		if sn, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return fmt.Errorf("create snapshot %s: %w", key, err)
		}
		if err := os.Rename(td, s.dir(sn.ID)); err != nil {
			return fmt.Errorf("snapshot directory: %w", err)
		}
		td = ""
		return nil
	})
	if td != "" {
		os.RemoveAll(td)
	}
	return sn, err
}

// mounts says how to mount a snapshot, as containerd's overlay snapshotter
// does: a snapshot without parents is its directory (bind), a view of one
// parent is that parent read-only, anything else an overlay with the
// parents as lower directories (nearest first) and, for an active
// snapshot, its own directory as the upper. A lazy parent that is not
// mounted is an error, never an empty directory.
func (s *Snapshotter) mounts(sn storage.Snapshot) ([]mount.Mount, error) {
	s.mu.Lock()
	for _, id := range sn.ParentIDs {
		if l := s.lazy[id]; l != nil && l.mount == nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("snapshot %s: parent layer %s is not mounted: %w", sn.ID, l.layer, l.err)
		}
	}
	s.mu.Unlock()
	if len(sn.ParentIDs) == 0 {
		mode := "rw"
		if sn.Kind == snapshots.KindView {
			mode = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.fsPath(sn.ID), Options: []string{mode, "rbind"}}}, nil
	}
	if sn.Kind == snapshots.KindView && len(sn.ParentIDs) == 1 {
		return []mount.Mount{{Type: "bind", Source: s.fsPath(sn.ParentIDs[0]), Options: []string{"ro", "rbind"}}}, nil
	}
	var opts []string
	if sn.Kind == snapshots.KindActive {
		opts = append(opts, "workdir="+s.workPath(sn.ID), "upperdir="+s.fsPath(sn.ID))
	}
	lower := make([]string, len(sn.ParentIDs))
	for i, id := range sn.ParentIDs {
		lower[i] = s.fsPath(id)
	}
	opts = append(opts, "lowerdir="+strings.Join(lower, ":"))
	opts = append(opts, s.overlay...)
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

// mountsOrRemove returns the mounts of a snapshot just created, or
// removes it again when it cannot be mounted (a lazy parent is missing).
func (s *Snapshotter) mountsOrRemove(ctx context.Context, key string, sn storage.Snapshot) ([]mount.Mount, error) {
	ms, err := s.mounts(sn)
	if err != nil {
		if rerr := s.Remove(ctx, key); rerr != nil {
			s.log.Warn("remove snapshot", "key", key, "err", rerr)
		}
		return nil, err
	}
	return ms, nil
}

// committed reports whether target exists as a committed lazy layer on
// parent: prepared before, by this or another containerd namespace.
func (s *Snapshotter) committed(ctx context.Context, target, parent string) bool {
	info, err := s.Stat(ctx, target)
	return err == nil && info.Kind == snapshots.KindCommitted && info.Parent == parent &&
		info.Labels[snapshots.LabelSnapshotRef] == target && info.Labels[LabelLayer] != ""
}

// prepareLazy mounts the layer on the active snapshot id and commits it as
// target. On failure nothing stays mounted and the active snapshot is left
// for containerd to unpack into (or removed, when another Prepare committed
// target first: then the error wraps ErrAlreadyExists).
func (s *Snapshotter) prepareLazy(ctx context.Context, id, key, parent, target string, want remoteLayer) error {
	x, err := s.findIndex(ctx, want)
	if err != nil {
		return err
	}
	m, err := s.mountLayer(id, want.repo, x)
	if err != nil {
		return err
	}
	l := &lazyLayer{layer: want.layer, mount: m}
	s.startBackground(l, want, x)
	s.mu.Lock()
	s.lazy[id] = l
	s.mu.Unlock()
	info, err := s.Stat(ctx, key)
	if err == nil {
		labels := maps.Clone(info.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelLayer] = want.layer.String()
		labels[LabelImage] = want.image()
		err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
			usage := snapshots.Usage{Inodes: int64(len(x.Entries))}
			_, err := storage.CommitActive(ctx, key, target, usage, snapshots.WithLabels(labels))
			return err
		})
	}
	if err == nil {
		return nil
	}
	s.mu.Lock()
	delete(s.lazy, id)
	s.mu.Unlock()
	s.unmount(id, l)
	if s.committed(ctx, target, parent) {
		if rerr := s.Remove(ctx, key); rerr != nil {
			s.log.Warn("remove snapshot", "key", key, "err", rerr)
		}
		return fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
	}
	return fmt.Errorf("commit lazy snapshot %s: %w", target, err)
}

// mountLayer mounts one layer, in overlayfs' lower-directory form, on the
// directory of snapshot id.
func (s *Snapshotter) mountLayer(id, repo string, x *index.Index) (*fusefs.Mount, error) {
	lower, lostRootOpaque := overlayLower(x)
	if lostRootOpaque {
		s.log.Warn("layer makes its root directory opaque, which a lazy mount cannot show: lower layers stay visible", "layer", x.Layer)
	}
	cfg := fusefs.Config{
		FSName: "lazyfs:" + x.Layer.String(),
		Logger: s.log,
		Debug:  s.cfg.FUSEDebug,
	}
	if s.cfg.Metrics != nil {
		cfg.OnIOError = s.cfg.Metrics.ReadError
	}
	m, err := fusefs.MountLayers(s.fsPath(id), []*index.Index{lower}, s.source(repo), cfg)
	if err != nil {
		return nil, err
	}
	s.cfg.Metrics.MountStarted()
	return m, nil
}

// source returns the frame source for a repository, one per repository
// for the life of the snapshotter, all on the one cache.
func (s *Snapshotter) source(repo string) *layers.Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.sources[repo]
	if src == nil {
		src = layers.NewSource(s.cfg.Client, repo, s.cfg.Store, s.log)
		src.SetTraffic(s.traffic)
		if s.cfg.Metrics != nil {
			src.SetMetrics(s.cfg.Metrics.Image(repo))
		}
		s.sources[repo] = src
	}
	return src
}

// unmount detaches a lazy layer; a busy mount (a process still in it) is
// detached lazily and goes away with its last user.
func (s *Snapshotter) unmount(id string, l *lazyLayer) {
	if l.bg != nil {
		l.bg.Stop()
		l.unwatch()
	}
	s.cfg.Metrics.MountEnded() // detached or not, this process no longer serves it
	if err := l.mount.Unmount(); err != nil {
		if derr := detach(s.fsPath(id)); derr != nil {
			s.log.Warn("unmount lazy layer", "layer", l.layer, "path", s.fsPath(id), "err", err)
			return
		}
		s.log.Info("lazy layer busy: detached", "layer", l.layer, "path", s.fsPath(id), "err", err)
		return
	}
	s.log.Info("lazy layer unmounted", "layer", l.layer, "path", s.fsPath(id))
}

// orphans lists the snapshot directories the metadata no longer knows.
// Call it inside a write transaction, so no snapshot is being created.
func (s *Snapshotter) orphans(ctx context.Context) ([]string, error) {
	ids, err := storage.IDMap(ctx)
	if err != nil {
		return nil, err
	}
	des, err := os.ReadDir(filepath.Join(s.cfg.Root, "snapshots"))
	if err != nil {
		return nil, fmt.Errorf("list snapshot directories: %w", err)
	}
	var out []string
	for _, d := range des {
		if _, ok := ids[d.Name()]; !ok {
			out = append(out, d.Name())
		}
	}
	return out, nil
}

// removeDir unmounts the lazy layer of snapshot id, if any, and removes
// its directory; a directory with something still mounted on it is left.
func (s *Snapshotter) removeDir(id string) {
	s.mu.Lock()
	l := s.lazy[id]
	delete(s.lazy, id)
	s.mu.Unlock()
	if l != nil && l.mount != nil {
		s.unmount(id, l)
	}
	if err := removeSnapshotDir(s.dir(id)); err != nil {
		s.log.Warn("remove snapshot directory", "path", s.dir(id), "err", err)
	}
}

// startBackground starts the background fetch of lazy layer l (x, of
// image want) and adds it to the metrics.
func (s *Snapshotter) startBackground(l *lazyLayer, want remoteLayer, x *index.Index) {
	cfg := s.cfg.Background
	cfg.Name = want.image()
	l.bg = s.source(want.repo).StartBackground([]*index.Index{x}, cfg)
	bg := l.bg
	l.unwatch = s.cfg.Metrics.WatchBackground(want.repo, func() metrics.Background {
		p := bg.Progress()
		return metrics.Background{State: p.State.String(), Frames: p.Frames, Cached: p.Cached, Bytes: p.Bytes,
			CachedBytes: p.CachedBytes, Fetched: p.Fetched, Requests: p.Requests}
	})
}
