package remote_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/fake"
	"github.com/baton-faas/baton/internal/workerapi/remote"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
)

// wait bounds every wait of these tests: generous, for busy hosts.
const wait = time.Minute

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the tests' wait passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readyInstance starts an instance of fn on w (directly) and waits for it.
func readyInstance(t *testing.T, w workerapi.Worker, fn string) workerapi.Instance {
	t.Helper()
	in, err := w.StartInstance(ctxFor(t), workerapi.InstanceSpec{Function: fn, Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	ready, err := w.WaitInstance(ctxFor(t), in.ID)
	if err != nil {
		t.Fatal(err)
	}
	return ready
}

// stub is a worker whose calls a test programs; what it does not program
// is the fake's.
type stub struct {
	*fake.Worker
	checkImage func(ctx context.Context, name string) error
	invoke     func(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error)
	waitInst   func(ctx context.Context, id string) (workerapi.Instance, error)
	importImg  func(ctx context.Context, name string, r io.Reader) (workerapi.Image, error)
}

func (s *stub) CheckImage(ctx context.Context, name string) error {
	if s.checkImage != nil {
		return s.checkImage(ctx, name)
	}
	return s.Worker.CheckImage(ctx, name)
}

func (s *stub) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if s.invoke != nil {
		return s.invoke(ctx, id, inv)
	}
	return s.Worker.Invoke(ctx, id, inv)
}

func (s *stub) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	if s.waitInst != nil {
		return s.waitInst(ctx, id)
	}
	return s.Worker.WaitInstance(ctx, id)
}

func (s *stub) ImportImage(ctx context.Context, name string, r io.Reader) (workerapi.Image, error) {
	if s.importImg != nil {
		return s.importImg(ctx, name, r)
	}
	return s.Worker.ImportImage(ctx, name, r)
}

var sentinels = []error{workerapi.ErrUnknownInstance, workerapi.ErrNoImageStore, workerapi.ErrImageNotFound,
	workerapi.ErrImageInUse, workerapi.ErrWorkerUnavailable, context.Canceled, context.DeadlineExceeded}

// An error crosses the wire with its class and code, the workerapi
// sentinels it wraps, and the Failure or InitError it carries.
func TestErrorsCrossTheWire(t *testing.T) {
	foreign := errdefs.New(errdefs.TooLarge, "code_too_large", "code archive is over a size limit")
	failure := &workerapi.Failure{Kind: workerapi.FailureCrash, Message: "exit status 3", Logs: []byte("Traceback"), LogsTruncated: true}
	initErr := &workerapi.InitError{Err: workerapi.FunctionError{Type: "ImportError", Message: "no module", StackTrace: []string{"a", "b"}}, Logs: []byte("log")}
	cases := map[string]error{
		"bare sentinel":       workerapi.ErrImageNotFound,
		"wrapped sentinel":    fmt.Errorf("image %q: %w", "x", workerapi.ErrImageNotFound),
		"in use":              fmt.Errorf("remove image x: %w: used by function(s) [f]", workerapi.ErrImageInUse),
		"no image store":      fmt.Errorf("images: %w", workerapi.ErrNoImageStore),
		"unknown instance":    fmt.Errorf("instance i-1: %w", workerapi.ErrUnknownInstance),
		"worker unavailable":  fmt.Errorf("start instance: %w", workerapi.ErrWorkerUnavailable),
		"two sentinels":       fmt.Errorf("%w: %w", foreign, workerapi.ErrImageInUse),
		"foreign sentinel":    fmt.Errorf("build code: %w", foreign),
		"unclassified":        errors.New("disk on fire"),
		"bare failure":        failure,
		"wrapped failure":     fmt.Errorf("invoke: %w", &workerapi.Failure{Kind: workerapi.FailureTimeout, Message: "timed out"}),
		"bare init error":     initErr,
		"wrapped init error":  fmt.Errorf("start: %w", initErr),
		"a deadline (worker)": fmt.Errorf("fetch code: %w", context.DeadlineExceeded),
	}
	w := &stub{Worker: newFake(t)}
	w.checkImage = func(_ context.Context, name string) error { return cases[name] }
	c := remotetest.Loopback(t, w)
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			got := c.CheckImage(ctxFor(t), name)
			if got == nil {
				t.Fatal("no error")
			}
			wc, wcode := errdefs.Classify(want)
			if gc, gcode := errdefs.Classify(got); gc != wc || gcode != wcode {
				t.Errorf("Classify(%v) = %s/%s, want %s/%s", got, gc, gcode, wc, wcode)
			}
			for _, s := range sentinels {
				if errors.Is(got, s) != errors.Is(want, s) {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", got, s, errors.Is(got, s), errors.Is(want, s))
				}
			}
			var wf, gf *workerapi.Failure
			if errors.As(want, &wf) != errors.As(got, &gf) || !reflect.DeepEqual(wf, gf) {
				t.Errorf("Failure: got %+v, want %+v", gf, wf)
			}
			var wi, gi *workerapi.InitError
			if errors.As(want, &wi) != errors.As(got, &gi) || !reflect.DeepEqual(wi, gi) {
				t.Errorf("InitError: got %+v, want %+v", gi, wi)
			}
			if errors.Is(got, workerapi.ErrWorkerUnavailable) != errors.Is(want, workerapi.ErrWorkerUnavailable) {
				t.Error("a worker's own error taken for a transport failure, or the other way round")
			}
		})
	}
	// What the worker returned bare comes back as itself, for callers
	// that compare or type-assert.
	if err := c.CheckImage(ctxFor(t), "bare sentinel"); err != workerapi.ErrImageNotFound {
		t.Errorf("a bare sentinel came back as %#v", err)
	}
	if _, ok := c.CheckImage(ctxFor(t), "bare failure").(*workerapi.Failure); !ok {
		t.Error("a bare *Failure did not come back as one")
	}
	if _, ok := c.CheckImage(ctxFor(t), "bare init error").(*workerapi.InitError); !ok {
		t.Error("a bare *InitError did not come back as one")
	}
}

