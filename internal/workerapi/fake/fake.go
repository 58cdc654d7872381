// Package fake is an in-memory workerapi.Worker for tests of the control
// plane at scale: instances "start" after a configurable latency (a timer,
// no process and no goroutine per instance) and answer Invoke by echoing
// the payload, or as a test told their function to behave.
package fake

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/eventlog"
)

// Options configure a fake worker.
type Options struct {
	ID string
	// StartLatency is how long a start takes.
	StartLatency time.Duration
	// Capacity is what Info reports (default 64 GiB, 64 CPUs).
	Capacity workerapi.Resources
	// EventBuffer is how many events the worker keeps (default
	// eventlog.DefaultSize).
	EventBuffer int
	// Code, when set, is fetched (and checked against the digest) at every
	// start, as a real worker does on a cold host.
	Code workerapi.CodeStore
}

// Behaviour says how a function's instances behave; the zero value
// starts and echoes.
type Behaviour struct {
	// InitError fails every start with this error of the function's.
	InitError *workerapi.FunctionError
	// StartLatency, when set, replaces the worker's for this function.
	StartLatency time.Duration
	// Error makes every invocation return this function error.
	Error *workerapi.FunctionError
	// Crash makes an invocation kill its instance (FailureCrash, then an
	// InstanceExited event).
	Crash bool
	// Sleep delays every answer (a timeout when the deadline is sooner).
	Sleep time.Duration
}

// Worker is the fake worker. It is safe for concurrent use.
type Worker struct {
	opts   Options
	events *eventlog.Log

	mu        sync.Mutex
	behaviour map[string]Behaviour
	live      map[string]*instance
	ended     map[string]error // failed starts, for WaitInstance
	images    map[string]workerapi.Image
	closed    bool
	// pending counts start timers that have not finished (fired and
	// returned, or stopped); Close waits for them.
	pending sync.WaitGroup
}

type instance struct {
	inst     workerapi.Instance
	memoryMB int
	timer    *time.Timer   // the pending start
	done     chan struct{} // closed when the start ended
	err      error
}

// New returns a fake worker.
func New(opts Options) *Worker {
	if opts.ID == "" {
		opts.ID = "fake-" + newID()
	}
	if opts.Capacity == (workerapi.Resources{}) {
		opts.Capacity = workerapi.Resources{MemoryMB: 64 << 10, MilliCPUs: 64000}
	}
	return &Worker{opts: opts, events: eventlog.New(opts.ID, opts.EventBuffer),
		behaviour: map[string]Behaviour{}, live: map[string]*instance{}, ended: map[string]error{},
		images: map[string]workerapi.Image{}}
}

// SetBehaviour sets how the named function's instances behave from now on.
func (w *Worker) SetBehaviour(function string, b Behaviour) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.behaviour[function] = b
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Info implements workerapi.Worker.
func (w *Worker) Info(ctx context.Context) (workerapi.Info, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Info{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	info := workerapi.Info{ID: w.opts.ID, Isolation: "fake (no sandbox)", Capacity: w.opts.Capacity,
		Instances: len(w.live), Sandboxes: len(w.live)}
	for _, in := range w.live {
		info.Reserved.MemoryMB += in.memoryMB
		info.Reserved.MilliCPUs += in.memoryMB * 1000 / 1769
	}
	return info, nil
}

// StartInstance implements workerapi.Worker.
func (w *Worker) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return workerapi.Instance{}, fmt.Errorf("start instance: %w", workerapi.ErrWorkerUnavailable)
	}
	b := w.behaviour[spec.Function]
	latency := w.opts.StartLatency
	if b.StartLatency > 0 {
		latency = b.StartLatency
	}
	in := &instance{
		inst: workerapi.Instance{ID: "i-" + newID(), Worker: w.opts.ID, Function: spec.Function, Version: spec.Version,
			State: workerapi.Starting, Capacity: max(spec.Spec.Concurrency, 1)},
		memoryMB: spec.Spec.MemoryMB, done: make(chan struct{}),
	}
	w.live[in.inst.ID] = in
	began := time.Now()
	w.pending.Add(1)
	in.timer = time.AfterFunc(latency, func() {
		defer w.pending.Done()
		w.finishStart(in, spec, b, began)
	})
	return in.inst, nil
}

// finishStart ends a start whose latency passed.
func (w *Worker) finishStart(in *instance, spec workerapi.InstanceSpec, b Behaviour, began time.Time) {
	var err error
	if b.InitError != nil {
		err = &workerapi.InitError{Err: *b.InitError}
	} else if w.opts.Code != nil {
		err = w.fetch(spec.CodeDigest)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.live[in.inst.ID] != in || in.inst.State != workerapi.Starting {
		return // stopped meanwhile
	}
	if err != nil {
		w.failLocked(in, err)
		return
	}
	in.inst.State = workerapi.Ready
	in.inst.InitDuration = time.Since(began)
	ready := in.inst
	w.events.Append(workerapi.Event{Kind: workerapi.InstanceReady, Instance: ready.ID, Function: ready.Function, Version: ready.Version, Ready: &ready})
	close(in.done)
}

// failLocked ends a start with err (w.mu held).
func (w *Worker) failLocked(in *instance, err error) {
	delete(w.live, in.inst.ID)
	in.inst.State = workerapi.Failed
	in.err = err
	w.ended[in.inst.ID] = err
	if len(w.ended) > 4096 {
		for id := range w.ended { // forget an arbitrary old outcome
			delete(w.ended, id)
			break
		}
	}
	ev := workerapi.Event{Kind: workerapi.InstanceFailed, Instance: in.inst.ID, Function: in.inst.Function, Version: in.inst.Version, Reason: err.Error()}
	if ie, ok := err.(*workerapi.InitError); ok {
		ev.InitErr = ie
	}
	w.events.Append(ev)
	close(in.done)
}

// fetch reads the code as a worker would, checking its digest.
func (w *Worker) fetch(digest string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := w.opts.Code.Code(ctx, digest)
	if err != nil {
		return fmt.Errorf("fetch code %s: %w", digest, err)
	}
	defer rc.Close()
	return verify(rc, digest)
}

// WaitInstance implements workerapi.Worker.
func (w *Worker) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, err
	}
	w.mu.Lock()
	in := w.live[id]
	if in == nil {
		err, ok := w.ended[id]
		w.mu.Unlock()
		if ok {
			return workerapi.Instance{}, err
		}
		return workerapi.Instance{}, fmt.Errorf("instance %s: %w", id, workerapi.ErrUnknownInstance)
	}
	w.mu.Unlock()
	select {
	case <-in.done:
	case <-ctx.Done():
		return workerapi.Instance{}, ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return in.inst, in.err
}

// StopInstance implements workerapi.Worker.
func (w *Worker) StopInstance(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.live[id]
	if in == nil {
		return nil
	}
	if in.inst.State == workerapi.Starting {
		w.stopTimer(in)
		w.failLocked(in, fmt.Errorf("start of instance %s cancelled: instance stopped while starting", id))
		return nil
	}
	delete(w.live, id)
	return nil
}

// Instances implements workerapi.Worker.
func (w *Worker) Instances(ctx context.Context) ([]workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]workerapi.Instance, 0, len(w.live))
	for _, in := range w.live {
		out = append(out, in.inst)
	}
	return out, nil
}

// Invoke implements workerapi.Worker.
func (w *Worker) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Result{}, err
	}
	w.mu.Lock()
	in := w.live[id]
	if in == nil || in.inst.State != workerapi.Ready {
		w.mu.Unlock()
		return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureNotDelivered, Message: "instance " + id + " is gone; the event was not delivered"}
	}
	b := w.behaviour[in.inst.Function]
	w.mu.Unlock()
	began := time.Now()
	if b.Sleep > 0 {
		t := time.NewTimer(b.Sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			w.exit(in, "killed after a timeout", false)
			return workerapi.Result{Duration: time.Since(began)}, &workerapi.Failure{Kind: workerapi.FailureTimeout, Message: "function timed out"}
		}
	}
	switch {
	case b.Crash:
		w.exit(in, "exit status 1", true)
		return workerapi.Result{Duration: time.Since(began)}, &workerapi.Failure{Kind: workerapi.FailureCrash, Message: "instance " + id + " died during the invocation: exit status 1"}
	case b.Error != nil:
		fe := *b.Error
		return workerapi.Result{Error: &fe, Duration: time.Since(began)}, nil
	}
	return workerapi.Result{Payload: append([]byte(nil), inv.Payload...), Duration: time.Since(began)}, nil
}

