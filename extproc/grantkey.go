package extproc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GrantKeyFile is where a data dir keeps a generated grant key.
func GrantKeyFile(dataDir string) string { return filepath.Join(dataDir, "extproc", "grant.key") }

// LoadOrCreateGrantKey reads the grant key in path (its text, trailing
// newline removed), or writes a new random one there (0600) when the file
// does not exist. A generated key suits one custos; replicas behind one
// Envoy need the same key, given to each (config extproc.grant_key).
func LoadOrCreateGrantKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("grant key: %w", err)
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("grant key: %w", err)
		}
		key := hex.EncodeToString(raw)
		// Written aside, then linked into place: a reader never sees a
		// partial key, and of two processes creating it one wins.
		tmp, err := os.CreateTemp(filepath.Dir(path), ".grant-key-*")
		if err != nil {
			return nil, fmt.Errorf("grant key: %w", err)
		}
		defer func() { _ = os.Remove(tmp.Name()) }()
		_, werr := tmp.WriteString(key + "\n")
		if err := errors.Join(werr, tmp.Chmod(0o600), tmp.Sync(), tmp.Close()); err != nil {
			return nil, fmt.Errorf("grant key: %w", err)
		}
		if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
			return LoadOrCreateGrantKey(path)
		} else if err != nil {
			return nil, fmt.Errorf("grant key: %w", err)
		}
		return []byte(key), nil
	}
	if err != nil {
		return nil, fmt.Errorf("grant key: %w", err)
	}
	key := strings.TrimRight(string(b), "\r\n")
	if len(key) < MinGrantKeyBytes {
		return nil, fmt.Errorf("grant key %s: %d bytes, at least %d are required", path, len(key), MinGrantKeyBytes)
	}
	return []byte(key), nil
}
