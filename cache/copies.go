package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// A file copy is the whole content of one file of a layer, kept so that a
// read-only mount can hand the kernel a plain file to read from (FUSE
// passthrough): the kernel then reads it without asking the mount, and
// its page cache is shared by every mount of the layer. A copy is stored
// like a frame, under its SHA-256 (counted, evicted and pruned with the
// frames), and found through a small record keyed by the file's place in
// its layer (CopyKey).
//
// A copy is hashed as it is written, from verified frames, and its record
// keeps the inode number and change time of the file written: while the
// file at its path has both, nothing wrote to it, and it is trusted
// without reading it again, as an unpacked layer's files are. Hashing it
// at every new mount's first open would read a 1 GiB file whole before
// its first byte could be served. A file without them (written to,
// replaced, or recorded by an older build) is hashed the first time a
// Store opens it. So that the change time stays, a copy's mtime is never
// set to mark a use, as a frame's is: other processes' scans see a copy as
// old as it is, and evict it before the frames it was made from. Frames
// are still checked at every read from disk.

// CopyKey names the record of the copy of the size-byte file at offset off
// of the uncompressed stream of layer.
func CopyKey(layer digest.Digest, off, size int64) digest.Digest {
	return digest.FromString("lazyfs file copy v1\n" + layer.String() + "\n" +
		strconv.FormatInt(off, 10) + "\n" + strconv.FormatInt(size, 10))
}

// PutCopy stores data, the whole content of the file key names (CopyKey),
// which the caller read from verified frames. Unlike Put it does not keep
// data in the memory tier: the kernel reads the copy itself.
func (s *Store) PutCopy(key digest.Digest, data []byte) error {
	w, err := s.CreateCopy(key, int64(len(data)))
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Commit()
}

// CopyWriter writes a file copy piece by piece, for files too big to hold
// in memory (Store.CreateCopy).
type CopyWriter struct {
	s         *Store
	key       digest.Digest
	size, n   int64
	f         *os.File
	sum       hash.Hash
	committed bool
}

// CreateCopy starts the copy of the size-byte file key names: Write its
// bytes in order, then Commit; Close drops a copy not committed. Nothing
// of an unfinished copy stays behind but a temp file Open removes once it
// is stale.
func (s *Store) CreateCopy(key digest.Digest, size int64) (*CopyWriter, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	kh, err := hexOf(key)
	if err != nil {
		return nil, err
	}
	if s.maxDisk > 0 && size > s.maxDisk {
		return nil, fmt.Errorf("cache: file copy %s: %d bytes exceed the disk limit of %d", key, size, s.maxDisk)
	}
	// Named after the record, in a frame directory, where a scan finds it
	// if this process dies; renamed under its digest by Commit.
	dir := frameDir(s.dir, kh)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, dirPerm); err == nil {
			f, err = os.CreateTemp(dir, tempPrefix+"*")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cache: file copy %s: %w", key, err)
	}
	return &CopyWriter{s: s, key: key, size: size, f: f, sum: sha256.New()}, nil
}

// Write appends p to the copy; more bytes than its size are an error.
func (w *CopyWriter) Write(p []byte) (int, error) {
	if w.committed || w.f == nil {
		return 0, fmt.Errorf("cache: file copy %s: write after Commit or Close", w.key)
	}
	if w.n+int64(len(p)) > w.size {
		return 0, fmt.Errorf("cache: file copy %s: %d bytes written, more than its %d", w.key, w.n+int64(len(p)), w.size)
	}
	n, err := w.f.Write(p)
	w.sum.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("cache: file copy %s: %w", w.key, err)
	}
	return n, nil
}

// Commit stores the copy under its SHA-256 (a file already there with its
// size is kept instead), then its record. A copy that fails to commit is
// dropped.
func (w *CopyWriter) Commit() error {
	if w.committed || w.f == nil {
		return fmt.Errorf("cache: file copy %s: Commit after Commit or Close", w.key)
	}
	if w.n != w.size {
		w.Close()
		return fmt.Errorf("cache: file copy %s: %d bytes written, want %d", w.key, w.n, w.size)
	}
	s, tmp := w.s, w.f.Name()
	// On disk before it is named and recorded: a copy is not hashed
	// again, so a power cut must not leave a recorded copy whose blocks
	// never reached the disk.
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f = nil
	defer os.Remove(tmp) // gone already when renamed
	if err != nil {
		return fmt.Errorf("cache: file copy %s: %w", w.key, err)
	}
	h := hex.EncodeToString(w.sum.Sum(nil))
	final := framePath(s.dir, h)
	fi, err := os.Lstat(final)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != w.size {
		if err := os.MkdirAll(frameDir(s.dir, h), dirPerm); err != nil {
			return fmt.Errorf("cache: file copy %s: %w", w.key, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("cache: file copy %s: %w", w.key, err)
		}
		if fi, err = os.Lstat(final); err != nil {
			return fmt.Errorf("cache: file copy %s: %w", w.key, err)
		}
	}
	w.committed = true
	s.stored(h, w.size)
	rec := copyRecord{hex: h}
	rec.ino, rec.ctime = fileID(fi)
	// The record last: a record without its copy is a miss, never a wrong
	// file.
	if err := s.PutIndex(w.key, rec.encode()); err != nil {
		return fmt.Errorf("cache: file copy %s: %w", w.key, err)
	}
	return nil
}

// Close drops the copy unless it was committed.
func (w *CopyWriter) Close() error {
	if w.f != nil {
		tmp := w.f.Name()
		w.f.Close()
		w.f = nil
		return os.Remove(tmp)
	}
	return nil
}

// copyRecord is a copy's record: its digest and, from when it was
// written, its file's inode number and change time (zero: not known).
type copyRecord struct {
	hex   string
	ino   uint64
	ctime int64 // ns
}

// fileID returns fi's inode number and change time.
func fileID(fi fs.FileInfo) (ino uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, st.Ctim.Nano()
	}
	return 0, 0
}

