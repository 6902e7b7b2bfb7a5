package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RunLock is the file whose lock a benchmark holds while it runs. The
// network namespace, the veth pair's addresses and the default work
// directory have fixed names, and a run starts by removing what a killed
// run left of them: two runs at once would take each other's registry and
// mounts away. So a run waits here for the one before it.
const RunLock = "/run/lock/lazybench.lock"

// lockRun takes the lock of the file at path (RunLock), waiting (and
// saying so through logf, once a minute) while another holds it, until ctx
// ends. The returned function releases it.
func lockRun(ctx context.Context, path string, logf func(string, ...any)) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run lock: %w", err)
	}
	var said time.Time
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("run lock %s: %w", path, err)
		}
		if time.Since(said) >= time.Minute {
			b, _ := os.ReadFile(path)
			logf("another benchmark is running (%s: %s); waiting for it to end", path, strings.TrimSpace(string(b)))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("run lock %s: %w", path, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	// Who holds it, for the next one's message.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+", since "+time.Now().Format(time.RFC3339)+"\n"), 0)
	}
	return func() { f.Close() }, nil // closing releases the lock
}
