package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ErrNoCgroups is returned when no cgroup hierarchy with a controller this
// package uses is mounted.
var ErrNoCgroups = errors.New("cgroup: no usable cgroup hierarchy mounted")

// controllers are the cgroup controllers a group is made in.
var controllers = []string{"memory", "cpu", "pids", "freezer"}

// mountOptions are the v1 super options that are not controllers.
var mountOptions = []string{"rw", "ro", "none", "noprefix", "xattr", "clone_children", "cpuset_v2_mode", "favordynmods"}

// Layout is where the cgroup hierarchies are mounted.
type Layout struct {
	// Unified is the mount point of the cgroup v2 hierarchy when the
	// controllers live there (v2); empty on v1 and hybrid machines.
	Unified string
	// Controllers maps each v1 controller ("memory", "cpu", "pids",
	// "freezer", ...) to the mount point of its hierarchy; several map to
	// one mount point when they are mounted together ("cpu,cpuacct").
	// Empty on v2.
	Controllers map[string]string
}

// V2 reports whether the layout is cgroup v2.
func (l Layout) V2() bool { return l.Unified != "" }

func (l Layout) String() string {
	if l.V2() {
		return "cgroup v2 at " + l.Unified
	}
	var b strings.Builder
	b.WriteString("cgroup v1:")
	for _, c := range slices.Sorted(maps.Keys(l.Controllers)) {
		fmt.Fprintf(&b, " %s=%s", c, l.Controllers[c])
	}
	return b.String()
}

// DetectLayout reads the calling process's /proc/self/mountinfo (see
// ParseMountinfo).
func DetectLayout() (Layout, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Layout{}, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// ParseMountinfo finds the cgroup hierarchies in a mountinfo table (the
// format of /proc/PID/mountinfo). When any of the controllers this package
// uses (memory, cpu, pids, freezer) is mounted as a v1 hierarchy the layout
// is v1, hybrid machines included (their v2 hierarchy, usually at
// /sys/fs/cgroup/unified, has no controllers to offer then); otherwise a
// cgroup2 mount makes it v2, /sys/fs/cgroup preferred when there are
// several. With neither it returns ErrNoCgroups.
func ParseMountinfo(r io.Reader) (Layout, error) {
	v1 := map[string]string{}
	var v2 []string
	s := bufio.NewScanner(r)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		// 36 35 98:0 /root /mnt/point rw,noatime master:1 - cgroup cgroup rw,memory
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+4 {
			continue
		}
		mountpoint, fstype, superOpts := unescape(fields[4]), fields[sep+1], fields[sep+3]
		switch fstype {
		case "cgroup2":
			v2 = append(v2, mountpoint)
		case "cgroup":
			for opt := range strings.SplitSeq(superOpts, ",") {
				if slices.Contains(mountOptions, opt) || strings.Contains(opt, "=") {
					continue // name=systemd and the like are hierarchies without controllers
				}
				if _, dup := v1[opt]; !dup {
					v1[opt] = mountpoint
				}
			}
		}
	}
	if err := s.Err(); err != nil {
		return Layout{}, fmt.Errorf("cgroup: read mountinfo: %w", err)
	}
	for _, c := range controllers {
		if _, ok := v1[c]; ok {
			return Layout{Controllers: v1}, nil
		}
	}
	if len(v2) == 0 {
		return Layout{}, ErrNoCgroups
	}
	if slices.Contains(v2, "/sys/fs/cgroup") {
		return Layout{Unified: "/sys/fs/cgroup"}, nil
	}
	return Layout{Unified: v2[0]}, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
