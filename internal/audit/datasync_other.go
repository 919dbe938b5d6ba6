//go:build !linux

package audit

import "syscall"

func fdatasync(fd uintptr) error { return syscall.Fsync(int(fd)) }
