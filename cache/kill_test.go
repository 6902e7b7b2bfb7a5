package cache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The child mode of the test binary: TestKillDuringFrameWrites runs it to
// have a process it can SIGKILL in the middle of storing frames.
const (
	childEnv      = "LAZYFS_CACHE_CHILD"       // "1": run childStoreFrames instead of the tests
	childDirEnv   = "LAZYFS_CACHE_CHILD_DIR"   // the cache root
	childFirstEnv = "LAZYFS_CACHE_CHILD_FIRST" // the first frame number to store
	childNamedEnv = "LAZYFS_CACHE_CHILD_NAMED" // "1": named temp files only (the fallback path)
)

// Frames of the kill test: frame i is killFrame(i), of 64 KiB to 1 MiB.
const (
	killWriters = 4
	killBudget  = 8 << 20 // MaxDiskBytes of the children and of the Store that checks the root after
)

func killFrame(i int) ([]byte, digest.Digest) {
	n := 64<<10 + (i*7919)%(15*64<<10)
	return testFrame(uint64(90_000+i), n)
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childStoreFrames())
	}
	os.Exit(m.Run())
}

// childStoreFrames stores frames first, first+1, … through Frame with
// killWriters goroutines until it is killed, writing "begin N" before and
// "stored N" after each to stdout.
func childStoreFrames() int {
	dir := os.Getenv(childDirEnv)
	first, err := strconv.Atoi(os.Getenv(childFirstEnv))
	if dir == "" || err != nil {
		fmt.Fprintf(os.Stderr, "child: %s and %s must be set\n", childDirEnv, childFirstEnv)
		return 2
	}
	forceNamedTemp = os.Getenv(childNamedEnv) == "1"
	s, err := Open(Config{Dir: dir, MemoryBytes: -1, MaxDiskBytes: killBudget})
	if err != nil {
		fmt.Printf("error open: %v\n", err)
		return 1
	}
	var (
		next atomic.Int64
		mu   sync.Mutex // guards stdout lines
	)
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		mu.Unlock()
	}
	next.Store(int64(first))
	var wg sync.WaitGroup
	for range killWriters {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				b, d := killFrame(i)
				say("begin %d", i)
				if _, err := s.Frame(context.Background(), d, int64(len(b)), func(context.Context) ([]byte, error) { return b, nil }); err != nil {
					say("error frame %d: %v", i, err)
					return
				}
				say("stored %d", i)
			}
		})
	}
	wg.Wait()
	return 1
}

// TestKillDuringFrameWrites kills a process storing frames (four at a time,
// under a disk budget, so evictions run too) with SIGKILL, several times,
// half of them on the named-temp-file path, then checks the root with a
// fresh Store: no frame file whose bytes do not match its name, leftover
// temp files neither served nor counted, removed once stale, and every
// frame served right, from disk or refetched through its load function.
func TestKillDuringFrameWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary 20 times")
	}
	const kills = 20
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(4, 2))
	var inFlight, storedTotal, highest int
	var tempsBefore int64
	for r := range kills {
		named := r%2 == 1
		first := r * 5 // each child stores again some frames an earlier one stored
		target := 3 + rng.IntN(10)
		begun, stored, last := killChild(t, dir, first, named, target)
		inFlight += begun - stored
		storedTotal += stored
		highest = max(highest, last)
		u, err := Usage(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !named && u.TempFiles != tempsBefore {
			t.Errorf("kill %d (unnamed temp files): %d temp files left, want none", r, u.TempFiles-tempsBefore)
		}
		tempsBefore = u.TempFiles
	}

	// Every frame file matches its name; temp files are the only leftovers.
	var bad, frames, temps int
	var tempPaths []string
	err := filepath.WalkDir(filepath.Join(dir, framesDir), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			temps++
			tempPaths = append(tempPaths, p)
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		frames++
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != name {
			bad++
			t.Errorf("frame file %s holds %d bytes that do not match its name", p, len(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	s, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1, MaxDiskBytes: killBudget})
	u, err := Usage(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.DiskBytes > killBudget || st.DiskBytes != u.FrameBytes || u.TempFiles != int64(temps) {
		t.Errorf("after Open: Stats.DiskBytes = %d, Usage = %+v; want DiskBytes = FrameBytes <= %d and %d temp files outside it",
			st.DiskBytes, u, killBudget, temps)
	}

	// The frames on disk are served from there, verified; the others are
	// refetched. Those on disk are read first, so that no refetch evicts
	// one before it is read.
	r, err := scan(dir, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[digest.Digest]bool{}
	for _, f := range r.frames {
		onDisk[digest.Digest("sha256:"+f.hex)] = true
	}
	var refetched, fromDisk, served int
	for pass := range 2 {
		for i := 0; i <= highest; i++ {
			want, d := killFrame(i)
			if onDisk[d] != (pass == 0) {
				continue
			}
			l := &loader{b: want}
			got, err := s.Frame(t.Context(), d, int64(len(want)), l.load)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Frame(%d) = %d bytes, %v; want the frame", i, len(got), err)
			}
			served++
			if l.calls.Load() > 0 {
				refetched++
			} else {
				fromDisk++
			}
		}
	}
	st = s.Stats()
	if st.Corrupt != 0 || fromDisk != len(r.frames) || st.DiskHits != int64(fromDisk) || st.DiskBytes > killBudget {
		t.Errorf("Stats after reading every frame = %+v, %d from disk; want 0 corrupt, %d disk hits, <= %d bytes",
			st, fromDisk, len(r.frames), killBudget)
	}

	// Temp files a killed process left are removed once stale.
	old := time.Now().Add(-2 * staleTemp)
	for _, p := range tempPaths {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Prune(t.Context(), PruneOptions{KeepBytes: killBudget})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := Usage(dir); err != nil || u.TempFiles != 0 || res.TempFiles != int64(temps) {
		t.Errorf("after Prune of stale temps: Usage = %+v, %v, PruneResult = %+v; want no temp files, %d removed", u, err, res, temps)
	}
	t.Logf("%d kills (half on the named-temp path): %d frames stored, %d being written when killed; "+
		"%d frame files left, %d bad; %d temp files left (all from named-temp rounds); "+
		"fresh Store: %d frames served, %d bad served, %d from disk, %d refetched; %d temps removed once stale",
		kills, storedTotal, inFlight, frames, bad, temps, served, 0, fromDisk, refetched, res.TempFiles)
}

// killChild runs childStoreFrames on dir from frame first, kills it with
// SIGKILL once it has reported target frames stored, and returns how many
// frames it had begun and stored when it died and the highest frame it began.
func killChild(t *testing.T, dir string, first int, named bool, target int) (begun, stored, highest int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childDirEnv+"="+dir, childFirstEnv+"="+strconv.Itoa(first))
	if named {
		cmd.Env = append(cmd.Env, childNamedEnv+"=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		verb, num, _ := strings.Cut(line, " ")
		n, _ := strconv.Atoi(num)
		switch verb {
		case "begin":
			begun++
			highest = max(highest, n)
		case "stored":
			stored++
		default:
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %s", line)
		}
		if stored == target && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true // lines written before it died are still read
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before it was killed: %v; stderr: %s", err, stderr.String())
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ProcessState.String() != "signal: killed" {
		t.Fatalf("child: %v, want killed; stderr: %s", err, stderr.String())
	}
	return begun, stored, highest
}
