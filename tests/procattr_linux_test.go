package tests

import "syscall"

// devProcAttr kills a `custos dev` left running if the test binary dies
// (a -timeout panic); custos in turn stops its PostgreSQL the same way.
func devProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