// A failed invocation's result (how long it ran) comes with its failure.
func TestInvokeFailureKeepsItsResult(t *testing.T) {
	w := &stub{Worker: newFake(t)}
	w.invoke = func(context.Context, string, workerapi.Invocation) (workerapi.Result, error) {
		return workerapi.Result{Duration: 1234 * time.Millisecond}, &workerapi.Failure{Kind: workerapi.FailureOutOfMemory, Message: "oom"}
	}
	c := remotetest.Loopback(t, w)
	res, err := c.Invoke(ctxFor(t), "i-1", workerapi.Invocation{ID: "1"})
	var f *workerapi.Failure
	if !errors.As(err, &f) || f.Kind != workerapi.FailureOutOfMemory || res.Duration != 1234*time.Millisecond {
		t.Fatalf("Invoke: %+v, %v; want an out-of-memory failure after 1.234s", res, err)
	}
}

// An invocation that outlives the caller's deadline is the worker's
// timeout failure (as in process), not a lost call: the client waits for
// the worker's answer a little past the deadline.
func TestInvokeTimeoutIsTheWorkers(t *testing.T) {
	w := newFake(t)
	w.SetBehaviour("slow", fake.Behaviour{Sleep: time.Hour})
	c := remotetest.Loopback(t, w)
	in := readyInstance(t, w, "slow")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Invoke(ctx, in.ID, workerapi.Invocation{ID: "1", Payload: []byte("{}"), Deadline: time.Now().Add(200 * time.Millisecond)})
	var f *workerapi.Failure
	if !errors.As(err, &f) || f.Kind != workerapi.FailureTimeout || errors.Is(err, workerapi.ErrWorkerUnavailable) {
		t.Fatalf("Invoke past its deadline: %v; want the worker's timeout failure", err)
	}
	if class, _ := errdefs.Classify(err); class != errdefs.Timeout {
		t.Errorf("class %s, want %s", class, errdefs.Timeout)
	}
}

// blocking is a worker whose Invoke and WaitInstance block until their
// context ends, reporting that they began and that their context ended.
func blocking(t *testing.T) (w *stub, entered, ended chan string) {
	entered, ended = make(chan string, 8), make(chan string, 8)
	w = &stub{Worker: newFake(t)}
	block := func(ctx context.Context, call string) {
		entered <- call
		<-ctx.Done()
		ended <- call
	}
	w.invoke = func(ctx context.Context, _ string, _ workerapi.Invocation) (workerapi.Result, error) {
		block(ctx, "invoke")
		return workerapi.Result{}, &workerapi.Failure{Kind: workerapi.FailureInstanceGone, Message: "cancelled"}
	}
	w.waitInst = func(ctx context.Context, _ string) (workerapi.Instance, error) {
		block(ctx, "wait")
		return workerapi.Instance{}, ctx.Err()
	}
	return w, entered, ended
}

