package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/index"
)

// Need is what a workload's command needs of its image: the bytes it read
// and the compressed bytes that hold them. Measured once per workload, not
// timed (neededBytes).
type Need struct {
	How string
	Err string `json:",omitempty"`
	// Read is the uncompressed bytes of the image's files the command had
	// read: the pages of the root's files in the page cache after a native
	// run that started with none of them there, on a file system with the
	// kernel's default read-ahead of 128 KiB (read-ahead and mmap
	// fault-around included, as on a FUSE mount).
	Read int64
	// Files is how many regular files had pages read.
	Files int
	// Blocks is the compressed bytes that hold Read: the compressed span
	// of every deflate block that yields a byte of it, each block once
	// (a block's span runs from the byte holding its first bit to the
	// byte holding the next block's first bit). Deflate windows are not
	// counted. For an uncompressed layer, the bytes themselves.
	Blocks int64
	// Frames is the same at lazyfs's frame granularity: the compressed
	// ranges of the index's frames that hold a byte of Read, each once
	// (windows not counted). Frames / Blocks is what whole frames cost;
	// fetched / Frames is over-fetch beyond the frames the command read.
	Frames int64
	// Estimate is Read's compressed size pro rata: per frame, its
	// compressed size times the share of its bytes read. A cross-check.
	Estimate int64
	// Touched, TouchedBlocks and TouchedFrames are Read, Blocks and
	// Frames measured with read-ahead off (0 KiB): the pages the command
	// itself touched, a lower bound that no FUSE mount reading ahead as
	// the kernel does by default meets.
	Touched, TouchedBlocks, TouchedFrames int64
	// Unmapped is the bytes read of files no layer index names as a
	// regular file (none expected).
	Unmapped int64
	Layers   []NeedLayer
}

// NeedLayer is Need for one layer.
type NeedLayer struct {
	Digest                         string
	Read, Blocks, Frames, Estimate int64
	Ranges                         int // merged ranges of the uncompressed stream read

	frameSpans [][2]int64 // compressed spans of the frames read, merged (for Split)
}

const needHow = "pages of the image's files in the page cache after a native run on a copy of the unpacked root (fresh ext4 on a loop device, read-ahead 128 KiB as on a FUSE mount; its pages dropped before the run, checked with mincore), " +
	"mapped to each layer's uncompressed stream through its index; compressed: the deflate blocks that hold those bytes (each block's compressed span once, windows not counted); at frames: the compressed ranges of the index's frames that hold them"

// unit is a piece of a layer that decodes on its own (a deflate block, a
// frame): the uncompressed bytes [off, end) from the compressed [coff, cend).
type unit struct{ off, end, coff, cend int64 }

// blockUnits turns a gzip blob's block starts into units; the last block
// runs to the blob's end (the trailer included).
func blockUnits(bs []index.Block, tarSize, blobSize int64) []unit {
	us := make([]unit, len(bs))
	for i, b := range bs {
		u := unit{off: b.Out, end: tarSize, coff: b.In, cend: blobSize}
		if i+1 < len(bs) {
			next := bs[i+1]
			u.end, u.cend = next.Out, next.In
			if next.Bits > 0 {
				u.cend++ // the byte holding the next block's first bit ends this one too
			}
		}
		us[i] = u
	}
	return us
}

// frameUnits are the index's frames as units.
func frameUnits(x *index.Index) []unit {
	us := make([]unit, len(x.Frames))
	for i, f := range x.Frames {
		us[i] = unit{off: f.Offset, end: f.Offset + f.Size, coff: f.CompressedOffset, cend: f.CompressedOffset + f.CompressedSize}
	}
	return us
}

