package node

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox/process"
	"github.com/baton-faas/baton/internal/workerapi"
)

// An event routed to an instance that died before the router heard of it
// reached no runtime: the router must be told so that it retries it.
func TestInvokeOnGoneInstanceIsNotDelivered(t *testing.T) {
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: noCode{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	_, err = w.Invoke(t.Context(), "i-gone", workerapi.Invocation{ID: "r1", Deadline: time.Now().Add(time.Minute)})
	var f *workerapi.Failure
	if !errors.As(err, &f) || f.Kind != workerapi.FailureNotDelivered {
		t.Fatalf("Invoke on a gone instance: %v, want a %s failure", err, workerapi.FailureNotDelivered)
	}
}

// The crash output of an N:1 instance names no invocation; every
// invocation the crash failed gets it, an ordinary end does not.
func TestCrashOutputGoesToFailedInvocations(t *testing.T) {
	lc := newLogCapture(256)
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lc.follow(r)
	lc.begin("a")
	lc.begin("b")
	lc.begin("c")
	_, _ = wr.WriteString("t\ta\tINFO\tworking on a\n")
	if out, _ := lc.end("c"); len(out) != 0 {
		t.Fatalf("c got %q", out)
	}
	_, _ = wr.WriteString("Uncaught TypeError: boom\n    at crash (index.js:1)\n")
	wr.Close()
	lc.waitOrClose(5 * time.Second)
	aOut, _ := lc.endFailed("a")
	bOut, _ := lc.endFailed("b")
	for name, out := range map[string][]byte{"a": aOut, "b": bOut} {
		if !strings.Contains(string(out), "Uncaught TypeError: boom\n    at crash (index.js:1)\n") {
			t.Errorf("%s's logs lack the crash output: %q", name, out)
		}
	}
	if !strings.HasPrefix(string(aOut), "t\ta\tINFO\tworking on a\n") || strings.Contains(string(bOut), "working on a") {
		t.Errorf("attributed lines mixed up: a %q, b %q", aOut, bOut)
	}
	// Nothing in flight any more: older stray output is not handed on.
	lc.begin("d")
	if out, _ := lc.endFailed("d"); len(out) != 0 {
		t.Errorf("d got stale crash output %q", out)
	}
}

func TestCrashOutputIsBounded(t *testing.T) {
	lc := newLogCapture(128)
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lc.follow(r)
	lc.begin("a")
	lc.begin("b")
	_, _ = wr.WriteString("t\ta\tINFO\t" + strings.Repeat("a", 200) + "\n")
	_, _ = wr.WriteString(strings.Repeat("s", 300) + "\nlast words\n")
	wr.Close()
	lc.waitOrClose(5 * time.Second)
	out, truncated := lc.endFailed("a")
	if len(out) > 128 || !truncated || !strings.HasSuffix(string(out), "last words\n") {
		t.Fatalf("%d bytes, truncated %v: %q", len(out), truncated, out)
	}
	lc.end("b")
}
