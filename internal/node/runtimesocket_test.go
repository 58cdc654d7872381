package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/node/runtimeapi"
	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
)

// codeFiles is a code store of archives made from files in tests.
type codeFiles struct {
	mu   sync.Mutex
	zips map[string][]byte
}

func (z *codeFiles) Code(_ context.Context, digest string) (io.ReadCloser, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	b, ok := z.zips[digest]
	if !ok {
		return nil, fmt.Errorf("no code %s", digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// add archives files and returns the archive's digest.
func (z *codeFiles) add(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := archive.ZipDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	digest := "sha256:" + hex.EncodeToString(sum[:])
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.zips == nil {
		z.zips = map[string][]byte{}
	}
	z.zips[digest] = buf.Bytes()
	return digest
}

// A Python and a Node function on a node with process sandboxes: their
// runtimes answer every invocation over the Runtime API's socket (none
// over HTTP) with what the function returned; the socket goes with its
// instance and the sandbox's directory with the sandbox. With
// NoRuntimeSocket the same runs over HTTP.
func TestRuntimeSocketEndToEnd(t *testing.T) {
	functions := []struct {
		runtime, file, source, interp string
	}{
		{function.RuntimePython, "app.py", "def handler(event, context):\n" +
			"    return {'echo': event, 'id': context.aws_request_id}\n", "python3"},
		{function.RuntimeNode, "app.js", "exports.handler = async (event, context) => ({ echo: event, id: context.awsRequestId });\n", "node"},
	}
	for _, httpOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "socket", true: "http"}[httpOnly], func(t *testing.T) {
			code := &codeFiles{}
			w, err := New(Options{ID: "node-sock", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code, NoRuntimeSocket: httpOnly})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close(context.Background())
			for _, f := range functions {
				t.Run(f.runtime, func(t *testing.T) {
					if _, err := exec.LookPath(f.interp); err != nil || (f.interp == "python3" && runtimes.Python() == "") {
						t.Skipf("%s is not installed", f.interp)
					}
					spec, err := function.Spec{Runtime: f.runtime, Handler: "app.handler", MemoryMB: 128}.Normalize()
					if err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					defer cancel()
					is := workerapi.InstanceSpec{Function: "sock-" + f.interp, Version: 1, App: "sock-" + f.interp, Spec: spec,
						CodeDigest: code.add(t, map[string]string{f.file: f.source})}
					started, err := w.StartInstance(ctx, is)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := w.WaitInstance(ctx, started.ID); err != nil {
						t.Fatal(err)
					}
					for i := range 3 {
						id := fmt.Sprintf("inv-%d", i)
						res, err := w.Invoke(ctx, started.ID, workerapi.Invocation{ID: id, Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)),
							Deadline: time.Now().Add(time.Minute)})
						if err != nil || res.Error != nil {
							t.Fatalf("invocation %d: %v %v", i, err, res.Error)
						}
						var got struct {
							Echo map[string]int `json:"echo"`
							ID   string         `json:"id"`
						}
						if err := json.Unmarshal(res.Payload, &got); err != nil || got.Echo["n"] != i || got.ID != id {
							t.Fatalf("invocation %d answered %s (%v)", i, res.Payload, err)
						}
					}
					in, ok := w.instances.instance(started.ID)
					if !ok {
						t.Fatal("instance not running")
					}
					overHTTP, overSocket := in.api.Deliveries()
					want := [2]uint64{0, 3} // over HTTP, over the socket
					if httpOnly {
						want = [2]uint64{3, 0}
					}
					if got := [2]uint64{overHTTP, overSocket}; got != want {
						t.Errorf("delivered %d over HTTP and %d over the socket; want %v", overHTTP, overSocket, want)
					}
					sockDir := in.sandbox.sockDir
					if httpOnly != (sockDir == "") {
						t.Fatalf("sandbox socket directory %q with httpOnly %v", sockDir, httpOnly)
					}
					if err := w.StopInstance(ctx, started.ID); err != nil {
						t.Fatal(err)
					}
					if sockDir != "" {
						// The instance was the sandbox's only one.
						waitUntil(t, "the sandbox's socket directory to go", func() bool {
							_, err := os.Stat(sockDir)
							return os.IsNotExist(err)
						})
					}
				})
			}
		})
	}
}

// A runtime client that breaks the socket protocol fails the invocation at
// once, as a crash, and its instance is replaced.
func TestRuntimeSocketProtocolErrorIsACrash(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("python3 is not installed")
	}
	code := &codeFiles{}
	w, err := New(Options{ID: "node-sock", DataDir: t.TempDir(), Sandboxes: process.New(), Code: code})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	// The handler writes a frame of length 0 on the runtime's own
	// connection: the one connected to the socket.
	src := "import gc, socket\n\ndef handler(event, context):\n" +
		"    for o in gc.get_objects():\n" +
		"        if isinstance(o, socket.socket) and o.family == socket.AF_UNIX and o.fileno() >= 0:\n" +
		"            o.sendall(b'\\0\\0\\0\\0')\n" +
		"    import time\n    time.sleep(600)\n"
	spec, err := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", MemoryMB: 128}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	started, err := w.StartInstance(ctx, workerapi.InstanceSpec{Function: "breaks", Version: 1, App: "breaks", Spec: spec,
		CodeDigest: code.add(t, map[string]string{"app.py": src})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitInstance(ctx, started.ID); err != nil {
		t.Fatal(err)
	}
	_, err = w.Invoke(ctx, started.ID, workerapi.Invocation{ID: "broken", Payload: []byte(`{}`), Deadline: time.Now().Add(10 * time.Minute)})
	f, ok := err.(*workerapi.Failure)
	if !ok || f.Kind != workerapi.FailureCrash || !bytes.Contains([]byte(f.Message), []byte(runtimeapi.ErrProtocol.Error())) {
		t.Fatalf("Invoke: %v; want a crash naming %v", err, runtimeapi.ErrProtocol)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
