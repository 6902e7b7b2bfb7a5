package cache

import (
	"slices"
	"time"
)

// touchEvery is how often, at most, a frame file's mtime is set on use, so
// that another process's scan sees recency without I/O on every hit.
const touchEvery = time.Minute

// entry is one frame this process believes is on disk.
type entry struct {
	hex        string
	size       int64
	used       time.Time // last use by this process, or the mtime found by a scan
	touched    time.Time // the mtime last written to (or read from) the file
	prev, next *entry    // in recency order, most recent first
}

// recency is the disk tier's record: which frames are on disk, how big, and
// in which order they were used. Its zero value is not ready: use init.
// Not safe for concurrent use; Store.mu guards it.
type recency struct {
	byHex map[string]*entry
	root  entry // sentinel: root.next is the most recently used, root.prev the least
	bytes int64 // sum of sizes in byHex
}

func (r *recency) init() {
	r.byHex = make(map[string]*entry)
	r.root.next, r.root.prev = &r.root, &r.root
	r.bytes = 0
}

func (r *recency) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (r *recency) pushFront(e *entry) {
	e.prev, e.next = &r.root, r.root.next
	r.root.next.prev = e
	r.root.next = e
}

// use records a use of the frame h of size bytes at now, adding it if it
// is not known. mtime is the file's modification time if the caller knows
// it (zero otherwise). It reports whether the file's mtime is due to be set;
// if so, it has already recorded now as touched.
func (r *recency) use(h string, size int64, now, mtime time.Time) (touch bool) {
	e := r.byHex[h]
	if e == nil {
		e = &entry{hex: h, size: size}
		r.byHex[h] = e
		r.bytes += size
	} else {
		r.unlink(e)
		if e.size != size {
			r.bytes += size - e.size
			e.size = size
		}
	}
	if mtime.After(e.touched) {
		e.touched = mtime
	}
	if now.Sub(e.touched) >= touchEvery {
		e.touched = now
		touch = true
	}
	e.used = now
	r.pushFront(e)
	return touch
}

// useIfKnown is use for a frame that may not be on disk (a memory hit): it
// changes nothing if h is not known.
func (r *recency) useIfKnown(h string, now time.Time) (touch bool) {
	e := r.byHex[h]
	if e == nil {
		return false
	}
	return r.use(h, e.size, now, time.Time{})
}

// remove forgets h (its file is gone).
func (r *recency) remove(h string) {
	if e := r.byHex[h]; e != nil {
		r.unlink(e)
		delete(r.byHex, h)
		r.bytes -= e.size
	}
}

// evict removes least recently used entries until at most keep bytes
// remain, or max entries were removed if max > 0, and returns them. The
// caller removes their files.
func (r *recency) evict(keep int64, max int) []*entry {
	var out []*entry
	for r.bytes > keep && r.root.prev != &r.root && (max <= 0 || len(out) < max) {
		e := r.root.prev
		r.unlink(e)
		delete(r.byHex, e.hex)
		r.bytes -= e.size
		out = append(out, e)
	}
	return out
}

// rebuild replaces the record with the frames a scan found, ordered by
// their mtime or, for frames this process used more recently, by that use.
// Entries used at or after since are kept even if the scan did not see
// them: they were stored while the scan ran.
func (r *recency) rebuild(found []scanned, since time.Time) {
	old := r.byHex
	all := make([]*entry, 0, len(found))
	seen := make(map[string]bool, len(found))
	for _, f := range found {
		e := &entry{hex: f.hex, size: f.size, used: f.mtime, touched: f.mtime}
		if o := old[f.hex]; o != nil && o.used.After(e.used) {
			e.used = o.used
			if o.touched.After(e.touched) {
				e.touched = o.touched
			}
		}
		seen[f.hex] = true
		all = append(all, e)
	}
	for h, o := range old {
		if !seen[h] && !o.used.Before(since) {
			all = append(all, &entry{hex: h, size: o.size, used: o.used, touched: o.touched})
		}
	}
	slices.SortFunc(all, func(a, b *entry) int { return a.used.Compare(b.used) })
	r.init()
	for _, e := range all { // oldest first, so the newest ends up in front
		r.byHex[e.hex] = e
		r.bytes += e.size
		r.pushFront(e)
	}
}
