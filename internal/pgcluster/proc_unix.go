//go:build unix

package pgcluster

import (
	"errors"
	"io/fs"
	"syscall"
)

func platformSupported() error { return nil }

// sysProcAttr puts the child in its own process group (so a timed-out stop
// can kill all of it), asks the kernel to signal it when the caller dies
// (Linux only) and switches to the server account when there is one.
func sysProcAttr(a *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(attr)
	if a != nil {
		groups := make([]uint32, 0, len(a.groups))
		for _, g := range a.groups {
			groups = append(groups, uint32(g))
		}
		attr.Credential = &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid), Groups: groups}
	}
	return attr
}

// killGroup sends SIGKILL to the process group led by pid.
func killGroup(pid int) error {
	err := syscall.Kill(-pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// killTree sends SIGKILL to pid, its process group and its children.
func killTree(pid int) error {
	children := childPIDs(pid)
	err := killGroup(pid)
	for _, child := range children {
		_ = syscall.Kill(child, syscall.SIGKILL) // it may be gone already
	}
	return err
}

// processAlive reports whether pid names a live process; known is false
// when that cannot be told.
func processAlive(pid int) (alive, known bool) {
	if pid <= 0 {
		return false, true
	}
	err := syscall.Kill(pid, 0)
	switch {
	case err == nil, errors.Is(err, syscall.EPERM):
		return true, true
	case errors.Is(err, syscall.ESRCH):
		return false, true
	default:
		return false, false
	}
}

func fileOwner(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
