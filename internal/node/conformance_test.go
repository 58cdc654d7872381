package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// memCode is a code store in memory: archives by digest.
type memCode struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *memCode) Code(_ context.Context, digest string) (io.ReadCloser, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[digest]
	if !ok {
		return nil, errors.New("no code " + digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// pythonDeployer stores Python functions of each kind in a memCode.
type pythonDeployer struct{ code *memCode }

// pythonSource is the app.py of each kind of the suite's functions.
var pythonSource = map[workerapitest.Kind]string{
	workerapitest.Echo:      "def handler(event, context):\n    return event\n",
	workerapitest.InitFails: "raise ValueError('boom at import')\n",
	workerapitest.SlowStart: "import time\ntime.sleep(600)\n\ndef handler(event, context):\n    return event\n",
	workerapitest.Crashes:   "import os\n\ndef handler(event, context):\n    os._exit(3)\n",
}

func (d pythonDeployer) Deploy(t *testing.T, name string, kind workerapitest.Kind) workerapi.InstanceSpec {
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
	d.code.mu.Lock()
	d.code.m[digest] = buf.Bytes()
	d.code.mu.Unlock()
	spec, err := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MemoryMB: 128}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return workerapi.InstanceSpec{Function: name, Version: 1, App: "conformance-" + name, Spec: spec, CodeDigest: digest}
}

// The node with process sandboxes passes the worker API's conformance
// suite (container sandboxes: see internal/assemble).
func TestConformanceProcess(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed: the node runs the suite's functions in Python")
	}
	workerapitest.Run(t, func(t *testing.T) (workerapi.Worker, workerapitest.Deployer) {
		code := &memCode{m: map[string][]byte{}}
		w, err := New(Options{ID: "node-test", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code,
			EventBuffer: workerapitest.EventBuffer})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := w.Close(ctx); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return w, pythonDeployer{code: code}
	})
}
