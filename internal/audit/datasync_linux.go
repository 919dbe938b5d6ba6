package audit

import "syscall"

func fdatasync(fd uintptr) error { return syscall.Fdatasync(int(fd)) }
