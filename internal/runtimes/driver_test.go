package runtimes

import (
	"errors"
	"strings"
	"testing"
)

func TestLookupNamesAndAliases(t *testing.T) {
	for name, want := range map[string]string{
		"python3": "python3", "python": "python3",
		"nodejs": "nodejs", "node": "nodejs",
		"provided": "provided", "provided.al2023": "provided",
	} {
		d, ok := Lookup(name)
		if !ok || d.Name() != want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", name, d, ok, want)
		}
	}
	if _, err := Get("cobol"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "python3, nodejs or provided") {
		t.Errorf("Get(cobol) = %v", err)
	}
}

// Every driver must be complete: the worker relies on these invariants
// instead of knowing the languages.
func TestDriversAreConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range All() {
		for _, n := range append([]string{d.Name()}, d.Aliases()...) {
			if seen[n] {
				t.Errorf("runtime name %q is claimed twice", n)
			}
			seen[n] = true
		}
		file, content := d.ClientFile()
		if d.Interpreter() != "" && (file == "" || len(content) == 0) {
			t.Errorf("%s has an interpreter but no runtime client", d.Name())
		}
		if d.Forks() && d.MaxConcurrency() != 1 {
			t.Errorf("%s forks instances but claims concurrency %d", d.Name(), d.MaxConcurrency())
		}
		if (d.Interpreter() == "") == (d.Executable() == "") {
			t.Errorf("%s: exactly one of an interpreter and an executable of its own must start it", d.Name())
		}
		if d.MaxConcurrency() < 1 || d.BaseImage() == "" {
			t.Errorf("%s: incomplete driver", d.Name())
		}
		if cmd := d.Command("/i", "/c", "/task"); len(cmd) == 0 {
			t.Errorf("%s: empty command line", d.Name())
		}
	}
}

func TestHandlerValidation(t *testing.T) {
	for _, tc := range []struct {
		runtime, handler string
		ok               bool
	}{
		{"python3", "app.handler", true},
		{"python3", "app", false},
		{"python3", "", false},
		{"nodejs", "index.a.b", true},
		{"nodejs", "index", false},
		{"provided", "", true},
		{"provided", "anything", true},
	} {
		d, _ := Lookup(tc.runtime)
		if err := d.ValidateHandler(tc.handler); (err == nil) != tc.ok {
			t.Errorf("%s handler %q: err %v, want ok=%v", tc.runtime, tc.handler, err, tc.ok)
		}
	}
}
