package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// A file copy is the whole content of one file of a layer, kept so that a
// read-only mount can hand the kernel a plain file to read from (FUSE
// passthrough): the kernel then reads it without asking the mount, and
// its page cache is shared by every mount of the layer. A copy is stored
// like a frame, under its SHA-256 (counted, evicted and pruned with the
// frames), and found through a small record keyed by the file's place in
// its layer (CopyKey).

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
	if s.isClosed() {
		return ErrClosed
	}
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	if fi, err := os.Stat(framePath(s.dir, h)); err != nil || fi.Size() != int64(len(data)) {
		if err := s.storeDisk(h, data); err != nil {
			return fmt.Errorf("cache: put file copy %s: %w", key, err)
		}
	}
	// The record last: a record without its copy is a miss, never a wrong
	// file.
	if err := s.PutIndex(key, []byte("sha256:"+h)); err != nil {
		return fmt.Errorf("cache: put file copy %s: %w", key, err)
	}
	return nil
}

// HasCopy reports whether the copy of the size-byte file key names is on
// disk, without checking its content.
func (s *Store) HasCopy(key digest.Digest, size int64) bool {
	rec, err := s.GetIndex(key)
	if err != nil {
		return false
	}
	h, err := hexOf(digest.Digest(rec))
	if err != nil {
		return false
	}
	fi, err := os.Stat(framePath(s.dir, h))
	return err == nil && fi.Size() == size
}

// OpenCopy opens the copy of the size-byte file key names for reading,
// or returns an error wrapping fs.ErrNotExist when there is none. A copy
// is checked against its SHA-256 the first time this Store opens it, as
// frames are; a wrong one is removed and reported as missing.
func (s *Store) OpenCopy(key digest.Digest, size int64) (*os.File, error) {
	rec, err := s.GetIndex(key)
	if err != nil {
		return nil, err
	}
	d := digest.Digest(rec)
	h, err := hexOf(d)
	if err != nil {
		return nil, fmt.Errorf("cache: file copy %s: bad record: %w", key, fs.ErrNotExist)
	}
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
	if err == nil {
		err = s.checkCopy(h, f)
	}
	if err != nil {
		f.Close()
		if !errors.Is(err, fs.ErrNotExist) {
			s.st.corrupt.Add(1)
			s.log.Warn("cache: file copy damaged: removed", "op", "copy", "frame", d, "err", err)
			s.mu.Lock()
			s.rec.remove(h)
			s.mu.Unlock()
			os.Remove(framePath(s.dir, h))
		}
		return nil, fmt.Errorf("cache: file copy %s: %w", key, fs.ErrNotExist)
	}
	s.use(h, fi.Size(), fi.ModTime())
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
