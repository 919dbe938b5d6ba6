//go:build !unix

package pgcluster

import (
	"errors"
	"io/fs"
	"runtime"
	"syscall"
)

var errUnsupported = errors.New("pgcluster: unsupported platform " + runtime.GOOS + " (needs a unix system)")

func platformSupported() error { return errUnsupported }

func sysProcAttr(*account) *syscall.SysProcAttr { return nil }

func killGroup(int) error { return errUnsupported }

func killTree(int) error { return errUnsupported }

func processAlive(int) (alive, known bool) { return false, false }

func fileOwner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }
