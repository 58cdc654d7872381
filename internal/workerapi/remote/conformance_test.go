package remote_test

import (
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
	"github.com/baton-faas/baton/internal/workerapi/workerapitest"
)

// fakeDeployer deploys the suite's functions as behaviours of a fake worker.
type fakeDeployer struct{ w *fake.Worker }

func (d fakeDeployer) Deploy(t *testing.T, name string, kind workerapitest.Kind) workerapi.InstanceSpec {
	var b fake.Behaviour
	switch kind {
	case workerapitest.InitFails:
		b.InitError = &workerapi.FunctionError{Type: "Runtime.ImportModuleError", Message: "boom at import", StackTrace: []string{"app.py:1"}}
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
	return workerapi.InstanceSpec{Function: name, Version: 1, App: name, Spec: spec, CodeDigest: "sha256:none"}
}

func newFake(t *testing.T) *fake.Worker {
	w := fake.New(fake.Options{ID: "fake-1", StartLatency: time.Millisecond, EventBuffer: workerapitest.EventBuffer})
	t.Cleanup(w.Close)
	return w
}

// The fake worker behind the transport passes the conformance suite: the
// transport adds nothing to and takes nothing from the contract.
func TestConformanceFake(t *testing.T) {
	workerapitest.Run(t, func(t *testing.T) (workerapi.Worker, workerapitest.Deployer) {
		w := newFake(t)
		return remotetest.Loopback(t, w), fakeDeployer{w}
	})
}
