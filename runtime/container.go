package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ErrNoSuchContainer is wrapped when a name or ID matches no container.
var ErrNoSuchContainer = errors.New("no such container")

// ErrConflict is wrapped when a name is taken, or a container is in a state
// that forbids the operation (removing a running one, say).
var ErrConflict = errors.New("conflict")

// Status is where a container is in its life, in docker's words.
type Status string

const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	// StatusRestarting is a container whose program exited and whose
	// supervisor waits to start it again (--restart).
	StatusRestarting Status = "restarting"
	StatusExited     Status = "exited"
	// StatusDead is a container whose supervising lazyrun process went away
	// without recording an exit: its mounts and processes may linger until
	// `lazyrun rm -f`.
	StatusDead Status = "dead"
)

// Container is one container's record: what it was created from (config.json)
// and where it is now (state.json), under ROOT/containers/ID.
type Container struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Image       string        `json:"image"` // the reference as the user gave it
	ImageDigest digest.Digest `json:"imageDigest"`
	// Rootfs is the directory the container runs on instead of an image
	// (run --rootfs): the lower layer of its overlay, not written to.
	Rootfs string `json:"rootfs,omitempty"`
	// Lower is what the image was mounted from at the last start:
	// LowerUnpacked or LowerLazy ("" with Rootfs). It is written with
	// config.json at each start.
	Lower string `json:"lower,omitempty"`
	// ProfileLooked says that Create looked for the image's prefetch
	// profile, and kept it in prefetch.json if there was one: the
	// supervisor need not look again.
	ProfileLooked bool      `json:"profileLooked,omitempty"`
	Created       time.Time `json:"created"`
	Command       []string  `json:"command"`             // the argv the container runs, for ps
	Anonymous     []string  `json:"anonymous,omitempty"` // its anonymous volumes, removed with it by --rm or rm -v
	Spec          Spec      `json:"spec"`
	State         State     `json:"-"`

	dir string
}

