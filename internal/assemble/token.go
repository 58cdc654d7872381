package assemble

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

// TokenFileName is the API token's file in the data directory.
const TokenFileName = "api-token"

// DefaultTokenFile is where a server with the default data directory
// keeps its API token.
func DefaultTokenFile() string { return filepath.Join(DefaultDataDir(), TokenFileName) }

// loadOrCreateToken reads the API token from path, or creates it with a
// random value, readable by its owner only (functions run as another
// user and must not read it).
func loadOrCreateToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return "", fmt.Errorf("API token file %s is empty", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read API token: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create API token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write API token: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write API token: %w", err)
	}
	return tok, nil
}

// ReadToken reads a token file written by the server.
func ReadToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}
