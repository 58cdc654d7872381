package fake_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// codes is a code store in memory.
type codes struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *codes) put(b []byte) string {
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[d] = b
	return d
}

func (c *codes) Code(_ context.Context, digest string) (io.ReadCloser, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[digest]
	if !ok {
		return nil, errors.New("no code " + digest)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

type deployer struct {
	w     *fake.Worker
	codes *codes
}

func (d deployer) Deploy(t *testing.T, name string, kind workerapitest.Kind) workerapi.InstanceSpec {
	var b fake.Behaviour
	switch kind {
	case workerapitest.InitFails:
		b.InitError = &workerapi.FunctionError{Type: "Runtime.ImportModuleError", Message: "boom at import"}
	case workerapitest.SlowStart:
		b.StartLatency = time.Hour
	case workerapitest.Crashes:
		b.Crash = true
	}
	d.w.SetBehaviour(name, b)
	spec, err := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler"}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	return workerapi.InstanceSpec{Function: name, Version: 1, App: name, Spec: spec, CodeDigest: d.codes.put([]byte("code of " + name))}
}

func TestConformance(t *testing.T) {
	workerapitest.Run(t, func(t *testing.T) (workerapi.Worker, workerapitest.Deployer) {
		c := &codes{m: map[string][]byte{}}
		w := fake.New(fake.Options{ID: "fake-1", StartLatency: time.Millisecond, EventBuffer: workerapitest.EventBuffer, Code: c})
		t.Cleanup(w.Close)
		return w, deployer{w: w, codes: c}
	})
}

// Code whose content does not match its digest never starts.
func TestStartChecksTheCodeDigest(t *testing.T) {
	c := &codes{m: map[string][]byte{}}
	w := fake.New(fake.Options{Code: c})
	defer w.Close()
	d := c.put([]byte("real"))
	c.m[d] = []byte("forged")
	ctx := context.Background()
	in, err := w.StartInstance(ctx, workerapi.InstanceSpec{Function: "f", Version: 1, CodeDigest: d})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitInstance(ctx, in.ID); err == nil {
		t.Fatal("an instance of forged code became ready")
	}
}

// Behaviours: a function error, and a sleep past the deadline.
func TestBehaviours(t *testing.T) {
	w := fake.New(fake.Options{})
	defer w.Close()
	ctx := context.Background()
	w.SetBehaviour("err", fake.Behaviour{Error: &workerapi.FunctionError{Type: "ValueError", Message: "no"}})
	w.SetBehaviour("slow", fake.Behaviour{Sleep: time.Hour})
	for _, name := range []string{"err", "slow"} {
		in, err := w.StartInstance(ctx, workerapi.InstanceSpec{Function: name, Version: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WaitInstance(ctx, in.ID); err != nil {
			t.Fatal(err)
		}
		ictx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		res, err := w.Invoke(ictx, in.ID, workerapi.Invocation{ID: "1", Payload: []byte("{}")})
		cancel()
		var f *workerapi.Failure
		switch name {
		case "err":
			if err != nil || res.Error == nil || res.Error.Type != "ValueError" {
				t.Errorf("err: %+v, %v; want the function error", res, err)
			}
		case "slow":
			if !errors.As(err, &f) || f.Kind != workerapi.FailureTimeout {
				t.Errorf("slow: %v; want a timeout failure", err)
			}
		}
	}
}
