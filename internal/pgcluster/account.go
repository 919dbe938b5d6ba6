package pgcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
)

// serverUser is the system account initdb and postgres run as when the
// caller is root.
const serverUser = "postgres"

// account is the system user the server runs as when it is not the current
// user (only when the caller is root).
type account struct {
	name   string
	uid    int
	gid    int
	groups []int // supplementary group ids, including gid
}

// serverAccount returns nil when the server can run as the current user,
// and the postgres system account when the caller is root (PostgreSQL
// refuses to run as root).
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root needs a %q system user to run PostgreSQL as: %w", serverUser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: uid %q of user %q: %w", u.Uid, serverUser, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: gid %q of user %q: %w", u.Gid, serverUser, err)
	}
	a := &account{name: serverUser, uid: uid, gid: gid, groups: []int{gid}}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if n, err := strconv.Atoi(id); err == nil && !slices.Contains(a.groups, n) {
				a.groups = append(a.groups, n)
			}
		}
	}
	return a, nil
}

// chown gives path to the account; a no-op when a is nil.
func (a *account) chown(path string) error {
	if a == nil {
		return nil
	}
	if err := os.Lchown(path, a.uid, a.gid); err != nil {
		return fmt.Errorf("pgcluster: chown %s to %s: %w", path, a.name, err)
	}
	return nil
}

// checkTraversable returns an error naming the first directory from dir up
// to / that the account cannot search (execute bit), since the server could
// not reach its data directory through it. A nil account can reach
// whatever the caller can.
func (a *account) checkTraversable(dir string) error {
	if a == nil {
		return nil
	}
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: stat %s: %w", p, err)
		}
		if !a.canSearch(fi) {
			return fmt.Errorf("pgcluster: user %s cannot traverse %s (mode %v): "+
				"put the data directory elsewhere or allow it with chmod o+x %s", a.name, p, fi.Mode().Perm(), p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func (a *account) canSearch(fi fs.FileInfo) bool {
	perm := fi.Mode().Perm()
	uid, gid, ok := fileOwner(fi)
	if !ok {
		return true // unknown: let the server report it
	}
	switch {
	case uid == a.uid:
		return perm&0o100 != 0
	case slices.Contains(a.groups, gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// errNotOwned is wrapped when an initialised data directory belongs to
// someone other than the account the server runs as.
var errNotOwned = errors.New("data directory is not owned by the server user")
