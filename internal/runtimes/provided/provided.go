// Package provided is the driver of custom runtimes: the code archive holds
// an executable named bootstrap that speaks the Lambda Runtime API itself
// (a Go program built with aws-lambda-go, a shell script, ...).
package provided

import "path"

// Name is the runtime's name in function specs.
const Name = "provided"

// Bootstrap is the executable a provided function's archive must hold at
// its root.
const Bootstrap = "bootstrap"

// Driver implements runtimes.Driver.
type Driver struct{}

func (Driver) Name() string      { return Name }
func (Driver) Aliases() []string { return []string{"provided.al2", "provided.al2023"} }

// ValidateHandler accepts anything: bootstrap reads _HANDLER if it wants.
func (Driver) ValidateHandler(string) error { return nil }

// MaxConcurrency is 1: Lambda's custom runtimes poll one event at a time.
func (Driver) MaxConcurrency() int { return 1 }

func (Driver) Interpreter() string              { return "" }
func (Driver) HostInterpreter() (string, error) { return "", nil }
func (Driver) ClientFile() (string, []byte)     { return "", nil }
func (Driver) Forks() bool                      { return false }
func (Driver) RuntimeSocket() bool              { return false } // unmodified Lambda clients speak HTTP
func (Driver) Executable() string               { return Bootstrap }
func (Driver) BaseImage() string                { return "shell" }
func (Driver) Command(_, _, taskRoot string) []string {
	return []string{path.Join(taskRoot, Bootstrap)}
}