func receive(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	case <-time.After(wait):
		t.Fatalf("no %s within %s", want, wait)
	}
}

// Cancelling the caller's context cancels the call on the worker.
func TestCancelCancelsTheRemoteCall(t *testing.T) {
	w, entered, ended := blocking(t)
	c := remotetest.Loopback(t, w)
	for _, call := range []string{"invoke", "wait"} {
		t.Run(call, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				var err error
				if call == "invoke" {
					_, err = c.Invoke(ctx, "i-1", workerapi.Invocation{ID: "1"})
				} else {
					_, err = c.WaitInstance(ctx, "i-1")
				}
				done <- err
			}()
			receive(t, entered, call)
			cancel()
			receive(t, ended, call)
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("%s after the caller cancelled: %v; want context.Canceled", call, err)
				}
			case <-time.After(wait):
				t.Fatalf("%s did not return after the caller cancelled", call)
			}
		})
	}
}

// A worker that dies under a running invocation fails it at once with an
// error the control plane recognises as a lost worker (and a Failure
// saying the event may have run), not a hang.
func TestServerDiesMidInvoke(t *testing.T) {
	w, entered, _ := blocking(t)
	p := remotetest.NewPKI(t)
	served := remotetest.Serve(t, w, p, "127.0.0.1:0")
	c := remotetest.Dial(t, served.Addr, p)
	done := make(chan error, 1)
	go func() {
		_, err := c.Invoke(context.Background(), "i-1", workerapi.Invocation{ID: "1"})
		done <- err
	}()
	receive(t, entered, "invoke")
	served.Kill()
	var err error
	select {
	case err = <-done:
	case <-time.After(wait):
		t.Fatal("Invoke hangs after its worker died")
	}
	if !errors.Is(err, workerapi.ErrWorkerUnavailable) {
		t.Fatalf("Invoke on a worker that died: %v; want ErrWorkerUnavailable", err)
	}
	if class, code := errdefs.Classify(err); class != errdefs.Unavailable || code != "worker_unavailable" {
		t.Errorf("classified %s/%s, want unavailable/worker_unavailable", class, code)
	}
	var f *workerapi.Failure
	if !errors.As(err, &f) || f.Kind != workerapi.FailureWorkerLost {
		t.Errorf("Invoke on a worker that died: %v; want a %s Failure (the event may have run)", err, workerapi.FailureWorkerLost)
	}

	// A call to a worker that is gone never reached it: the event may run
	// elsewhere.
	_, err = c.Invoke(ctxFor(t), "i-1", workerapi.Invocation{ID: "2"})
	if !errors.Is(err, workerapi.ErrWorkerUnavailable) || !errors.As(err, &f) || f.Kind != workerapi.FailureNotDelivered {
		t.Errorf("Invoke on a worker that is gone: %v; want ErrWorkerUnavailable and a %s Failure", err, workerapi.FailureNotDelivered)
	}
	if _, err := c.Info(ctxFor(t)); !errors.Is(err, workerapi.ErrWorkerUnavailable) {
		t.Errorf("Info of a worker that is gone: %v; want ErrWorkerUnavailable", err)
	}
}

