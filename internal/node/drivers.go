package node

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/baton-faas/baton/internal/runtimes"
	"github.com/baton-faas/baton/internal/workerapi"
)

// interpreters finds each runtime's interpreter on this host once, at the
// first start of that runtime, so that a host without python3 (say) still
// runs its other runtimes, and New starts no program.
type interpreters struct {
	byRuntime map[string]*hostInterpreter // fixed at creation: read without a lock
}

type hostInterpreter struct {
	once sync.Once
	path string
	err  error
	done atomic.Bool // the lookup ended: path and err are set
}

func newInterpreters() *interpreters {
	c := &interpreters{byRuntime: map[string]*hostInterpreter{}}
	for _, d := range runtimes.All() {
		c.byRuntime[d.Name()] = &hostInterpreter{}
	}
	return c
}

// find returns drv's interpreter on this host, "" for a runtime that needs
// none. A missing interpreter fails the start as an init error that names
// the program. The lookup (which may run the interpreter to learn its real
// path) happens once per runtime; concurrent first starts wait for it.
func (c *interpreters) find(drv runtimes.Driver) (string, error) {
	h := c.byRuntime[drv.Name()]
	if h == nil {
		return "", fmt.Errorf("%w %q", runtimes.ErrUnknown, drv.Name())
	}
	h.once.Do(func() {
		h.path, h.err = drv.HostInterpreter()
		h.done.Store(true)
	})
	if h.err != nil {
		return "", &workerapi.InitError{Err: workerapi.FunctionError{
			Type: "Runtime.Unavailable", Message: h.err.Error(),
		}}
	}
	return h.path, nil
}

// driver returns the driver of spec's runtime.
func driver(runtime string) (runtimes.Driver, error) {
	drv, err := runtimes.Get(runtime)
	if err != nil {
		return nil, fmt.Errorf("start instance: %w", err)
	}
	return drv, nil
}

// capacity is how many events an instance of drv serves at once.
func capacity(drv runtimes.Driver, concurrency int) int {
	return min(max(concurrency, 1), drv.MaxConcurrency())
}

// entrypointProblem says why the program that starts drv's instances
// could not run, without host paths.
func entrypointProblem(drv runtimes.Driver, err error) string {
	what := "the runtime interpreter"
	if exe := drv.Executable(); exe != "" {
		what = exe
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return what + " was not found"
	case errors.Is(err, fs.ErrPermission):
		return what + " is not executable (permission denied)"
	default:
		return what + " is not a valid executable for this host (exec format error)"
	}
}
