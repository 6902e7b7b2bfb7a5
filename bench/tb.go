package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// tb lets the benchmark use internal/testutil's image builders (DebianRoot,
// DebianLayers, PushImageInfo), which take a testing.TB, outside a test.
// Fatal and Skip panic with a tbStop that withTB recovers into an error;
// Log goes to the benchmark's log. The embedded interface is nil: it only
// supplies testing.TB's unexported method, and every exported method is
// defined here.
type tb struct {
	testing.TB

	ctx  context.Context
	logf func(format string, args ...any)

	mu       sync.Mutex // guards cleanups and failed
	cleanups []func()
	failed   bool
	tmp      []string
}

type tbStop struct {
	msg  string
	skip bool
}

// withTB runs fn with a testing.TB whose Fatal and Skip end fn with an
// error, and runs its cleanups before returning.
func withTB(ctx context.Context, logf func(string, ...any), fn func(t testing.TB)) (err error) {
	t := &tb{ctx: ctx, logf: logf}
	defer func() {
		t.runCleanups()
		if r := recover(); r != nil {
			s, ok := r.(tbStop)
			if !ok {
				panic(r)
			}
			if s.skip {
				err = fmt.Errorf("skipped: %s", s.msg)
			} else {
				err = fmt.Errorf("%s", s.msg)
			}
		}
	}()
	fn(t)
	if t.Failed() {
		return fmt.Errorf("failed (see the log)")
	}
	return nil
}

func (t *tb) runCleanups() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	tmp := t.tmp
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	for _, d := range tmp {
		os.RemoveAll(d)
	}
}

func (t *tb) ArtifactDir() string    { return t.TempDir() }
func (t *tb) Attr(key, value string) {}
func (t *tb) Chdir(dir string)       { t.Fatalf("Chdir not supported outside tests") }
func (t *tb) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}
func (t *tb) Context() context.Context { return t.ctx }
func (t *tb) Error(args ...any)        { t.Log(args...); t.Fail() }
func (t *tb) Errorf(format string, args ...any) {
	t.Logf(format, args...)
	t.Fail()
}
func (t *tb) Fail() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}
func (t *tb) FailNow() { t.Fail(); panic(tbStop{msg: "FailNow"}) }
func (t *tb) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *tb) Fatal(args ...any) { t.Fail(); panic(tbStop{msg: fmt.Sprint(args...)}) }
func (t *tb) Fatalf(format string, args ...any) {
	t.Fail()
	panic(tbStop{msg: fmt.Sprintf(format, args...)})
}
func (t *tb) Helper()                         {}
func (t *tb) Log(args ...any)                 { t.logf("%s", fmt.Sprint(args...)) }
func (t *tb) Logf(format string, args ...any) { t.logf(format, args...) }
func (t *tb) Name() string                    { return "lazybench" }
func (t *tb) Output() io.Writer               { return logWriter{t.logf} }
func (t *tb) Setenv(key, value string)        { t.Fatalf("Setenv not supported outside tests") }
func (t *tb) Skip(args ...any)                { panic(tbStop{msg: fmt.Sprint(args...), skip: true}) }
func (t *tb) SkipNow()                        { panic(tbStop{msg: "SkipNow", skip: true}) }
func (t *tb) Skipf(format string, args ...any) {
	panic(tbStop{msg: fmt.Sprintf(format, args...), skip: true})
}
func (t *tb) Skipped() bool { return false }
func (t *tb) TempDir() string {
	d, err := os.MkdirTemp("", "lazybench-tb-")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	t.mu.Lock()
	t.tmp = append(t.tmp, d)
	t.mu.Unlock()
	return d
}

type logWriter struct{ logf func(string, ...any) }

func (w logWriter) Write(p []byte) (int, error) {
	w.logf("%s", p)
	return len(p), nil
}
