package bench

import "testing"

func TestMountinfoHas(t *testing.T) {
	const mi = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /var/tmp/lazybench/mount rw,relatime shared:50 - ext4 /dev/loop3 rw
99 98 0:53 / /var/tmp/lazybench/mount/mnt rw,nosuid,nodev,relatime shared:51 - fuse.lazyfs lazyfs:127.0.0.1:1/bench/python3:latest rw,user_id=0,group_id=0
100 22 0:54 / /var/tmp/with\040space rw - tmpfs tmpfs rw
`
	for _, tc := range []struct {
		dir  string
		want bool
	}{
		{"/var/tmp/lazybench/mount/mnt", true},
		{"/var/tmp/lazybench/mount", true},
		{"/var/tmp/lazybench/mount/mn", false},
		{"/var/tmp/lazybench", false},
		{"/var/tmp/with space", true},
	} {
		if got := mountinfoHas(mi, tc.dir); got != tc.want {
			t.Errorf("mountinfoHas(%q) = %v, want %v", tc.dir, got, tc.want)
		}
	}
}
