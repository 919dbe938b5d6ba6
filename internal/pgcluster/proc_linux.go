//go:build linux

package pgcluster

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// setParentDeathSignal makes the kernel send SIGINT (PostgreSQL's fast
// shutdown) to the child when the thread that started it exits, which for
// a Go program means when the process dies. SIGINT rather than SIGTERM:
// SIGTERM is a smart shutdown that waits for every client to leave.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGINT
}

// childPIDs returns the processes whose parent is pid. PostgreSQL's
// children each call setsid, so they are not in the postmaster's process
// group and a group kill misses them.
func childPIDs(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var children []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) >= 2 && fields[1] == strconv.Itoa(pid) {
			children = append(children, child)
		}
	}
	return children
}
