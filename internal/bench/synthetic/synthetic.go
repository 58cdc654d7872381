// Package synthetic provides the synthetic functions `baton bench` and
// `baton replay` deploy: one function per runtime whose behaviour (sleep,
// CPU burn, memory touch, response size, call chains) is chosen by each
// event, so a single deployment serves every benchmark configuration.
//
// The Python and Node functions are embedded source files. The Go function
// is the baton binary itself: deployed as an executable named bootstrap, it
// serves the function (see RunGo) instead of the CLI, so no Go toolchain is
// needed at benchmark time.
package synthetic

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	_ "embed"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/runtimes"
)

// Behavior is the event a synthetic function receives. The steps run in
// this order: touch memory, burn CPU, sleep, call the chain, build the body.
type Behavior struct {
	SleepMs       float64 `json:"sleepMs,omitempty"`       // wall-clock sleep
	BusyMs        float64 `json:"busyMs,omitempty"`        // CPU busy loop for this long (checking a monotonic clock)
	ResponseBytes int     `json:"responseBytes,omitempty"` // size of the "body" filler in the reply
	TouchMB       int     `json:"touchMB,omitempty"`       // allocate and write one byte per 4 KiB page of this many MiB, then free (Node: at its next GC)
	// Chain lists the functions still to call, in order: the function calls
	// Chain[0] through Baton's API with this same event minus Chain[0] (so
	// every hop does the same work) and includes its hops in the reply.
	Chain  []string `json:"chain,omitempty"`
	Server string   `json:"server,omitempty"` // Baton API base URL for chain calls
	Filler string   `json:"filler,omitempty"` // request padding, ignored (large payloads)
}

// Reply is what a synthetic function returns.
type Reply struct {
	ExecMs  float64 `json:"execMs"` // time the function itself spent (from handler entry to return), measured with a monotonic clock
	Runtime string  `json:"runtime"`
	// CPUMs is the CPU time (user+system) the function's process used
	// between handler entry and return. It is process-wide, so Node
	// instances with concurrency > 1 also count their other invocations.
	CPUMs float64 `json:"cpuMs"`
	// MaxRSSMB is the peak resident set size of the function's process so
	// far, in MiB; TouchMB raises it. Zero where the platform cannot tell.
	MaxRSSMB float64 `json:"maxRssMB,omitempty"`
	Body     string  `json:"body,omitempty"`
	Hops     []Hop   `json:"hops,omitempty"` // this function first, then the downstream hops in order
}

// Hop is one function of a chain, as seen by the function that called it.
type Hop struct {
	Function string  `json:"function"`
	ExecMs   float64 `json:"execMs"` // that hop's own execution time, including its downstream call
	CallMs   float64 `json:"callMs"` // time this hop spent waiting on its downstream call (0 for the last)
	Cold     bool    `json:"cold"`   // from the downstream response header Baton-Cold-Start (the first hop's cold flag is left false; the client knows it)
}

// Handlers the synthetic functions are deployed with.
const (
	scriptHandler    = "synthetic.handler"
	bootstrapHandler = "bootstrap"
)

// MaxBootstrapZipBytes bounds the Go function's archive: base64 inflates it
// by 4/3 and the server refuses deploy requests over 100 MiB, so 64 MiB
// leaves room for the encoding and the rest of the request.
const MaxBootstrapZipBytes = 64 << 20

//go:embed python/synthetic.py
var pythonSource []byte

//go:embed node/synthetic.js
var nodeSource []byte

// zipEpoch is the earliest time a zip header holds; a fixed time keeps the
// archives (and so the code digests the server computes) reproducible.
var zipEpoch = time.Date(1980, time.January, 1, 0, 0, 0, 0, time.UTC)

// executable locates the binary that becomes the Go function; tests point
// it at a freshly built baton binary instead of the test binary.
var executable = os.Executable

// bootstrapCache keeps the Go function's archive: compressing the binary
// takes a good fraction of a second, and a benchmark may deploy several Go
// functions.
var bootstrapCache struct {
	sync.Mutex
	path string
	zip  []byte
}

// Code returns the deployable zip and handler for a runtime ("python3",
// "nodejs", "provided"). For "provided" the archive holds the running
// executable as bootstrap, so it only works from the baton binary (whose
// main dispatches to RunGo under that name).
func Code(runtime string) (zip []byte, handler string, err error) {
	switch runtime {
	case function.RuntimePython:
		zip, err = zipFile("synthetic.py", 0o644, bytes.NewReader(pythonSource), flate.DefaultCompression)
		return zip, scriptHandler, err
	case function.RuntimeNode:
		zip, err = zipFile("synthetic.js", 0o644, bytes.NewReader(nodeSource), flate.DefaultCompression)
		return zip, scriptHandler, err
	case function.RuntimeProvided:
		zip, err = bootstrapZip()
		return zip, bootstrapHandler, err
	default:
		if _, err := runtimes.Get(runtime); err != nil {
			return nil, "", fmt.Errorf("synthetic: %w", err)
		}
		return nil, "", fmt.Errorf("synthetic: runtime %s has no synthetic function yet", runtime)
	}
}

func bootstrapZip() ([]byte, error) {
	path, err := executable()
	if err != nil {
		return nil, fmt.Errorf("synthetic: locate the baton executable for the Go function: %w", err)
	}
	bootstrapCache.Lock()
	defer bootstrapCache.Unlock()
	if bootstrapCache.path == path {
		// A copy, so a caller that edits its archive cannot corrupt the
		// next deploy's.
		return slices.Clone(bootstrapCache.zip), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("synthetic: open the baton executable for the Go function: %w", err)
	}
	defer f.Close()
	// The fastest level deflates the binary about three times quicker than
	// the default, for an archive only some 7% larger.
	z, err := zipFile("bootstrap", 0o755, f, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	if len(z) > MaxBootstrapZipBytes {
		return nil, fmt.Errorf("synthetic: the Go function's archive is %d MiB, over the %d MiB that fit in a deploy request once base64-encoded",
			len(z)>>20, MaxBootstrapZipBytes>>20)
	}
	bootstrapCache.path, bootstrapCache.zip = path, z
	return slices.Clone(z), nil
}

// zipFile builds an archive holding one file at its root, deflated at
// level.
func zipFile(name string, perm fs.FileMode, content io.Reader, level int) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, level)
	})
	hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: zipEpoch}
	hdr.SetMode(perm)
	w, err := zw.CreateHeader(hdr)
	if err == nil {
		_, err = io.Copy(w, content)
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("synthetic: zip %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// Deploy deploys (or updates) a synthetic function named name with the
// given spec fields. spec.Runtime picks the implementation; Handler and
// the code are filled in, and Network defaults to host.
func Deploy(ctx context.Context, c *client.Client, name string, spec function.Spec) error {
	code, handler, err := Code(spec.Runtime)
	if err != nil {
		return err
	}
	spec.Handler = handler
	if spec.Network == "" {
		// Chains call the next function through the server's HTTP API,
		// which an isolated sandbox (loopback only) cannot reach.
		spec.Network = function.NetworkHost
	}
	if _, err := c.Deploy(ctx, name, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: code}); err != nil {
		return fmt.Errorf("deploy synthetic %s function %s: %w", spec.Runtime, name, err)
	}
	return nil
}
