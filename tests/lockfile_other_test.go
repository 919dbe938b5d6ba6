//go:build !unix

package tests

import "time"

// lockFile is a no-op where flock is missing: concurrent builds then
// duplicate work, and the rename into place keeps the cache whole.
func lockFile(string, time.Duration) (func(), error) { return func() {}, nil }
