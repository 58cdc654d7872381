package runtimes

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Driver is what Baton needs to know about one language. Each language
// implements it in its own package (internal/runtimes/python, node,
// provided); adding a language means writing one such package and listing
// it in drivers below.
//
// Methods use only built-in types so that language packages need not
// import this one.
type Driver interface {
	// Name is the canonical runtime name stored in function specs.
	Name() string
	// Aliases are other names users may deploy with; specs store Name.
	Aliases() []string
	// ValidateHandler checks a spec's handler beyond the generic syntax
	// rules (an empty handler included); the message names the problem.
	ValidateHandler(handler string) error
	// MaxConcurrency is how many events one instance may serve at once;
	// 1 means one at a time.
	MaxConcurrency() int
	// Interpreter is the program that runs the runtime client, as named
	// on an image's PATH ("python3"); "" when the function's own
	// executable is started.
	Interpreter() string
	// HostInterpreter finds the interpreter on this host. It returns ""
	// and an error when it is missing, and "" and nil when the runtime
	// needs none.
	HostInterpreter() (string, error)
	// ClientFile names the runtime client script and returns its
	// content; "" when the runtime has none.
	ClientFile() (name string, content []byte)
	// RuntimeSocket reports whether the runtime's client runs the
	// invocation loop over the Runtime API's socket when given one
	// (runtimeapi.SocketEnv); clients that speak only HTTP (the function's
	// own, under provided) are not given one.
	RuntimeSocket() bool
	// Forks reports whether instances are forked from the app's zygote
	// (a grain worker that loaded the function once) rather than started
	// as processes of their own.
	Forks() bool
	// Command is the command line that starts the runtime: the instance
	// process, or for a forking runtime its zygote. interp is the
	// interpreter's path, client the runtime client's path and taskRoot
	// the function's code, all as the sandbox sees them.
	Command(interp, client, taskRoot string) []string
	// Executable is the file at the root of the code archive that Command
	// executes ("bootstrap"); "" when an interpreter runs the client.
	Executable() string
	// BaseImage names the base image recipe the runtime needs (see
	// internal/image/baseimage).
	BaseImage() string
}

// ErrUnknown is returned (wrapped) by Get for a name no driver answers to.
var ErrUnknown = errors.New("unknown runtime")

// Lookup returns the driver for a runtime name or alias.
func Lookup(name string) (Driver, bool) {
	for _, d := range drivers {
		if d.Name() == name || slices.Contains(d.Aliases(), name) {
			return d, true
		}
	}
	return nil, false
}

// Get is Lookup with an error that lists the known runtimes.
func Get(name string) (Driver, error) {
	if d, ok := Lookup(name); ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w %q (want one of %s)", ErrUnknown, name, NameList())
}

// All returns every driver, in the registry's order.
func All() []Driver { return slices.Clone(drivers) }

// Names returns the canonical names of every runtime.
func Names() []string {
	out := make([]string, len(drivers))
	for i, d := range drivers {
		out[i] = d.Name()
	}
	return out
}

// Concurrent returns the names of the runtimes whose instances may serve
// several events at once.
func Concurrent() []string {
	var out []string
	for _, d := range drivers {
		if d.MaxConcurrency() > 1 {
			out = append(out, d.Name())
		}
	}
	return out
}

// NameList is Names for messages: "python3, nodejs or provided".
func NameList() string {
	n := Names()
	if len(n) < 2 {
		return strings.Join(n, "")
	}
	return strings.Join(n[:len(n)-1], ", ") + " or " + n[len(n)-1]
}