// mergeRanges sorts [off, end) ranges and merges those that overlap or
// touch; empty ones are dropped.
func mergeRanges(rs [][2]int64) [][2]int64 {
	rs = slices.DeleteFunc(slices.Clone(rs), func(r [2]int64) bool { return r[1] <= r[0] })
	slices.SortFunc(rs, func(a, b [2]int64) int { return cmpInt64(a[0], b[0]) })
	var out [][2]int64
	for _, r := range rs {
		if n := len(out); n > 0 && r[0] <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compressedFor returns how many compressed bytes hold the uncompressed
// ranges ([off, end), merged: mergeRanges): the union of the compressed
// spans of the units (sorted by off, contiguous) that yield any of their
// bytes. Units that share a boundary byte count it once.
func compressedFor(units []unit, ranges [][2]int64) int64 {
	var total int64
	last := -1             // the last unit counted
	var covered int64 = -1 // compressed bytes before this are counted
	for _, r := range ranges {
		i := sort.Search(len(units), func(i int) bool { return units[i].end > r[0] })
		for ; i < len(units) && units[i].off < r[1]; i++ {
			if i <= last {
				continue
			}
			last = i
			u := units[i]
			from := max(u.coff, covered)
			if u.cend > from {
				total += u.cend - from
			}
			covered = max(covered, u.cend)
		}
	}
	return total
}

// proRata returns, per unit, its compressed size times the share of its
// uncompressed bytes the ranges (merged) hold, added up.
func proRata(units []unit, ranges [][2]int64) int64 {
	var total float64
	for _, r := range ranges {
		i := sort.Search(len(units), func(i int) bool { return units[i].end > r[0] })
		for ; i < len(units) && units[i].off < r[1]; i++ {
			u := units[i]
			if u.end <= u.off {
				continue
			}
			in := min(u.end, r[1]) - max(u.off, r[0])
			total += float64(u.cend-u.coff) * float64(in) / float64(u.end-u.off)
		}
	}
	return int64(total + 0.5)
}

// touchedSpans returns the compressed spans [coff, cend) of the units
// that yield a byte of ranges (merged), merged.
func touchedSpans(units []unit, ranges [][2]int64) [][2]int64 {
	var out [][2]int64
	last := -1
	for _, r := range ranges {
		i := sort.Search(len(units), func(i int) bool { return units[i].end > r[0] })
		for ; i < len(units) && units[i].off < r[1]; i++ {
			if i > last {
				last = i
				out = append(out, [2]int64{units[i].coff, units[i].cend})
			}
		}
	}
	return mergeRanges(out)
}

// layerNeed computes a layer's need from the uncompressed ranges read.
// blocks are the blob's deflate blocks (nil for an uncompressed layer).
func layerNeed(x *index.Index, blocks []index.Block, ranges [][2]int64) NeedLayer {
	ranges = mergeRanges(ranges)
	nl := NeedLayer{Digest: x.Layer.String(), Ranges: len(ranges), frameSpans: touchedSpans(frameUnits(x), ranges)}
	for _, r := range ranges {
		nl.Read += r[1] - r[0]
	}
	frames := frameUnits(x)
	nl.Frames = compressedFor(frames, ranges)
	nl.Estimate = proRata(frames, ranges)
	switch {
	case x.Format == index.FormatTar:
		nl.Blocks = nl.Read
	case blocks != nil:
		nl.Blocks = compressedFor(blockUnits(blocks, x.TarSize, x.BlobSize), ranges)
	default: // zstd: no blocks to go by
		nl.Blocks = nl.Frames
	}
	return nl
}

// fileRef is where a file of the merged image has its content.
type fileRef struct {
	layer int // index into the image's layers
	entry *index.Entry
}

// imageFiles maps each regular file of the merged image (path relative to
// the root, as the index has it) to the uppermost layer entry that holds
// its content (a hard link resolved to its target in the same layer).
// Whiteouts are not applied: a file they remove is not in the unpacked
// root, so nobody asks for it.
func imageFiles(xs []*index.Index) map[string]fileRef {
	out := map[string]fileRef{}
	for li := len(xs) - 1; li >= 0; li-- {
		byPath := map[string]*index.Entry{}
		for i := range xs[li].Entries {
			e := &xs[li].Entries[i]
			byPath[e.Path] = e
		}
		for i := range xs[li].Entries {
			e := &xs[li].Entries[i]
			if _, ok := out[e.Path]; ok {
				continue
			}
			switch e.Type {
			case index.TypeReg:
				out[e.Path] = fileRef{li, e}
			case index.TypeHardlink:
				if t := byPath[e.Linkname]; t != nil && t.Type == index.TypeReg {
					out[e.Path] = fileRef{li, t}
				}
			default:
				out[e.Path] = fileRef{li, nil} // hides lower files of that name
			}
		}
	}
	return out
}

// walkFiles calls fn with every regular file under the roots (uppermost
// first; a path an upper root has hides the lower one's), with its path
// relative to the root.
func walkFiles(roots []string, fn func(rel, full string, fi fs.FileInfo) error) error {
	seen := map[string]bool{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil || rel == "." {
				return err
			}
			if seen[rel] {
				return nil // an upper root's (a directory's files are still walked)
			}
			seen[rel] = true
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return fn(rel, p, fi)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// evictFiles drops the page cache of every regular file under the roots
// (posix_fadvise DONTNEED: clean pages nobody maps go).
func evictFiles(roots []string) error {
	return walkFiles(roots, func(_, full string, fi fs.FileInfo) error {
		if fi.Size() == 0 {
			return nil
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}

// residentRanges returns the byte ranges of the file whose pages are in
// the page cache (mincore), clipped to its size.
func residentRanges(full string, size int64) ([][2]int64, error) {
	if size == 0 {
		return nil, nil
	}
	f, err := os.Open(full)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", full, err)
	}
	defer unix.Munmap(m) //nolint:errcheck // a mapping we made and only looked at
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return nil, fmt.Errorf("mincore %s: %w", full, errno)
	}
	var out [][2]int64
	for i := 0; i < len(vec); i++ {
		if vec[i]&1 == 0 {
			continue
		}
		j := i
		for j < len(vec) && vec[j]&1 != 0 {
			j++
		}
		out = append(out, [2]int64{int64(i) * page, min(int64(j)*page, size)})
		i = j
	}
	return out, nil
}

// needReadahead is the read-ahead (KiB) of the file system the need is
// measured on: the kernel's default (VM_READAHEAD_PAGES), which is also
// what a FUSE mount gets. The root's own disk may read ahead far more (8
// MiB on the bench VM's), and would make every file look read whole.
const needReadahead = 128

// neededBytes measures what w needs of its image (Need): it copies the
// unpacked root onto a fresh ext4 on a loop device whose read-ahead is
// needReadahead, drops the copy's pages from the page cache, runs w
// natively on it (not timed), reads which pages are cached, and maps them
// through the image's layer indexes to compressed bytes.
func (r *runner) neededBytes(ctx context.Context, w Workload) Need {
	n := r.neededBytesRA(ctx, w, needReadahead)
	if n.Err != "" {
		return n
	}
	t := r.neededBytesRA(ctx, w, 0)
	if t.Err != "" {
		n.Err = "with read-ahead off: " + t.Err
		return n
	}
	n.Touched, n.TouchedBlocks, n.TouchedFrames = t.Read, t.Blocks, t.Frames
	return n
}

// neededBytesRA is neededBytes on a file system with read-ahead of raKB
// KiB; only Read, Files, Blocks, Frames, Estimate, Unmapped and Layers are
// set.
func (r *runner) neededBytesRA(ctx context.Context, w Workload, raKB int) (n Need) {
	n.How = needHow
	b := r.images[w.Image]
	if len(b.Indexes) != len(b.Layers) {
		n.Err = "the image's layer indexes were not kept"
		return n
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	sc, err := newScratch(ctx, r.cfg.WorkDir, "need", 16<<30)
	if err != nil {
		n.Err = err.Error()
		return n
	}
	defer r.closeScratch(sc)
	fail := func(format string, args ...any) Need {
		n.Err = fmt.Sprintf(format, args...)
		return n
	}
	dev, err := run(ctx, "findmnt", "-n", "-o", "SOURCE", "--target", sc.Dir)
	if err != nil {
		return fail("%v", err)
	}
	dev = strings.TrimSpace(dev)
	if _, err := run(ctx, "blockdev", "--setra", strconv.Itoa(raKB*2), dev); err != nil { // 512-byte sectors
		return fail("%v", err)
	}
	var roots []string
	for i, root := range b.roots() {
		dst := filepath.Join(sc.Dir, "root"+strconv.Itoa(i))
		if _, err := run(ctx, "cp", "-a", root, dst); err != nil {
			return fail("copy the root: %v", err)
		}
		roots = append(roots, dst)
	}
	if _, err := run(ctx, "sync", "-f", sc.Dir); err != nil {
		return fail("%v", err)
	}
	if err := evictFiles(roots); err != nil {
		return fail("drop the copy's pages: %v", err)
	}
	argv, err := r.nativeArgvOn(w, strings.Join(roots, ":"), filepath.Join(sc.Dir, "run"))
	if err != nil {
		return fail("%v", err)
	}
	files := imageFiles(b.Indexes)
	// Pages cached before the run (none expected), to be sure the drop worked.
	if err := residentFiles(roots, func(string, [][2]int64) { n.Files++ }); err != nil {
		return fail("pages cached: %v", err)
	}
	if n.Files > 0 {
		return fail("%d files of the copy still had pages cached before the run", n.Files)
	}
	_, out, err := r.command(ctx, r.logPath(fmt.Sprintf("%s-need-ra%d", w.Name, raKB)), nil, argv...)
	if err := checkRun(w, out, err); err != nil {
		return fail("%v", err)
	}
	ranges := make([][][2]int64, len(b.Indexes))
	err = residentFiles(roots, func(rel string, rs [][2]int64) {
		n.Files++
		ref, ok := files[filepath.ToSlash(rel)]
		for _, fr := range rs {
			n.Read += fr[1] - fr[0]
			if !ok || ref.entry == nil {
				n.Unmapped += fr[1] - fr[0]
				continue
			}
			for _, p := range ref.entry.Pieces(fr[0], fr[1]-fr[0]) {
				if !p.Hole() {
					ranges[ref.layer] = append(ranges[ref.layer], [2]int64{p.Stream, p.Stream + p.Len})
				}
			}
		}
	})
	if err != nil {
		return fail("pages read: %v", err)
	}
	for i, x := range b.Indexes {
		blocks, err := r.gzipBlocks(ctx, b, i)
		if err != nil {
			return fail("%v", err)
		}
		nl := layerNeed(x, blocks, ranges[i])
		n.Layers = append(n.Layers, nl)
		n.Blocks += nl.Blocks
		n.Frames += nl.Frames
		n.Estimate += nl.Estimate
	}
	if err := writeNeedRanges(r.logPath(fmt.Sprintf("%s-need-ranges-ra%d", w.Name, raKB)), b.Indexes, ranges); err != nil {
		r.logf("%s: %v", w.Name, err)
	}
	return n
}

// residentFiles calls fn with each regular file under roots (uppermost
// first, each inode once) that has pages in the page cache, and their
// byte ranges.
func residentFiles(roots []string, fn func(rel string, rs [][2]int64)) error {
	seenIno := map[[2]uint64]bool{}
	return walkFiles(roots, func(rel, full string, fi fs.FileInfo) error {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			k := [2]uint64{st.Dev, st.Ino}
			if seenIno[k] {
				return nil // another name of a file already looked at
			}
			seenIno[k] = true
		}
		rs, err := residentRanges(full, fi.Size())
		if err != nil || len(rs) == 0 {
			return err
		}
		fn(rel, rs)
		return nil
	})
}

// writeNeedRanges writes, per layer, the merged ranges of its uncompressed
// stream the command read, as JSON beside the workload's logs: what a
// later analysis of the request timelines compares fetched frames with.
func writeNeedRanges(logPath string, xs []*index.Index, ranges [][][2]int64) error {
	type layer struct {
		Digest string
		Ranges [][2]int64 // [off, end)
	}
	var out []layer
	for i, x := range xs {
		out = append(out, layer{Digest: x.Layer.String(), Ranges: mergeRanges(ranges[i])})
	}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return os.WriteFile(strings.TrimSuffix(logPath, ".log")+".json", data, 0o644)
}

// gzipBlocks returns the deflate blocks of layer i of b (nil if it is not
// gzip), scanning each blob once per run.
func (r *runner) gzipBlocks(ctx context.Context, b *builtImage, i int) ([]index.Block, error) {
	x := b.Indexes[i]
	if x.Format != index.FormatGzip {
		return nil, nil
	}
	if bs, ok := r.blocks[x.Layer]; ok {
		return bs, nil
	}
	l := b.Layers[i]
	var bs []index.Block
	var err error
	if l.Path != "" {
		f, ferr := os.Open(l.Path)
		if ferr != nil {
			return nil, ferr
		}
		defer f.Close()
		bs, err = index.GzipBlocks(ctx, f)
	} else if l.Blob != nil {
		bs, err = index.GzipBlocks(ctx, bytes.NewReader(l.Blob))
	} else {
		err = errors.New("no blob")
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", x.Layer, err)
	}
	if r.blocks == nil {
		r.blocks = map[digest.Digest][]index.Block{}
	}
	r.blocks[x.Layer] = bs
	return bs, nil
}

// keptIndexes reads the layer indexes `lazyfs index` left in its root.
func keptIndexes(root string, b *builtImage) ([]*index.Index, error) {
	var xs []*index.Index
	for _, l := range b.Layers {
		p, err := cache.IndexPath(filepath.Join(root, "cache"), l.Digest)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		x, err := index.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("index of %s: %w", l.Digest, err)
		}
		xs = append(xs, x)
	}
	return xs, nil
}

// Split is where the bytes a measurement fetched went, against its
// workload's Need (read-ahead 128 KiB).
type Split struct {
	NeededFrames int64 // layer bytes in frames that hold bytes the command read
	OtherFrames  int64 // layer bytes of frames it did not read
	TOCs         int64 // lazyfs index blobs read from their start (the tocs)
	Windows      int64 // lazyfs index blobs read elsewhere (deflate windows)
	Other        int64 // everything else: manifests, configs, profiles, /v2/
}

// split sorts t's bytes by Split's kinds. layers are the image's layer
// digests, with n.Layers in the same order; labels name the index blobs
// ("index of …").
func split(t Traffic, n Need, layers []string, labels map[string]string) *Split {
	if n.Err != "" || len(n.Layers) != len(layers) {
		return nil
	}
	spans := map[string][][2]int64{}
	for i, d := range layers {
		spans[d] = n.Layers[i].frameSpans
	}
	var sp Split
	for _, q := range t.Log {
		if q.Written <= 0 {
			continue
		}
		d := ""
		if q.Digest != "" && q.Method == http.MethodGet {
			d = q.Digest.String()
		}
		off := max(q.Offset, 0)
		have, isLayer := spans[d]
		switch {
		case isLayer:
			in := overlap(have, [2]int64{off, off + q.Written})
			sp.NeededFrames += in
			sp.OtherFrames += q.Written - in
		case d != "" && strings.HasPrefix(labels[d], "index of "):
			if off == 0 {
				sp.TOCs += q.Written
			} else {
				sp.Windows += q.Written
			}
		default:
			sp.Other += q.Written
		}
	}
	return &sp
}
