package spec

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNoCommand is returned when neither the image nor the user gives a
// program to run.
var ErrNoCommand = errors.New("no command specified")

// Options are the `docker run` flags that decide the container's process.
// The zero value runs the image as its config says.
type Options struct {
	// Entrypoint is --entrypoint, used when EntrypointSet. Setting it
	// drops both the image's ENTRYPOINT and its CMD (only Args remain
	// after it); an empty list, or [""] as `--entrypoint ""` gives, means
	// no entrypoint at all.
	Entrypoint    []string `json:"entrypoint,omitempty"`
	EntrypointSet bool     `json:"entrypointSet,omitempty"`
	// Args are the words after the image name; any replace the image's CMD.
	Args []string `json:"args,omitempty"`
	// EnvFiles are --env-file paths (see ReadEnvFile), read before Env.
	EnvFiles []string `json:"envFiles,omitempty"`
	// Env are the -e values in order: KEY=VALUE, or a bare KEY (see UserEnv).
	Env []string `json:"env,omitempty"`
	// WorkingDir is -w; it must be absolute.
	WorkingDir string `json:"workingDir,omitempty"`
	// User is -u: name, uid, name:group, uid:gid, name:gid or uid:group.
	// Empty means the image's USER, and then root.
	User string `json:"user,omitempty"`
	// GroupAdd is --group-add: group names or numbers.
	GroupAdd []string `json:"groupAdd,omitempty"`
	// Hostname is the container's host name and its HOSTNAME. Docker uses
	// the first 12 digits of the container ID when -h is not given; the
	// caller passes that.
	Hostname string `json:"hostname,omitempty"`
	// TTY is -t: it adds TERM=xterm.
	TTY bool `json:"tty,omitempty"`
	// Volumes are the -v values (see ParseVolume).
	Volumes []string `json:"volumes,omitempty"`
}

// Process is what the container runs, resolved inside its root.
type Process struct {
	Args []string // Args[0] is looked up in the PATH of Env, inside the container
	Env  []string
	Cwd  string // absolute and clean; the runtime creates it when missing, as docker does (MkdirAll)
	Identity
	Hostname string
	// Mounts are the -v with a source, in the order given. They must be
	// mounted parents first: sort by the depth of Target.
	Mounts []Mount
	// Volumes are the anonymous volumes to create, sorted: the image's
	// VOLUMEs and the -v without a source, except where a Mount has the
	// same Target.
	Volumes []string
	// StopSignal is the image's STOPSIGNAL; empty means SIGTERM.
	StopSignal string
}

// Resolve decides the process a container runs from its image config cfg,
// the user's flags opt and, for a bare -e KEY or env-file KEY, the caller's
// environment hostEnv ("KEY=VALUE" entries, as os.Environ gives). rootfs is
// the container's root file system (lower layers, or the merged mount),
// whose /etc/passwd and /etc/group decide the user, groups and HOME.
//
// It follows docker: the user's entrypoint, command, environment, working
// directory and user override the image's (see Options); the environment
// gets PATH, HOSTNAME, TERM with a terminal and HOME as docker and runc give
// them; numeric users and groups need no /etc/passwd entry, names do.
//
// ctx is checked between the reads of rootfs; a read already waiting on a
// lazily fetched file is not interrupted.
func Resolve(ctx context.Context, rootfs string, cfg v1.ImageConfig, opt Options, hostEnv []string) (*Process, error) {
	p := &Process{Hostname: opt.Hostname, StopSignal: cfg.StopSignal}

	args, err := command(cfg, opt)
	if err != nil {
		return nil, err
	}
	p.Args = args

	switch {
	case opt.WorkingDir != "":
		if !path.IsAbs(opt.WorkingDir) {
			return nil, fmt.Errorf("the working directory '%s' is invalid, it needs to be an absolute path", opt.WorkingDir)
		}
		p.Cwd = path.Clean(opt.WorkingDir)
	case cfg.WorkingDir != "":
		if !path.IsAbs(cfg.WorkingDir) {
			return nil, fmt.Errorf("the image's working directory '%s' is invalid, it needs to be an absolute path", cfg.WorkingDir)
		}
		p.Cwd = path.Clean(cfg.WorkingDir)
	default:
		p.Cwd = "/"
	}

	userEnv, err := UserEnv(opt.EnvFiles, opt.Env, hostEnv)
	if err != nil {
		return nil, err
	}

	p.Mounts, p.Volumes, err = volumes(opt.Volumes, cfg.Volumes)
	if err != nil {
		return nil, err
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	uf, err := readUserFiles(rootfs)
	if err != nil {
		return nil, err
	}
	u := opt.User
	if u == "" {
		u = cfg.User
	}
	if p.Identity, err = resolveIdentity(uf, u, opt.GroupAdd); err != nil {
		return nil, err
	}

	if p.Env, err = containerEnv(cfg.Env, userEnv, opt.Hostname, opt.TTY, p.Home); err != nil {
		return nil, err
	}

	for _, v := range p.Volumes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := volumeOverFile(rootfs, v); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// command is docker's choice of argv: the daemon's merge of the user's
// config with the image's, then `--entrypoint ""` reset to none.
func command(cfg v1.ImageConfig, opt Options) ([]string, error) {
	entrypoint, cmd := opt.Entrypoint, opt.Args
	if !opt.EntrypointSet {
		if len(cmd) == 0 {
			cmd = cfg.Cmd
		}
		entrypoint = cfg.Entrypoint
	}
	if len(entrypoint) == 1 && entrypoint[0] == "" {
		entrypoint = nil
	}
	if len(entrypoint) == 0 && len(cmd) == 0 {
		return nil, ErrNoCommand
	}
	return append(slices.Clone(entrypoint), cmd...), nil
}

// volumes parses the -v values and merges the anonymous ones with the
// image's VOLUMEs.
func volumes(specs []string, image map[string]struct{}) ([]Mount, []string, error) {
	var mounts []Mount
	targets := map[string]bool{}
	anon := map[string]bool{}
	for _, s := range specs {
		m, v, err := ParseVolume(s)
		if err != nil {
			return nil, nil, err
		}
		if m == nil {
			anon[v] = true
			continue
		}
		if targets[m.Target] {
			return nil, nil, fmt.Errorf("%w: '%s': duplicate mount point: %s", ErrInvalidVolume, s, m.Target)
		}
		targets[m.Target] = true
		mounts = append(mounts, *m)
	}
	for v := range image {
		if !path.IsAbs(v) || path.Clean(v) == "/" {
			return nil, nil, fmt.Errorf("image VOLUME '%s' is invalid: it must be an absolute path other than /", v)
		}
		anon[path.Clean(v)] = true
	}
	var vols []string
	for _, v := range slices.Sorted(maps.Keys(anon)) {
		if !targets[v] {
			vols = append(vols, v)
		}
	}
	return mounts, vols, nil
}

// volumeOverFile refuses an anonymous volume whose target exists in the
// image as something other than a directory, as docker does.
func volumeOverFile(rootfs, target string) error {
	hp, err := HostPath(rootfs, target)
	if err != nil {
		return err
	}
	fi, err := os.Stat(hp)
	if err == nil && !fi.IsDir() {
		return fmt.Errorf("cannot mount volume over existing file, file exists %s", target)
	}
	if err != nil && !notExist(err) {
		return fmt.Errorf("volume %s: %w", target, err)
	}
	return nil
}
