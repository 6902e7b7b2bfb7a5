package cache

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

// PutIndex stores data as the index blob keyed by d (e.g. the encoded index
// of layer d), atomically: a reader sees the old blob, none, or all of data.
// The blob is not verified against d; d only names it.
func (s *Store) PutIndex(d digest.Digest, data []byte) error {
	h, err := hexOf(d)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(s.dir, indexDir, indexAlgo), indexPath(s.dir, h), data); err != nil {
		return fmt.Errorf("cache: put index %s: %w", d, err)
	}
	return nil
}

// HasIndex reports whether the store holds an index blob keyed d, without
// reading it.
func (s *Store) HasIndex(d digest.Digest) bool {
	h, err := hexOf(d)
	if err != nil {
		return false
	}
	_, err = os.Stat(indexPath(s.dir, h))
	return err == nil
}

// GetIndex returns the index blob keyed by d. The error wraps
// fs.ErrNotExist when there is none.
func (s *Store) GetIndex(d digest.Digest) ([]byte, error) {
	h, err := hexOf(d)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(indexPath(s.dir, h))
	if err != nil {
		return nil, fmt.Errorf("cache: get index %s: %w", d, err)
	}
	return b, nil
}
