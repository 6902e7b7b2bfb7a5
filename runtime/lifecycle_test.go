package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syscall.Signal
	}{
		{"TERM", syscall.SIGTERM},
		{"SIGTERM", syscall.SIGTERM},
		{"sigkill", syscall.SIGKILL},
		{"hup", syscall.SIGHUP},
		{"9", syscall.SIGKILL},
		{"RTMIN", 34},
		{"SIGRTMIN+3", 37},
		{"RTMAX", 64},
		{"RTMAX-1", 63},
	} {
		if got, err := ParseSignal(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "NOPE", "0", "65", "-1", "RTMIN-1", "RTMAX+1", "RTMIN+31", "RTMIN+x"} {
		if got, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) = %v, want an error", bad, got)
		}
	}
}

func TestRestartPolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RestartPolicy
		// restarts after exit code code having restarted n times
		code, n int
		again   bool
	}{
		{"no", RestartPolicy{Name: "no"}, 1, 0, false},
		{"", RestartPolicy{}, 1, 0, false},
		{"always", RestartPolicy{Name: "always"}, 0, 100, true},
		{"unless-stopped", RestartPolicy{Name: "unless-stopped"}, 0, 0, true},
		{"on-failure", RestartPolicy{Name: "on-failure"}, 1, 100, true},
		{"on-failure", RestartPolicy{Name: "on-failure"}, 0, 0, false},
		{"on-failure:2", RestartPolicy{Name: "on-failure", MaximumRetryCount: 2}, 1, 1, true},
		{"on-failure:2", RestartPolicy{Name: "on-failure", MaximumRetryCount: 2}, 1, 2, false},
	} {
		got, err := ParseRestartPolicy(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRestartPolicy(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if again := got.restarts(tc.code, tc.n); again != tc.again {
			t.Errorf("%q.restarts(%d, %d) = %v, want %v", tc.in, tc.code, tc.n, again, tc.again)
		}
	}
	for _, bad := range []string{"sometimes", "always:3", "no:1", "on-failure:-1", "on-failure:x"} {
		if _, err := ParseRestartPolicy(bad); err == nil {
			t.Errorf("ParseRestartPolicy(%q) succeeded", bad)
		}
	}
}

// Containers created at once under one name: one gets it.
func TestCreateNameTakenOnce(t *testing.T) {
	r := New(Config{Root: t.TempDir()})
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = r.create(&Container{Name: "web", Image: "img"}) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrConflict):
			t.Errorf("create: %v, want a conflict", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d containers got the name web, want 1", ok)
	}
	// Generated names are unique too.
	for range n {
		wg.Go(func() {
			if err := r.create(&Container{Image: "img"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	cs, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range cs {
		if seen[c.Name] {
			t.Errorf("name %s given twice", c.Name)
		}
		seen[c.Name] = true
	}
	if len(cs) != n+1 {
		t.Errorf("%d containers, want %d", len(cs), n+1)
	}
	// Removed, the name is free again; a stale reservation is taken over.
	web, err := r.Lookup("web")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(web.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := r.create(&Container{Name: "web", Image: "img"}); err != nil {
		t.Errorf("create after the owner's directory was removed: %v", err)
	}
	if _, err := os.Readlink(filepath.Join(r.namesDir(), "web")); err != nil {
		t.Errorf("no reservation for web: %v", err)
	}
}

func TestLockedProbe(t *testing.T) {
	_, c := testContainer(t)
	if c.locked() {
		t.Fatal("a new container is locked")
	}
	f, err := c.lock()
	if err != nil {
		t.Fatal(err)
	}
	if !c.locked() {
		t.Error("locked() = false while the lock is held")
	}
	if _, err := c.lock(); !errors.Is(err, ErrConflict) {
		t.Errorf("a second lock = %v, want a conflict", err)
	}
	f.Close()
	if c.locked() {
		t.Error("locked() = true after release")
	}
}
