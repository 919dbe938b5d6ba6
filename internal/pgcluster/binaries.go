package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrNoBinaries is returned when no PostgreSQL server installation (initdb
// and postgres) can be found.
var ErrNoBinaries = errors.New("pgcluster: PostgreSQL server binaries (initdb, postgres) not found")

// debianBinGlob is where Debian and Ubuntu install each major version.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// FindBinDir returns the directory holding the PostgreSQL server binaries.
// It tries, in order: `pg_config --bindir`, the highest version under
// /usr/lib/postgresql/*/bin, and the directory of `postgres` found in PATH
// (symlinks resolved). A candidate counts only if it holds both initdb and
// postgres. The error wraps ErrNoBinaries and lists what was tried.
func FindBinDir() (string, error) {
	var tried []string

	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.Command(pgConfig, "--bindir").Output()
		dir := strings.TrimSpace(string(out))
		switch {
		case err != nil:
			tried = append(tried, fmt.Sprintf("%s --bindir: %v", pgConfig, err))
		case hasServerBinaries(dir):
			return dir, nil
		default:
			tried = append(tried, fmt.Sprintf("%s --bindir = %s (no initdb/postgres there)", pgConfig, dir))
		}
	} else {
		tried = append(tried, "pg_config: not in PATH")
	}

	dirs, _ := filepath.Glob(debianBinGlob) // the pattern is valid
	sortByVersionDesc(dirs)
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	tried = append(tried, fmt.Sprintf("%s: %d candidate(s), none with initdb and postgres", debianBinGlob, len(dirs)))

	if postgres, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(postgres); err == nil {
			postgres = real
		}
		dir := filepath.Dir(postgres)
		if hasServerBinaries(dir) {
			return dir, nil
		}
		tried = append(tried, fmt.Sprintf("PATH: postgres is %s but %s has no initdb", postgres, dir))
	} else {
		tried = append(tried, "PATH: no postgres")
	}

	return "", fmt.Errorf("%w (install the PostgreSQL server package, e.g. postgresql on Debian/Ubuntu); tried: %s",
		ErrNoBinaries, strings.Join(tried, "; "))
}

// hasServerBinaries reports whether dir holds executable initdb and postgres.
func hasServerBinaries(dir string) bool {
	if dir == "" {
		return false
	}
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// sortByVersionDesc sorts paths like /usr/lib/postgresql/15/bin by the
// version component (the parent directory's name), highest first. Versions
// compare numerically part by part, so 9.6 < 10 < 15 < 17.
func sortByVersionDesc(dirs []string) {
	slices.SortStableFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
}

// compareVersions compares dotted numeric versions; a part that is not a
// number sorts below every number.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		na, nb := versionPart(pa, i), versionPart(pb, i)
		if na != nb {
			if na < nb {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionPart(parts []string, i int) int {
	if i >= len(parts) {
		return 0
	}
	n, err := strconv.Atoi(parts[i])
	if err != nil {
		return -1
	}
	return n
}
