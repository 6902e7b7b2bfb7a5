package spec

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ErrInvalidVolume is wrapped by every -v that docker would refuse.
var ErrInvalidVolume = errors.New("invalid volume specification")

// MountType says what a Mount's Source is.
type MountType string

const (
	// Bind mounts the host path Source. For -v, docker creates Source as a
	// directory when it does not exist.
	Bind MountType = "bind"
	// Volume mounts the named volume Source.
	Volume MountType = "volume"
)

// Mount is one parsed -v with a source: a bind mount or a named volume.
// A -v with only a container path is an anonymous volume, not a Mount.
type Mount struct {
	Type     MountType
	Source   string // absolute, cleaned host path (Bind), or volume name (Volume)
	Target   string // absolute, cleaned container path, never "/"
	ReadOnly bool
	// Propagation is the bind's propagation mode, "rprivate" unless the
	// options name another; empty for volumes.
	Propagation string
	// NoCopy is the "nocopy" option: do not copy the image's files at
	// Target into a new volume.
	NoCopy bool
	// Options is the third field of the -v as given ("ro,z", say); the
	// SELinux (z, Z) and consistency (consistent, cached, delegated) options
	// are accepted and have no other effect, as on a docker engine without
	// SELinux.
	Options string
}

// String returns the mount as a -v value that ParseVolume reads back to it.
func (m Mount) String() string {
	s := m.Source + ":" + m.Target
	if m.Options != "" {
		s += ":" + m.Options
	}
	return s
}

var (
	rwModes          = []string{"rw", "ro"}
	labelModes       = []string{"z", "Z"}
	propagationModes = []string{"private", "rprivate", "slave", "rslave", "shared", "rshared"}
	copyModes        = []string{"nocopy"}
	consistencyModes = []string{"consistent", "cached", "delegated"}
	modeGroups       = [][]string{rwModes, labelModes, propagationModes, copyModes, consistencyModes}
)

// validMode reports whether opts is a comma-separated list of -v options
// with at most one from each group, as docker's linux parser wants.
func validMode(opts string) bool {
	if opts == "" {
		return true
	}
	var count [5]int
	for o := range strings.SplitSeq(opts, ",") {
		i := slices.IndexFunc(modeGroups, func(g []string) bool { return slices.Contains(g, o) })
		if i < 0 {
			return false
		}
		count[i]++
	}
	for _, c := range count {
		if c > 1 {
			return false
		}
	}
	return true
}

// validVolumeName is the local volume driver's rule for names.
var validVolumeName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// ParseVolume parses a -v value, [SOURCE:]TARGET[:OPTIONS], as docker's CLI
// and daemon do together on Linux. It returns the Mount for a bind (SOURCE
// an absolute path, or one starting with "." that is made absolute against
// the current directory as the CLI does) or a named volume (any other
// SOURCE), or, for a -v without SOURCE, the anonymous volume's cleaned
// container path and a nil Mount. TARGET must be absolute and not "/";
// OPTIONS is a comma-separated list of rw|ro, z|Z, a propagation mode
// (binds only), nocopy (volumes only) and consistent|cached|delegated.
// Errors wrap ErrInvalidVolume and say what is wrong.
func ParseVolume(spec string) (*Mount, string, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: '%s': %s", ErrInvalidVolume, spec, fmt.Sprintf(format, a...))
	}
	if spec == "" {
		return nil, "", fmt.Errorf("%w: empty", ErrInvalidVolume)
	}
	parts := strings.Split(spec, ":")
	if len(parts) > 3 {
		return nil, "", bad("too many colons")
	}
	if slices.Contains(parts, "") {
		return nil, "", bad("empty section between colons")
	}
	var source, target, opts string
	switch len(parts) {
	case 1:
		target = parts[0]
	case 2:
		if validMode(parts[1]) {
			// "/data:ro": a volume with options must have a source.
			return nil, "", bad("options %q need a source before the container path", parts[1])
		}
		source, target = parts[0], parts[1]
	case 3:
		source, target, opts = parts[0], parts[1], parts[2]
	}
	if !validMode(opts) {
		return nil, "", bad("invalid mode: %s", opts)
	}
	if !path.IsAbs(target) {
		return nil, "", bad("invalid mount path: '%s' mount path must be absolute", target)
	}
	target = path.Clean(target)
	if target == "/" {
		return nil, "", bad("destination can't be '/'")
	}
	if source == "" {
		return nil, target, nil
	}

	m := &Mount{Target: target, Options: opts}
	for o := range strings.SplitSeq(opts, ",") {
		switch {
		case o == "ro":
			m.ReadOnly = true
		case o == "nocopy":
			m.NoCopy = true
		case slices.Contains(propagationModes, o):
			m.Propagation = o
		}
	}
	if strings.HasPrefix(source, ".") {
		abs, err := filepath.Abs(source)
		if err != nil {
			return nil, "", bad("%v", err)
		}
		source = abs
	}
	if path.IsAbs(source) {
		m.Type, m.Source = Bind, path.Clean(source)
		if m.NoCopy {
			return nil, "", bad("option nocopy is for volumes, not bind mounts")
		}
		if m.Propagation == "" {
			m.Propagation = "rprivate"
		}
		return m, "", nil
	}
	m.Type, m.Source = Volume, source
	if m.Propagation != "" {
		return nil, "", bad("propagation mode %s is for bind mounts, not volumes", m.Propagation)
	}
	if len(source) == 1 {
		return nil, "", bad("volume name is too short, names should be at least two alphanumeric characters")
	}
	if !validVolumeName.MatchString(source) {
		return nil, "", bad(`%q includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`, source)
	}
	return m, "", nil
}