// Kill ends a ready instance as if its process died: the exit is
// reported with an InstanceExited event. It reports whether the instance
// was live.
func (w *Worker) Kill(id, reason string) bool {
	w.mu.Lock()
	in := w.live[id]
	w.mu.Unlock()
	if in == nil || in.inst.State != workerapi.Ready {
		return false
	}
	w.exit(in, reason, true)
	return true
}

// exit ends a ready instance; report sends InstanceExited (an exit the
// worker was not asked for).
func (w *Worker) exit(in *instance, reason string, report bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.live[in.inst.ID] != in {
		return
	}
	delete(w.live, in.inst.ID)
	if report {
		w.events.Append(workerapi.Event{Kind: workerapi.InstanceExited, Instance: in.inst.ID, Function: in.inst.Function, Version: in.inst.Version, Reason: reason})
	}
}

// Events implements workerapi.Worker.
func (w *Worker) Events(ctx context.Context, after uint64) (<-chan workerapi.Event, error) {
	return w.events.Stream(ctx, after)
}

// Images implements workerapi.Worker.
func (w *Worker) Images(ctx context.Context) ([]workerapi.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]workerapi.Image, 0, len(w.images))
	for _, img := range w.images {
		out = append(out, img)
	}
	return out, nil
}

// CheckImage implements workerapi.Worker.
func (w *Worker) CheckImage(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.images[name]; !ok {
		return fmt.Errorf("image %q: %w", name, workerapi.ErrImageNotFound)
	}
	return nil
}

// ImportImage implements workerapi.Worker: the archive is read (and
// counted), not parsed.
func (w *Worker) ImportImage(ctx context.Context, name string, archive io.Reader) (workerapi.Image, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Image{}, err
	}
	n, err := io.Copy(io.Discard, archive)
	if err != nil {
		return workerapi.Image{}, fmt.Errorf("import image %s: read archive: %w", name, err)
	}
	img := workerapi.Image{Name: name, ID: "sha256:" + newID(), Created: time.Now().UTC(), Size: n, Source: "fake"}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.images[name] = img
	return img, nil
}

// RemoveImage implements workerapi.Worker.
func (w *Worker) RemoveImage(ctx context.Context, name string, inUse []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.images[name]; !ok {
		return fmt.Errorf("image %q: %w", name, workerapi.ErrImageNotFound)
	}
	if len(inUse) > 0 {
		return fmt.Errorf("remove image %s: %w: used by function(s) %v", name, workerapi.ErrImageInUse, inUse)
	}
	delete(w.images, name)
	return nil
}

// Close cancels pending starts, drops every instance and ends the event
// streams.
func (w *Worker) Close() {
	w.mu.Lock()
	w.closed = true
	for _, in := range w.live {
		if in.inst.State == workerapi.Starting {
			w.stopTimer(in)
			w.failLocked(in, fmt.Errorf("start of instance %s cancelled: %w", in.inst.ID, workerapi.ErrWorkerUnavailable))
		}
	}
	w.live = map[string]*instance{}
	w.mu.Unlock()
	w.pending.Wait()
	w.events.Close()
}

// stopTimer stops a pending start's timer; a timer that already fired
// finds the start ended and returns.
func (w *Worker) stopTimer(in *instance) {
	if in.timer.Stop() {
		w.pending.Done()
	}
}

var _ workerapi.Worker = (*Worker)(nil)

// verify reads r to its end and checks it against digest.
func verify(r io.Reader, digest string) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("fetch code %s: %w", digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("fetch code %s: the code store returned content with digest %s", digest, got)
	}
	return nil
}
