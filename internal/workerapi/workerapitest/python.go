package workerapitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// PythonCode is a Deployer of the suite's functions written in Python, and
// the workerapi.CodeStore (in memory) that a real worker fetches them from.
type PythonCode struct {
	mu  sync.Mutex
	zip map[string][]byte
}

// NewPythonCode returns an empty store.
func NewPythonCode() *PythonCode { return &PythonCode{zip: map[string][]byte{}} }

// pythonSource is the app.py of each kind.
var pythonSource = map[Kind]string{
	Echo:      "def handler(event, context):\n    return event\n",
	InitFails: "raise ValueError('boom at import')\n",
	SlowStart: "import time\ntime.sleep(600)\n\ndef handler(event, context):\n    return event\n",
	Crashes:   "import os\n\ndef handler(event, context):\n    os._exit(3)\n",
}

// Code implements workerapi.CodeStore.
func (p *PythonCode) Code(_ context.Context, digest string) (io.ReadCloser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.zip[digest]
	if !ok {
		return nil, fmt.Errorf("no code %s", digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Deploy implements Deployer.
func (p *PythonCode) Deploy(t *testing.T, name string, kind Kind) workerapi.InstanceSpec {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(pythonSource[kind]), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.ZipDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	digest := "sha256:" + hex.EncodeToString(sum[:])
	p.mu.Lock()
	p.zip[digest] = buf.Bytes()
	p.mu.Unlock()
	spec, err := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MemoryMB: 128}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return workerapi.InstanceSpec{Function: name, Version: 1, App: "conformance-" + name, Spec: spec, CodeDigest: digest}
}
