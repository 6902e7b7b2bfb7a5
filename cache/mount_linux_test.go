package cache

import "syscall"

func mountTmpfs(dir, opts string) error {
	return syscall.Mount("tmpfs", dir, "tmpfs", 0, opts)
}

func unmount(dir string) error { return syscall.Unmount(dir, 0) }
