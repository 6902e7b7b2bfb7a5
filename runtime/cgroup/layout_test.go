package cgroup

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// hybrid is this project's test machines' mountinfo: v1 controllers and an
// empty v2 hierarchy at /sys/fs/cgroup/unified.
const hybrid = `22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// systemdV1 is a systemd machine booted with the legacy hierarchy: cpu and
// cpuacct mounted together, optional fields before the separator.
const systemdV1 = `25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
`

// unified is a current systemd machine: one cgroup2 hierarchy.
const unified = `24 21 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Layout
	}{
		{"hybrid is v1", hybrid, Layout{Controllers: map[string]string{
			"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct", "cpuset": "/sys/fs/cgroup/cpuset",
			"memory": "/sys/fs/cgroup/memory", "devices": "/sys/fs/cgroup/devices", "freezer": "/sys/fs/cgroup/freezer",
			"blkio": "/sys/fs/cgroup/blkio", "pids": "/sys/fs/cgroup/pids",
		}}},
		{"co-mounted controllers", systemdV1, Layout{Controllers: map[string]string{
			"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
			"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
		}}},
		{"unified", unified, Layout{Unified: "/sys/fs/cgroup"}},
		{"only a named v1 hierarchy", "1 0 0:1 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n" +
			"2 0 0:2 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n", Layout{Unified: "/sys/fs/cgroup/unified"}},
		{"/sys/fs/cgroup preferred", "1 0 0:1 / /mnt/cg rw - cgroup2 cgroup2 rw\n" + unified, Layout{Unified: "/sys/fs/cgroup"}},
		{"escaped mount point", `1 0 0:1 / /tmp/my\040cgroups\134v2 rw - cgroup2 cgroup2 rw` + "\n", Layout{Unified: `/tmp/my cgroups\v2`}},
		{"garbage lines skipped", "junk\n1 2 3 - x\n\n" + unified, Layout{Unified: "/sys/fs/cgroup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountinfo(strings.NewReader(tc.in))
			if err != nil || got.Unified != tc.want.Unified || !maps.Equal(got.Controllers, tc.want.Controllers) {
				t.Errorf("ParseMountinfo() = %v, %v, want %v", got, err, tc.want)
			}
		})
	}
	if got, err := ParseMountinfo(strings.NewReader("22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n")); !errors.Is(err, ErrNoCgroups) {
		t.Errorf("ParseMountinfo(no cgroups) = %v, %v, want %v", got, err, ErrNoCgroups)
	}
}

func TestDetectLayout(t *testing.T) {
	l, err := DetectLayout()
	if err != nil {
		t.Skipf("no cgroups here: %v", err)
	}
	t.Logf("this machine: %v", l)
}
