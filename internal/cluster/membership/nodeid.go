package membership

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// IDFileName is the file in a node's data directory that holds its id.
const IDFileName = "node-id"

const maxIDLen = 64

// ValidateID checks a node id: 1 to 64 characters of letters, digits, '-'
// and '_' (it is a KV key and appears in subjects and logs).
func ValidateID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("node id %q must be 1 to %d characters long", id, maxIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("node id %q may contain only letters, digits, '-' and '_' (not %q)", id, c)
		}
	}
	return nil
}

// LoadOrCreateID returns the node id stored in dataDir, creating one the
// first time: the host's name (cut to what ids allow) and random hex, so
// that ids are readable in `baton nodes` and unique across copies of a host.
// The id stays the node's for the life of its data directory.
func LoadOrCreateID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, IDFileName)
	data, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(data))
		if err := ValidateID(id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	host, _ := os.Hostname()
	id := newID(host)
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	// Write then rename: a crash leaves either no id or a whole one.
	tmp, err := os.CreateTemp(dataDir, IDFileName+".tmp*")
	if err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(id + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		// Link fails if another process created the file meanwhile; its
		// id then wins.
		err = os.Link(tmp.Name(), path)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateID(dataDir)
		}
	}
	if err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}

func newID(host string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(host) {
		if b.Len() >= 32 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		} else if c == '.' {
			break // the short host name is enough
		}
	}
	prefix := strings.Trim(b.String(), "-")
	if prefix == "" {
		prefix = "node"
	}
	return prefix + "-" + randomHex(6)
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(buf)
}