// State is the part of a container's record that changes as it runs.
type State struct {
	Status     Status    `json:"status"`
	Pid        int       `json:"pid,omitempty"` // the container's init, in the host's PID namespace
	ExitCode   int       `json:"exitCode"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	Error      string    `json:"error,omitempty"`
	// SupervisorPid is the process that supervises the container while its
	// lock is held; rm -f kills it if it stops answering.
	SupervisorPid int `json:"supervisorPid,omitempty"`
	// RestartCount is how often the supervisor started the program again
	// after it exited (--restart).
	RestartCount int `json:"restartCount,omitempty"`
	// Ports are the published ports as bound, random host ports resolved,
	// while the supervisor serves them (running or restarting).
	Ports []PublishedPort `json:"ports,omitempty"`
}

// Alive reports whether the container has a supervisor: it is running, or
// waiting to be restarted.
func (s *State) Alive() bool { return s.Status == StatusRunning || s.Status == StatusRestarting }

// Dir is the container's state directory.
func (c *Container) Dir() string { return c.dir }

// UpperDir holds what the container changed, in overlayfs' format.
func (c *Container) UpperDir() string { return filepath.Join(c.dir, "upper") }

func (c *Container) workDir() string   { return filepath.Join(c.dir, "work") }
func (c *Container) lowerDir() string  { return filepath.Join(c.dir, "lower") }
func (c *Container) initDir() string   { return filepath.Join(c.dir, "init") }
func (c *Container) rootfsDir() string { return filepath.Join(c.dir, "rootfs") }
func (c *Container) lockPath() string  { return filepath.Join(c.dir, "lock") }

// profilePath is where Create keeps the image's prefetch profile.
func (c *Container) profilePath() string { return filepath.Join(c.dir, "prefetch.json") }

// socketName is the supervisor's control socket in the container's
// directory; see control.go.
const socketName = "supervisor.sock"

// SupervisorLogPath is the supervisor's own log (its standard error).
func (c *Container) SupervisorLogPath() string { return filepath.Join(c.dir, "supervisor.log") }

// ShortID is the first 12 hex digits of the ID, as docker shows it.
func (c *Container) ShortID() string { return c.ID[:12] }

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (r *Runtime) containersDir() string { return filepath.Join(r.cfg.Root, "containers") }

// namesDir holds one symlink per container name, NAME -> ID (ROOT/names), so that two
// processes creating containers at once cannot take the same name.
func (r *Runtime) namesDir() string { return filepath.Join(r.cfg.Root, "names") }

// reserveName takes name for id. It reports false when another container
// holds it; a reservation whose container is gone is taken over.
func (r *Runtime) reserveName(name, id string) (bool, error) {
	link := filepath.Join(r.namesDir(), name)
	for range 2 {
		err := os.Symlink(id, link)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("reserve container name %s: %w", name, err)
		}
		if stale, err := r.dropStaleName(link); err != nil || !stale {
			return false, err
		}
	}
	return false, nil
}

// dropStaleName removes the reservation link if its container is gone
// (removed by hand, or its creation failed), and reports whether the name
// may be free now. Checking and removing happen under a lock of the names
// directory, so two processes cannot both judge one link stale and the
// second remove the link the first made meanwhile.
func (r *Runtime) dropStaleName(link string) (bool, error) {
	d, err := os.Open(r.namesDir())
	if err != nil {
		return false, err
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return false, err
	}
	owner, err := os.Readlink(link)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(filepath.Join(r.containersDir(), owner)); err == nil || len(owner) != 64 {
		return false, nil
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

func (r *Runtime) releaseName(c *Container) {
	link := filepath.Join(r.namesDir(), c.Name)
	if owner, err := os.Readlink(link); err == nil && owner == c.ID {
		os.Remove(link)
	}
}

// create makes a new container's directory and record. The name must be
// free; an empty name gets a generated one, as docker gives.
func (r *Runtime) create(c *Container) error {
	if c.Name != "" && !validName.MatchString(c.Name) {
		return fmt.Errorf("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", c.Name)
	}
	for _, d := range []string{r.containersDir(), r.namesDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	c.ID = hex.EncodeToString(id[:])
	c.dir = filepath.Join(r.containersDir(), c.ID)
	c.Created = time.Now().UTC()
	c.State = State{Status: StatusCreated}
	// The directory comes first: a name reservation whose container has no
	// directory is stale. Until config.json is written, List skips it.
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		return fmt.Errorf("create container %s: %w", c.ID, err)
	}
	if err := r.nameContainer(c); err != nil {
		os.RemoveAll(c.dir)
		return err
	}
	// The upper's root is the container's /, which every user must traverse.
	for _, d := range []string{c.UpperDir(), c.workDir(), c.lowerDir(), c.rootfsDir()} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("create container %s: %w", c.ID, err)
		}
	}
	if err := writeJSON(filepath.Join(c.dir, "config.json"), c); err != nil {
		return err
	}
	return c.saveState()
}

// nameContainer reserves c.Name for c, or a generated name when it is
// empty, as docker gives.
func (r *Runtime) nameContainer(c *Container) error {
	all, err := r.List()
	if err != nil {
		return err
	}
	// Containers made before names were reserved are only in the list.
	taken := func(name string) *Container {
		for _, o := range all {
			if o.Name == name {
				return o
			}
		}
		return nil
	}
	reserve := func(name string) (bool, error) {
		if taken(name) != nil {
			return false, nil
		}
		return r.reserveName(name, c.ID)
	}
	if c.Name == "" {
		for i := 0; ; i++ {
			c.Name = randomName()
			if i >= 10 {
				c.Name += strconv.Itoa(i) // as docker's generator does when it keeps colliding
			}
			ok, err := reserve(c.Name)
			if err != nil {
				return err
			}
			if ok {
				return nil
			}
		}
	}
	ok, err := reserve(c.Name)
	if err != nil || ok {
		return err
	}
	owner := ""
	if o := taken(c.Name); o != nil {
		owner = o.ID
	} else if l, err := os.Readlink(filepath.Join(r.namesDir(), c.Name)); err == nil {
		owner = l
	}
	return fmt.Errorf("%w: the container name %q is already in use by container %q; remove (or rename) that container to be able to reuse that name", ErrConflict, c.Name, owner)
}

func (c *Container) saveState() error {
	return writeJSON(filepath.Join(c.dir, "state.json"), &c.State)
}

// List returns every container under the root, newest first.
func (r *Runtime) List() ([]*Container, error) {
	ents, err := os.ReadDir(r.containersDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Container
	for _, e := range ents {
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		c, err := r.load(e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // being created, or removed
		}
		if err != nil {
			r.log.Warn("skipping unreadable container record", "id", e.Name(), "err", err)
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Container) int { return b.Created.Compare(a.Created) })
	return out, nil
}

func (r *Runtime) load(id string) (*Container, error) {
	c := &Container{dir: filepath.Join(r.containersDir(), id)}
	if err := readJSON(filepath.Join(c.dir, "config.json"), c); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(c.dir, "state.json"), &c.State); err != nil {
		return nil, err
	}
	if c.ID != id {
		return nil, fmt.Errorf("container %s: config.json names %q", id, c.ID)
	}
	// A running container's supervisor holds its lock; if nobody does, the
	// supervisor died without writing an exit.
	if c.State.Alive() && !c.locked() {
		c.State.Status = StatusDead
	}
	return c, nil
}

// Lookup finds a container by name, full ID or unique ID prefix, as docker does.
func (r *Runtime) Lookup(nameOrID string) (*Container, error) {
	all, err := r.List()
	if err != nil {
		return nil, err
	}
	var byPrefix []*Container
	for _, c := range all {
		if c.ID == nameOrID || c.Name == nameOrID {
			return c, nil
		}
		if nameOrID != "" && strings.HasPrefix(c.ID, nameOrID) {
			byPrefix = append(byPrefix, c)
		}
	}
	switch len(byPrefix) {
	case 1:
		return byPrefix[0], nil
	case 0:
		return nil, fmt.Errorf("%w: %s", ErrNoSuchContainer, nameOrID)
	}
	return nil, fmt.Errorf("multiple containers match %q: give more of the ID", nameOrID)
}

// lock takes the container's lock for as long as this process supervises
// (or commits, or removes) it; the kernel drops it when the process dies,
// which is how a dead supervisor is told from a running container. Another
// process's probe (locked) holds it for an instant: lock tries again for a
// second before it reports the container in use.
func (c *Container) lock() (*os.File, error) {
	f, err := os.OpenFile(c.lockPath(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%w: container %s is in use by another lazyrun process", ErrConflict, c.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// locked reports whether some process holds the container's lock. The
// probe is a shared lock, so probes do not disturb one another.
func (c *Container) locked() bool {
	f, err := os.Open(c.lockPath())
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	return false
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// randomName makes a name in docker's adjective_surname shape.
func randomName() string {
	adjectives := []string{"agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle",
		"happy", "keen", "lucid", "nimble", "patient", "quiet", "sharp", "steady", "swift", "vigilant", "wise", "zealous"}
	names := []string{"allen", "babbage", "curie", "dijkstra", "engelbart", "feynman", "goldberg", "hopper",
		"knuth", "lamport", "liskov", "lovelace", "mccarthy", "noether", "pike", "ritchie", "shannon", "thompson", "turing", "wirth"}
	pick := func(s []string) string {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(s))))
		if err != nil {
			return s[0]
		}
		return s[n.Int64()]
	}
	return pick(adjectives) + "_" + pick(names)
}
