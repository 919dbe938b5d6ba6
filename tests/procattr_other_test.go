//go:build !linux

package tests

import "syscall"

func devProcAttr() *syscall.SysProcAttr { return nil }
