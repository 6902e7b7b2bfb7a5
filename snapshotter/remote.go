package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
)

// imageTTL is how long a finished image lookup (which layers have an index
// where) is reused: the layers of one pull arrive one Prepare after the
// other, and an index pushed later is found after at most this long.
const imageTTL = time.Minute

// remoteLayer is what the remote-snapshot labels ask for.
type remoteLayer struct {
	repo     string // registry host and repository, as in the image reference
	manifest digest.Digest
	layer    digest.Digest
}

// image returns REPO@MANIFEST.
func (r remoteLayer) image() string { return r.repo + "@" + r.manifest.String() }

// remoteRequest reads the remote-snapshot labels. why says, when they are
// missing or unusable, why the layer is not a candidate for a lazy mount.
func remoteRequest(labels map[string]string) (r remoteLayer, why string) {
	ref := labels[labelImageRef]
	if ref == "" || labels[labelDigest] == "" || labels[labelManifest] == "" {
		return r, "no remote-snapshot labels (pull with `lazyfs rpull`, or CRI with disable_snapshot_annotations = false)"
	}
	var err error
	if r.layer, err = digest.Parse(labels[labelDigest]); err != nil {
		return r, fmt.Sprintf("label %s: %v", labelDigest, err)
	}
	if r.manifest, err = digest.Parse(labels[labelManifest]); err != nil {
		return r, fmt.Sprintf("label %s: %v", labelManifest, err)
	}
	if r.repo, err = repoOf(ref); err != nil {
		return r, fmt.Sprintf("label %s: %v", labelImageRef, err)
	}
	return r, ""
}

// repoOf strips the tag and digest from an image reference:
// "host:5000/a/b:tag@sha256:…" is "host:5000/a/b". Short names stay short
// ("busybox"); the registry client expands them.
func repoOf(ref string) (string, error) {
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo = repo[:i]
	}
	if repo == "" || strings.HasSuffix(repo, "/") || strings.ContainsAny(repo, " \t\n") {
		return "", fmt.Errorf("image reference %q names no repository", ref)
	}
	return repo, nil
}

// splitImage parses a LabelImage value, REPO@MANIFEST.
func splitImage(s string) (remoteLayer, error) {
	repo, d, ok := strings.Cut(s, "@")
	if !ok || repo == "" {
		return remoteLayer{}, fmt.Errorf("image %q: want REPO@DIGEST", s)
	}
	m, err := digest.Parse(d)
	if err != nil {
		return remoteLayer{}, fmt.Errorf("image %q: %w", s, err)
	}
	return remoteLayer{repo: repo, manifest: m}, nil
}

// imageCall is one lookup of an image: its manifest and where each
// layer's index is. Waiters share it; it runs detached from any one of them.
type imageCall struct {
	done    chan struct{}
	img     *fetch.Image
	lookups map[digest.Digest]layers.Lookup
	err     error
	at      time.Time // when it finished
}

// lookupImage finds the image REPO@MANIFEST and its layers' indexes, once
// for all concurrent callers and at most once per imageTTL.
func (s *Snapshotter) lookupImage(ctx context.Context, ref string) (*imageCall, error) {
	s.mu.Lock()
	c := s.images[ref]
	if c != nil {
		select {
		case <-c.done:
			if c.err != nil || time.Since(c.at) > imageTTL {
				c = nil
			}
		default:
		}
	}
	if c == nil {
		for k, old := range s.images {
			select {
			case <-old.done:
				if time.Since(old.at) > imageTTL {
					delete(s.images, k)
				}
			default:
			}
		}
		c = &imageCall{done: make(chan struct{})}
		s.images[ref] = c
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			fctx, cancel := context.WithTimeout(s.stop, s.cfg.FindTimeout)
			defer cancel()
			c.img, c.lookups, c.err = s.findImage(fctx, ref)
			c.at = time.Now()
			close(c.done)
		}()
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Snapshotter) findImage(ctx context.Context, ref string) (*fetch.Image, map[digest.Digest]layers.Lookup, error) {
	img, err := s.cfg.Client.Resolve(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	lks, err := s.resolver.Inspect(ctx, img)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[digest.Digest]layers.Lookup, len(lks))
	for _, lk := range lks {
		out[lk.Desc.Digest] = lk
	}
	return img, out, nil
}

