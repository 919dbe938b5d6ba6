package pgcluster

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// testSettings make a throwaway cluster fast; a caller's Settings win.
func testSettings() map[string]string {
	return map[string]string{
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
	}
}

// StartForTest starts a cluster for t and stops it in t.Cleanup. Unless
// opts.Dir is set it creates a fresh data directory under os.TempDir()
// (made traversable for the postgres user when running as root) and removes
// it after the test. fsync, synchronous_commit and full_page_writes are off
// unless opts.Settings says otherwise. Missing PostgreSQL binaries fail the
// test: they are never a reason to skip it.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Dir == "" {
		base, err := os.MkdirTemp("", "custos-pgcluster-")
		if err != nil {
			t.Fatalf("pgcluster: create test directory: %v", err)
		}
		t.Cleanup(func() {
			if err := os.RemoveAll(base); err != nil {
				t.Errorf("pgcluster: remove test directory: %v", err)
			}
		})
		// MkdirTemp makes it 0700; the server may run as another user.
		if err := os.Chmod(base, 0o711); err != nil {
			t.Fatalf("pgcluster: chmod test directory: %v", err)
		}
		opts.Dir = filepath.Join(base, "data")
	}
	settings := testSettings()
	maps.Copy(settings, opts.Settings)
	opts.Settings = settings

	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("pgcluster: start test cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("pgcluster: stop test cluster: %v", err)
		}
	})
	return c
}