// An event stream ends cleanly when the worker's server stops, and resumes
// after the last Seq seen once it is back, without losing the events
// that happened meanwhile.
func TestEventsResumeAfterRestart(t *testing.T) {
	w := newFake(t)
	p := remotetest.NewPKI(t)
	served := remotetest.Serve(t, w, p, "127.0.0.1:0")
	c := remotetest.Dial(t, served.Addr, p)
	ch, err := c.Events(ctxFor(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	first := readyInstance(t, w, "f")
	var last workerapi.Event
	select {
	case last = <-ch:
	case <-time.After(wait):
		t.Fatal("no event")
	}
	if last.Kind != workerapi.InstanceReady || last.Instance != first.ID {
		t.Fatalf("event %+v; want instance-ready of %s", last, first.ID)
	}
	served.Stop()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("event %+v after the server stopped; want the stream closed", ev)
		}
	case <-time.After(wait):
		t.Fatal("the stream stayed open after the server stopped")
	}
	// While the server is down the worker goes on.
	second := readyInstance(t, w, "f")
	remotetest.Serve(t, w, p, served.Addr)
	var resumed <-chan workerapi.Event
	eventually(t, "the stream resumes", func() bool {
		resumed, err = c.Events(ctxFor(t), last.Seq)
		return err == nil
	})
	select {
	case ev := <-resumed:
		if ev.Kind != workerapi.InstanceReady || ev.Instance != second.ID || ev.Seq != last.Seq+1 {
			t.Fatalf("resumed after %d: %+v; want instance-ready of %s with Seq %d", last.Seq, ev, second.ID, last.Seq+1)
		}
	case <-time.After(wait):
		t.Fatal("no event after resuming")
	}
}

// ImportImage streams the archive: the worker reads its first megabytes
// before the caller has produced the rest.
func TestImportImageStreams(t *testing.T) {
	var received atomic.Int64
	w := &stub{Worker: newFake(t)}
	w.importImg = func(_ context.Context, name string, r io.Reader) (workerapi.Image, error) {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			h.Write(buf[:n])
			received.Add(int64(n))
			if errors.Is(err, io.EOF) {
				return workerapi.Image{Name: name, ID: fmt.Sprintf("sha256:%x", h.Sum(nil)), Size: received.Load()}, nil
			}
			if err != nil {
				return workerapi.Image{}, err
			}
		}
	}
	c := remotetest.Loopback(t, w)
	const block, blocks = 1 << 20, 12
	pr, pw := io.Pipe()
	h := sha256.New()
	go func() {
		for i := range blocks {
			b := bytes.Repeat([]byte{byte(i)}, block)
			b[0] = 0xfe
			h.Write(b)
			if _, err := pw.Write(b); err != nil {
				return
			}
			// The next block only once the worker has this one: a client
			// that read the whole archive before sending never gets here.
			deadline := time.Now().Add(wait)
			for received.Load() < int64((i+1)*block) {
				if time.Now().After(deadline) {
					pw.CloseWithError(fmt.Errorf("the worker did not receive block %d before the rest was sent", i))
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		pw.Close()
	}()
	img, err := c.ImportImage(ctxFor(t), "big", pr)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("sha256:%x", h.Sum(nil)); img.ID != want || img.Size != block*blocks || img.Name != "big" {
		t.Fatalf("imported %+v; want %s of %d bytes", img, want, block*blocks)
	}
}

// A worker that refuses an import after its first bytes ends the call: the
// client does not go on sending, and gets the worker's error.
func TestImportImageRefusedMidway(t *testing.T) {
	w := &stub{Worker: newFake(t)}
	readErr := make(chan error, 1)
	w.importImg = func(_ context.Context, name string, r io.Reader) (workerapi.Image, error) {
		if name == "broken" {
			_, err := io.Copy(io.Discard, r)
			readErr <- err
			return workerapi.Image{Name: name}, err
		}
		if _, err := r.Read(make([]byte, 10)); err != nil {
			return workerapi.Image{}, err
		}
		return workerapi.Image{}, fmt.Errorf("import %s: %w", name, workerapi.ErrImageInUse)
	}
	c := remotetest.Loopback(t, w)
	_, err := c.ImportImage(ctxFor(t), "big", bytes.NewReader(make([]byte, 64<<20)))
	if !errors.Is(err, workerapi.ErrImageInUse) {
		t.Fatalf("ImportImage refused midway: %v; want the worker's ErrImageInUse", err)
	}
	// An archive that cannot be read aborts the import.
	_, err = c.ImportImage(ctxFor(t), "broken", io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), errReader{}))
	if err == nil || !errors.Is(err, errBrokenArchive) {
		t.Fatalf("ImportImage of an unreadable archive: %v; want the read error", err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the worker read a complete archive; want the import aborted")
		}
	case <-time.After(wait):
		t.Fatal("the worker's import was not aborted")
	}
}

