package bench

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The file-system section's data: generated once, deterministically, and
// kept in the test cache (LAZYFS_TEST_CACHE, default /var/cache/lazyfs-test)
// beside the Debian roots, never in git. Change fsRecipe when what is
// generated changes.
const (
	fsRecipe    = "lazybench-fsdata-1"
	fsBigSize   = 1 << 30 // /data/big
	fsTreeFiles = 50000   // /data/tree/dNNN/fNNNNN, 100 to a directory
	fsTreeMax   = 2048    // a tree file holds 0..fsTreeMax bytes
	fsTarFiles  = 20000   // src.tar: src/pNN/qN/fNNNNN, 100 to a directory
	fsTarMax    = 20480   // a source file holds 0..fsTarMax bytes (≈ 200 MB in all)
	fsRandReads = 20000   // 4 KiB reads of /data/big
)

// fsData is the extra layer of the fs image and the tarball the untar
// measurement extracts.
type fsData struct {
	Dir   string         // the cache entry
	Root  string         // Dir/root: the layer's tree (data/big, data/tree/…), a native run's upper lower directory
	Tar   string         // Dir/src.tar, bind-mounted into every mode
	Layer testutil.Layer // Dir/layer.tar.gz: the tree as one gzip layer
	Info  fsDataInfo
}

// fsDataInfo is Dir/info.json.
type fsDataInfo struct {
	Recipe              string
	BigBytes            int64
	TreeFiles           int
	TreeBytes           int64
	TarFiles            int
	TarBytes            int64 // content bytes in the tarball
	TarSize             int64 // the tarball's size
	LayerDigest, DiffID string
	LayerSize           int64
	BuiltSeconds        float64
	Built               time.Time
	Contents            string // how the bytes were generated
}

// fsSize is the size of file i of a set whose sizes are 0..max.
func fsSize(set string, i, max int) int64 {
	h := sha256.Sum256([]byte(set + strconv.Itoa(i)))
	return int64((uint64(h[0])<<16 | uint64(h[1])<<8 | uint64(h[2])) % uint64(max+1))
}

// loadFSData returns the cached data, generating it (about a minute) when
// it is not there. A file lock makes parallel runs generate it once.
func loadFSData(ctx context.Context, logf func(string, ...any)) (*fsData, error) {
	cache := os.Getenv(testutil.TestCacheEnv)
	if cache == "" {
		cache = testutil.DefaultTestCache
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	d := &fsData{Dir: filepath.Join(cache, fsRecipe)}
	d.Root, d.Tar = filepath.Join(d.Dir, "root"), filepath.Join(d.Dir, "src.tar")
	if _, err := os.Stat(d.Dir); err != nil {
		lf, err := os.OpenFile(d.Dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		defer lf.Close() // unlocks
		if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
			return nil, fmt.Errorf("lock %s: %w", lf.Name(), err)
		}
		if _, err := os.Stat(d.Dir); err != nil {
			logf("fs data: generating %s (1 GiB file, %d small files, a %d-file tarball)", d.Dir, fsTreeFiles, fsTarFiles)
			if err := generateFSData(ctx, logf, d.Dir); err != nil {
				return nil, fmt.Errorf("fs data %s: %w", d.Dir, err)
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(d.Dir, "info.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &d.Info); err != nil {
		return nil, fmt.Errorf("%s/info.json: %w (remove %s)", d.Dir, err, d.Dir)
	}
	d.Layer = testutil.Layer{Path: filepath.Join(d.Dir, "layer.tar.gz"), MediaType: types.OCILayer, Size: d.Info.LayerSize}
	if d.Layer.Digest, err = digest.Parse(d.Info.LayerDigest); err == nil {
		d.Layer.DiffID, err = digest.Parse(d.Info.DiffID)
	}
	if err != nil {
		return nil, fmt.Errorf("%s/info.json: %w (remove %s)", d.Dir, err, d.Dir)
	}
	return d, nil
}

// generateFSData writes the tree, the tarball and the layer into a
// temporary directory beside final and renames it to final.
func generateFSData(ctx context.Context, logf func(string, ...any), final string) error {
	start := time.Now()
	tmp := final + ".tmp-" + strconv.Itoa(os.Getpid())
	stale, _ := filepath.Glob(final + ".tmp-*")
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	info := fsDataInfo{Recipe: fsRecipe, BigBytes: fsBigSize, TreeFiles: fsTreeFiles, TarFiles: fsTarFiles,
		Contents: "testutil.PatternAt contents (4 bits of entropy a byte, half the 64-byte lines repeated: gzip ≈ 0.28); sizes from SHA-256 of the file number"}
	root := filepath.Join(tmp, "root")
	tree := filepath.Join(root, "data", "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if err := writePattern(filepath.Join(root, "data", "big"), 1, fsBigSize); err != nil {
		return err
	}
	for i := range fsTreeFiles {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		dir := filepath.Join(tree, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		}
		n := fsSize("tree", i, fsTreeMax)
		info.TreeBytes += n
		if err := writePattern(filepath.Join(dir, fmt.Sprintf("f%05d", i)), int64(1000+i), n); err != nil {
			return err
		}
	}
	var err error
	if info.TarBytes, info.TarSize, err = writeSourceTar(filepath.Join(tmp, "src.tar")); err != nil {
		return err
	}
	err = withTB(ctx, logf, func(t testing.TB) {
		l := testutil.WriteLayerDir(t, root, types.OCILayer)
		if err := os.Rename(l.Path, filepath.Join(tmp, "layer.tar.gz")); err != nil {
			t.Fatal(err)
		}
		info.LayerDigest, info.DiffID, info.LayerSize = l.Digest.String(), l.DiffID.String(), l.Size
	})
	if err != nil {
		return err
	}
	info.Built, info.BuiltSeconds = start.UTC(), time.Since(start).Seconds()
	b, err := json.MarshalIndent(info, "", "\t")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "info.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	logf("fs data: generated in %v: layer %s, %s", time.Since(start).Round(time.Second), info.LayerDigest, mb(info.LayerSize))
	return os.Rename(tmp, final)
}

func writePattern(p string, seed, size int64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, testutil.PatternReader(seed, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeSourceTar writes a source-tree-like tarball: fsTarFiles files in
// 200 directories, owned by root, fixed mtimes.
func writeSourceTar(p string) (content, size int64, err error) {
	f, err := os.Create(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	mtime := testutil.DefaultModTime
	for i := range fsTarFiles {
		dir := fmt.Sprintf("src/p%02d/q%d/", i/1000, i/100%10)
		if i%1000 == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("src/p%02d/", i/1000), Mode: 0o755, ModTime: mtime}); err != nil {
				return 0, 0, err
			}
		}
		if i%100 == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}); err != nil {
				return 0, 0, err
			}
		}
		n := fsSize("src", i, fsTarMax)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%05d.c", dir, i), Mode: 0o644, Size: n, ModTime: mtime}); err != nil {
			return 0, 0, err
		}
		if _, err := io.Copy(tw, testutil.PatternReader(int64(100000+i), n)); err != nil {
			return 0, 0, err
		}
		content += n
	}
	if err := tw.Close(); err != nil {
		return 0, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	return content, fi.Size(), f.Sync()
}