// encode writes "sha256:HEX INO CTIME" (an older build's record was the
// digest alone).
func (r copyRecord) encode() []byte {
	return fmt.Appendf(nil, "sha256:%s %d %d", r.hex, r.ino, r.ctime)
}

func parseCopyRecord(b []byte) (copyRecord, error) {
	d, rest, _ := strings.Cut(string(b), " ")
	h, err := hexOf(digest.Digest(d))
	if err != nil {
		return copyRecord{}, err
	}
	r := copyRecord{hex: h}
	if rest != "" {
		ino, ctime, ok := strings.Cut(rest, " ")
		if r.ino, err = strconv.ParseUint(ino, 10, 64); err == nil && ok {
			r.ctime, err = strconv.ParseInt(ctime, 10, 64)
		}
		if err != nil || !ok {
			return copyRecord{}, fmt.Errorf("%w: copy record %q", ErrBadDigest, b)
		}
	}
	return r, nil
}

// written reports whether fi is the file the record was written with.
func (r copyRecord) written(fi fs.FileInfo) bool {
	ino, ctime := fileID(fi)
	return r.ino != 0 && ino == r.ino && ctime == r.ctime
}

// usedCopy records a use of copy h, without setting its file's mtime.
func (s *Store) usedCopy(h string, fi fs.FileInfo) {
	s.mu.Lock()
	s.rec.use(h, fi.Size(), time.Now(), fi.ModTime())
	s.mu.Unlock()
}

// HasCopy reports whether the copy of the size-byte file key names is on
// disk, without checking its content.
func (s *Store) HasCopy(key digest.Digest, size int64) bool {
	rec, err := s.GetIndex(key)
	if err != nil {
		return false
	}
	r, err := parseCopyRecord(rec)
	if err != nil {
		return false
	}
	fi, err := os.Stat(framePath(s.dir, r.hex))
	return err == nil && fi.Size() == size
}

// OpenCopy opens the copy of the size-byte file key names for reading,
// or returns an error wrapping fs.ErrNotExist when there is none. A copy
// whose file changed since it was written is checked against its SHA-256
// (once per Store); a wrong one is removed and reported as missing.
func (s *Store) OpenCopy(key digest.Digest, size int64) (*os.File, error) {
	rec, err := s.GetIndex(key)
	if err != nil {
		return nil, err
	}
	r, err := parseCopyRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("cache: file copy %s: bad record: %w", key, fs.ErrNotExist)
	}
	h := r.hex
	f, err := os.Open(framePath(s.dir, h))
	if err != nil {
		return nil, fmt.Errorf("cache: file copy %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != size {
		// Not the copy asked for (the record belongs to another size):
		// a miss, and not a reason to remove the file.
		f.Close()
		return nil, fmt.Errorf("cache: file copy %s: %d bytes, want %d: %w", key, fi.Size(), size, fs.ErrNotExist)
	}
	if err == nil && !r.written(fi) {
		err = s.checkCopy(h, f)
	}
	if err != nil {
		f.Close()
		if !errors.Is(err, fs.ErrNotExist) {
			s.st.corrupt.Add(1)
			s.log.Warn("cache: file copy damaged: removed", "op", "copy", "frame", "sha256:"+h, "err", err)
			s.mu.Lock()
			s.rec.remove(h)
			s.mu.Unlock()
			os.Remove(framePath(s.dir, h))
		}
		return nil, fmt.Errorf("cache: file copy %s: %w", key, fs.ErrNotExist)
	}
	s.usedCopy(h, fi)
	return f, nil
}

// checkCopy hashes the copy h read from f, once per Store.
func (s *Store) checkCopy(h string, f *os.File) error {
	if _, ok := s.checked.Load(h); ok {
		return nil
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		return fmt.Errorf("content has digest sha256:%s", got)
	}
	s.checked.Store(h, struct{}{})
	return nil
}