var errBrokenArchive = errors.New("broken archive")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBrokenArchive }

// The client needs a TLS configuration, and the server one that
// authenticates its clients.
func TestConstructorsRefuseNoTLS(t *testing.T) {
	if _, err := remote.Dial("127.0.0.1:1", nil, remote.ClientOptions{}); err == nil {
		t.Error("a client without TLS")
	}
	p := remotetest.NewPKI(t)
	open := p.ServerTLS(t)
	open.ClientAuth = 0
	if _, err := remote.NewServer(newFake(t), open, remote.ServerOptions{}); err == nil {
		t.Error("a server that does not require client certificates")
	}
	if _, err := remote.NewServer(newFake(t), nil, remote.ServerOptions{}); err == nil {
		t.Error("a server without TLS")
	}
}

// A server that stops lets invocations in flight finish, and ends the
// calls that wait without bound (WaitInstance) with ErrWorkerUnavailable
// rather than holding the stop.
func TestStopFinishesInvocationsAndEndsWaits(t *testing.T) {
	f := newFake(t)
	f.SetBehaviour("slow-start", fake.Behaviour{StartLatency: time.Hour})
	f.SetBehaviour("slow", fake.Behaviour{Sleep: 300 * time.Millisecond})
	entered := make(chan string, 2)
	w := &stub{Worker: f}
	w.invoke = func(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
		entered <- "invoke"
		return f.Invoke(ctx, id, inv)
	}
	w.waitInst = func(ctx context.Context, id string) (workerapi.Instance, error) {
		entered <- "wait"
		return f.WaitInstance(ctx, id)
	}
	p := remotetest.NewPKI(t)
	served := remotetest.Serve(t, w, p, "127.0.0.1:0")
	c := remotetest.Dial(t, served.Addr, p)
	starting, err := c.StartInstance(ctxFor(t), workerapi.InstanceSpec{Function: "slow-start", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	slow := readyInstance(t, f, "slow")
	waited, invoked := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := c.WaitInstance(ctxFor(t), starting.ID)
		waited <- err
	}()
	receive(t, entered, "wait")
	go func() {
		_, err := c.Invoke(ctxFor(t), slow.ID, workerapi.Invocation{ID: "1", Payload: []byte("{}")})
		invoked <- err
	}()
	receive(t, entered, "invoke")
	served.Stop()
	for name, ch := range map[string]chan error{"WaitInstance": waited, "Invoke": invoked} {
		select {
		case err := <-ch:
			if name == "Invoke" && err != nil {
				t.Errorf("an invocation in flight when the server stopped: %v; want it finished", err)
			}
			if name == "WaitInstance" && !errors.Is(err, workerapi.ErrWorkerUnavailable) {
				t.Errorf("WaitInstance when the server stopped: %v; want ErrWorkerUnavailable", err)
			}
		case <-time.After(wait):
			t.Fatalf("%s did not return after the server stopped", name)
		}
	}
}

// A worker that does not answer (hung, or its host cut off) fails the call
// once the caller's deadline and the client's grace for the answer have
// passed: ErrWorkerUnavailable, with the deadline as the cause.
func TestUnansweredInvokeFailsAfterItsDeadline(t *testing.T) {
	hung := make(chan struct{})
	w := &stub{Worker: newFake(t)}
	w.invoke = func(context.Context, string, workerapi.Invocation) (workerapi.Result, error) {
		<-hung // ignores its context, like a worker that stopped answering
		return workerapi.Result{}, nil
	}
	p := remotetest.NewPKI(t)
	served := remotetest.Serve(t, w, p, "127.0.0.1:0")
	t.Cleanup(func() { close(hung) }) // before the server's stop
	c, err := remote.Dial(served.Addr, p.ClientTLS(t), remote.ClientOptions{AnswerGrace: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Invoke(ctx, "i-1", workerapi.Invocation{ID: "1"})
	var f *workerapi.Failure
	if !errors.Is(err, workerapi.ErrWorkerUnavailable) || !errors.Is(err, context.DeadlineExceeded) ||
		!errors.As(err, &f) || f.Kind != workerapi.FailureWorkerLost {
		t.Fatalf("Invoke that got no answer: %v; want ErrWorkerUnavailable, the deadline, and a worker Failure", err)
	}
}
