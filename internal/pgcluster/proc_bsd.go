//go:build unix && !linux

package pgcluster

import "syscall"

// setParentDeathSignal is a no-op: only Linux has a parent death signal.
func setParentDeathSignal(*syscall.SysProcAttr) {}

// childPIDs is not implemented here: without it, PostgreSQL's children
// exit on their own once they notice the postmaster died.
func childPIDs(int) []int { return nil }