// findIndex returns the layer's index from the local store, else from the
// image's index artifact (kept locally then). It never builds one: a layer
// without an index is errNotLazy, and containerd unpacks it.
func (s *Snapshotter) findIndex(ctx context.Context, want remoteLayer) (*index.Index, error) {
	x, err := s.localIndex(want.layer)
	if err != nil {
		return nil, err
	}
	if x != nil {
		return x, nil
	}
	c, err := s.lookupImage(ctx, want.image())
	if err != nil {
		return nil, fmt.Errorf("find indexes of %s: %w", want.image(), err)
	}
	lk, ok := c.lookups[want.layer]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: manifest %s has no layer %s", errNotLazy, want.manifest, want.layer)
	case !lk.Lazy:
		return nil, fmt.Errorf("%w: %s", errNotLazy, lk.WhyNot)
	case lk.Remote == nil:
		return nil, fmt.Errorf("%w: no lazyfs index for it (publish one with `lazyfs index --push %s`)", errNotLazy, want.image())
	}
	return s.resolver.Download(ctx, c.img, lk.Desc, *lk.Remote)
}

// localIndex returns the stored index of a layer, nil if there is none
// usable. A zstd layer is errNotLazy even with an index: its first read
// fetches the whole blob.
func (s *Snapshotter) localIndex(layer digest.Digest) (*index.Index, error) {
	x, err := s.resolver.LocalIndex(layer)
	if x == nil || err != nil {
		return nil, err
	}
	if x.Format == index.FormatZstd {
		return nil, fmt.Errorf("%w: zstd layers are not seekable: the first read would fetch the whole layer", errNotLazy)
	}
	return x, nil
}

// restore mounts again the lazy layers of the committed snapshots, after
// a restart. Whatever is left mounted on their directories (the dead FUSE
// mounts of the previous process) is detached first.
func (s *Snapshotter) restore(ctx context.Context) error {
	type entry struct {
		id   string
		info snapshots.Info
	}
	var todo []entry
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Kind != snapshots.KindCommitted || info.Labels[LabelLayer] == "" {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			todo = append(todo, entry{id, info})
			return nil
		})
	})
	if err != nil && !errdefs.IsNotFound(err) { // a new store has no buckets yet
		return fmt.Errorf("list lazy snapshots: %w", err)
	}
	for _, e := range todo {
		start := time.Now()
		l, err := s.remount(ctx, e.id, e.info)
		s.mu.Lock()
		s.lazy[e.id] = l
		s.mu.Unlock()
		if err != nil {
			s.cfg.Metrics.MountFailed()
			s.log.Error("lazy layer not mounted again: snapshots on it cannot be mounted", "layer", l.layer, "target", e.info.Name, "err", err)
			continue
		}
		s.log.Info("lazy layer mounted again", "layer", l.layer, "target", e.info.Name, "path", s.fsPath(e.id), "dur", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func (s *Snapshotter) remount(ctx context.Context, id string, info snapshots.Info) (*lazyLayer, error) {
	l := &lazyLayer{}
	fail := func(err error) (*lazyLayer, error) {
		l.err = err
		return l, err
	}
	var err error
	if l.layer, err = digest.Parse(info.Labels[LabelLayer]); err != nil {
		return fail(fmt.Errorf("label %s: %w", LabelLayer, err))
	}
	want, err := splitImage(info.Labels[LabelImage])
	if err != nil {
		return fail(fmt.Errorf("label %s: %w", LabelImage, err))
	}
	want.layer = l.layer
	dir := s.fsPath(id)
	if mounted, _ := isMountPoint(dir); mounted {
		if err := detach(dir); err != nil {
			return fail(fmt.Errorf("detach stale mount %s: %w", dir, err))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FindTimeout)
	defer cancel()
	x, err := s.findIndex(ctx, want)
	if err != nil {
		return fail(err)
	}
	if l.mount, err = s.mountLayer(id, want.repo, x); err != nil {
		return fail(err)
	}
	s.startBackground(l, want, x)
	return l, nil
}

// isMountPoint reports whether something is mounted on dir. A dead FUSE
// mount (its server gone) cannot be stat'ed and counts as mounted.
func isMountPoint(dir string) (bool, error) {
	var st, pst unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return true, err
	}
	if err := unix.Lstat(filepath.Dir(dir), &pst); err != nil {
		return false, err
	}
	return st.Dev != pst.Dev, nil
}

// detach unmounts dir lazily: the mount leaves the namespace now and goes
// away with its last user.
func detach(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// removeSnapshotDir removes a snapshot's directory, first detaching
// whatever is still mounted on its fs directory; it never descends into a
// mount.
func removeSnapshotDir(dir string) error {
	fsDir := filepath.Join(dir, "fs")
	if mounted, _ := isMountPoint(fsDir); mounted {
		if err := detach(fsDir); err != nil {
			return err
		}
		if still, _ := isMountPoint(fsDir); still {
			return fmt.Errorf("remove %s: %s is still mounted", dir, fsDir)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
