package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	StatusExited  Status = "exited"
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
	Created     time.Time     `json:"created"`
	Command     []string      `json:"command"`             // the argv the container runs, for ps
	Anonymous   []string      `json:"anonymous,omitempty"` // its anonymous volumes, removed with it by --rm or rm -v
	Spec        Spec          `json:"spec"`
	State       State         `json:"-"`

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
}

// Dir is the container's state directory.
func (c *Container) Dir() string { return c.dir }

// UpperDir holds what the container changed, in overlayfs' format.
func (c *Container) UpperDir() string { return filepath.Join(c.dir, "upper") }

func (c *Container) workDir() string   { return filepath.Join(c.dir, "work") }
func (c *Container) lowerDir() string  { return filepath.Join(c.dir, "lower") }
func (c *Container) initDir() string   { return filepath.Join(c.dir, "init") }
func (c *Container) rootfsDir() string { return filepath.Join(c.dir, "rootfs") }
func (c *Container) lockPath() string  { return filepath.Join(c.dir, "lock") }

// ShortID is the first 12 hex digits of the ID, as docker shows it.
func (c *Container) ShortID() string { return c.ID[:12] }

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (r *Runtime) containersDir() string { return filepath.Join(r.cfg.Root, "containers") }

// create makes a new container's directory and record. The name must be
// free; an empty name gets a generated one, as docker gives.
func (r *Runtime) create(c *Container) error {
	if err := os.MkdirAll(r.containersDir(), 0o700); err != nil {
		return err
	}
	all, err := r.List()
	if err != nil {
		return err
	}
	taken := func(name string) *Container {
		for _, o := range all {
			if o.Name == name {
				return o
			}
		}
		return nil
	}
	if c.Name == "" {
		for c.Name = randomName(); taken(c.Name) != nil; c.Name = randomName() {
		}
	} else if !validName.MatchString(c.Name) {
		return fmt.Errorf("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", c.Name)
	} else if o := taken(c.Name); o != nil {
		return fmt.Errorf("%w: the container name %q is already in use by container %q; remove (or rename) that container to be able to reuse that name", ErrConflict, c.Name, o.ID)
	}
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	c.ID = hex.EncodeToString(id[:])
	c.dir = filepath.Join(r.containersDir(), c.ID)
	c.Created = time.Now().UTC()
	c.State = State{Status: StatusCreated}
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		return fmt.Errorf("create container %s: %w", c.ID, err)
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
	if c.State.Status == StatusRunning && !c.locked() {
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
// it; the kernel drops it when the process dies, which is how a dead
// supervisor is told from a running container.
func (c *Container) lock() (*os.File, error) {
	f, err := os.OpenFile(c.lockPath(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: container %s is in use by another lazyrun process", ErrConflict, c.Name)
		}
		return nil, err
	}
	return f, nil
}

func (c *Container) locked() bool {
	f, err := c.lock()
	if err != nil {
		return errors.Is(err, ErrConflict)
	}
	f.Close()
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
