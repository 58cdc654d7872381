package baseimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/runtimes"
)

// fakeBuilds stands in for Build: each runtime's image is a one-file tar
// naming the runtime and its generation; a runtime listed in hold blocks
// its build after half the tar until released (or the build's context
// ends); one listed in missing has no interpreter.
type fakeBuilds struct {
	mu         sync.Mutex
	calls      map[Runtime]int
	generation map[Runtime]int
	hold       map[Runtime]chan struct{}
	missing    map[Runtime]bool
	failOnce   map[Runtime]bool
	// midway gets the runtime of each build that blocks on hold.
	midway chan Runtime
}

func newFakeBuilds() *fakeBuilds {
	return &fakeBuilds{calls: map[Runtime]int{}, generation: map[Runtime]int{}, hold: map[Runtime]chan struct{}{},
		missing: map[Runtime]bool{}, failOnce: map[Runtime]bool{}, midway: make(chan Runtime, 16)}
}

func (f *fakeBuilds) holdBuild(rt Runtime) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.hold[rt] = ch
	return func() { close(ch) }
}

func (f *fakeBuilds) count(rt Runtime) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[rt]
}

func (f *fakeBuilds) build(ctx context.Context, rt Runtime, w io.Writer, o buildOptions) (Info, error) {
	if o.pause != nil {
		if err := o.pause(); err != nil {
			return Info{}, err
		}
	}
	f.mu.Lock()
	f.calls[rt]++
	hold, missing, fail, gen := f.hold[rt], f.missing[rt], f.failOnce[rt], f.generation[rt]
	delete(f.failOnce, rt)
	f.mu.Unlock()
	if missing {
		return Info{}, ErrNoInterpreter
	}
	if fail {
		return Info{}, errors.New("disk full")
	}
	data := fakeTar(rt, gen)
	h := sha256.Sum256(data)
	info := Info{Runtime: rt, Interpreter: "/usr/bin/" + string(rt), Version: "test", Files: 1,
		Bytes: int64(len(data)), Digest: "sha256:" + hex.EncodeToString(h[:])}
	half := len(data) / 2
	if _, err := w.Write(data[:half]); err != nil {
		return Info{}, err
	}
	if hold != nil {
		f.midway <- rt
		select {
		case <-hold:
		case <-ctx.Done():
			return Info{}, ctx.Err()
		}
	}
	if _, err := w.Write(data[half:]); err != nil {
		return Info{}, err
	}
	return info, nil
}

// fakeTar is a deterministic one-file layer.
func fakeTar(rt Runtime, gen int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := bytes.Repeat([]byte(string(rt)+string(rune('a'+gen))), 4096)
	_ = tw.WriteHeader(&tar.Header{Name: "usr/bin/" + string(rt), Mode: 0o755, Size: int64(len(content)),
		ModTime: Epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX})
	_, _ = tw.Write(content)
	_ = tw.Close()
	return buf.Bytes()
}

func openStore(t *testing.T, dir string) *image.Store {
	t.Helper()
	s, err := image.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestCache(t *testing.T) (*Cache, *fakeBuilds, *image.Store) {
	t.Helper()
	store := openStore(t, filepath.Join(t.TempDir(), "images"))
	c := NewCache(store, nil)
	f := newFakeBuilds()
	c.build = f.build
	t.Cleanup(func() {
		c.Close()
		store.Close()
	})
	return c, f, store
}

func waitMidway(t *testing.T, f *fakeBuilds, want Runtime) {
	t.Helper()
	select {
	case rt := <-f.midway:
		if rt != want {
			t.Fatalf("build of %s blocked, want %s", rt, want)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the build of %s never started", want)
	}
}

// Concurrent first starts of one runtime share one build.
func TestCacheSharesOneBuild(t *testing.T) {
	c, f, _ := newTestCache(t)
	release := f.holdBuild(Python)
	ctx := context.Background()
	const callers = 8
	imgs := make([]image.Image, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs[i], errs[i] = c.Get(ctx, Python)
		}()
	}
	waitMidway(t, f, Python)
	release()
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || imgs[i].ID == "" || imgs[i].ID != imgs[0].ID {
			t.Fatalf("caller %d: %+v, %v; caller 0 got %s", i, imgs[i], errs[i], imgs[0].ID)
		}
	}
	if n := f.count(Python); n != 1 {
		t.Fatalf("%d builds of %s, want 1", n, Python)
	}
	if got := c.Started(); !slices.Equal(got, []Runtime{Python}) {
		t.Fatalf("Started() = %v, want [%s]", got, Python)
	}
	// Built: later calls answer from memory.
	if _, err := c.Get(ctx, Python); err != nil || f.count(Python) != 1 {
		t.Fatalf("a later Get: %v, %d builds", err, f.count(Python))
	}
}

// One runtime's build never waits for another's.
func TestCacheRuntimesIndependent(t *testing.T) {
	c, f, _ := newTestCache(t)
	release := f.holdBuild(Node)
	defer release()
	c.Prepare(Node, Python) // Node first, and it does not finish
	waitMidway(t, f, Node)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := c.Get(ctx, Python)
	if err != nil || img.Name != ImageName(Python) {
		t.Fatalf("Get(%s) while %s's build is held: %+v, %v", Python, Node, img, err)
	}
	if got := c.Started(); !slices.Equal(got, []Runtime{Node, Python}) {
		t.Fatalf("Started() = %v, want [%s %s]", got, Node, Python)
	}
}

// A caller that stops waiting leaves the build to finish for the next.
func TestCacheCallerStopsWaiting(t *testing.T) {
	c, f, _ := newTestCache(t)
	release := f.holdBuild(Python)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, Python)
		done <- err
	}()
	waitMidway(t, f, Python)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after its context ended: %v, want context.Canceled", err)
	}
	release()
	if _, err := c.Get(context.Background(), Python); err != nil {
		t.Fatal(err)
	}
	if n := f.count(Python); n != 1 {
		t.Fatalf("%d builds, want the one the first caller started", n)
	}
}

// A failed build is not kept: the next caller builds again.
func TestCacheRetriesAfterFailure(t *testing.T) {
	c, f, _ := newTestCache(t)
	f.failOnce[Python] = true
	ctx := context.Background()
	if _, err := c.Get(ctx, Python); err == nil {
		t.Fatal("the failing build succeeded")
	}
	if _, err := c.Get(ctx, Python); err != nil {
		t.Fatalf("the build after a failure: %v", err)
	}
	f.missing[Node] = true
	if _, err := c.Get(ctx, Node); !errors.Is(err, ErrNoInterpreter) {
		t.Fatalf("a runtime without interpreter: %v, want ErrNoInterpreter", err)
	}
}

// Forget (after the image was removed from the store) builds it again.
func TestCacheForget(t *testing.T) {
	c, f, store := newTestCache(t)
	ctx := context.Background()
	img, err := c.Get(ctx, Python)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Remove(img.Name, nil); err != nil {
		t.Fatal(err)
	}
	c.Forget(img.Name)
	if _, err := c.Get(ctx, Python); err != nil || f.count(Python) != 2 {
		t.Fatalf("Get after Forget: %v, %d builds, want 2", err, f.count(Python))
	}
	if _, err := store.Get(img.Name); err != nil {
		t.Fatalf("the image was not stored again: %v", err)
	}
}

// A stored image is kept while the host gives the same layer and replaced
// when it changed.
func TestEnsureKeepsCurrentImage(t *testing.T) {
	store := openStore(t, filepath.Join(t.TempDir(), "images"))
	defer store.Close()
	f := newFakeBuilds()
	ctx := context.Background()
	first, stored, err := ensure(ctx, store, Python, f.build, nil)
	if err != nil || !stored {
		t.Fatalf("first ensure: stored %v, %v", stored, err)
	}
	again, stored, err := ensure(ctx, store, Python, f.build, nil)
	if err != nil || stored || again.ID != first.ID {
		t.Fatalf("ensure of an unchanged host: stored %v, %v, image %s want %s", stored, err, again.ID, first.ID)
	}
	f.generation[Python] = 1 // the host's interpreter changed
	changed, stored, err := ensure(ctx, store, Python, f.build, nil)
	if err != nil || !stored || changed.Layers[0] == first.Layers[0] {
		t.Fatalf("ensure of a changed host: stored %v, %v, layers %v then %v", stored, err, first.Layers, changed.Layers)
	}
}

// Close stops a build midway and waits for it; the store, opened again as
// after a restart, lists no image and keeps no part of it.
func TestCacheCloseStopsBuilds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	store := openStore(t, dir)
	before := runtime.NumGoroutine()
	c := NewCache(store, nil)
	f := newFakeBuilds()
	c.build = f.build
	f.holdBuild(Python) // never released: only Close ends it
	c.Prepare(Python, Node)
	waitMidway(t, f, Python)

	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("Close did not return while a build was held")
	}
	if f.count(Node) != 0 {
		t.Errorf("Prepare went on to %s after Close", Node)
	}
	if _, err := c.Get(context.Background(), Python); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	waitGoroutines(t, before)
	store.Close()
	checkNoImage(t, dir)
}

// The same with a real build: held after its first write until Close, it
// goes on with its context ended and must stop there.
func TestCacheCloseStopsRealBuild(t *testing.T) {
	if runtimes.Python() == "" {
		t.Skip("no python3 on this host")
	}
	dir := filepath.Join(t.TempDir(), "images")
	store := openStore(t, dir)
	c := NewCache(store, nil)
	writing := make(chan struct{})
	var once sync.Once
	c.build = func(ctx context.Context, rt Runtime, w io.Writer, o buildOptions) (Info, error) {
		return build(ctx, rt, writerFunc(func(p []byte) (int, error) {
			once.Do(func() {
				close(writing)
				<-ctx.Done()
			})
			return w.Write(p)
		}), o)
	}
	c.Prepare(Python)
	<-writing
	c.Close()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoImage(t, dir)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// checkNoImage opens the store in dir as a restarted server would and
// checks that it lists no image and holds no layer or temporary file: a
// stopped build left nothing behind, broken or whole.
func checkNoImage(t *testing.T, dir string) {
	t.Helper()
	store := openStore(t, dir)
	defer store.Close()
	imgs, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) > 0 {
		t.Fatalf("the store lists %d image(s) after a stopped build: %+v", len(imgs), imgs)
	}
	layers, err := store.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) > 0 {
		t.Fatalf("the store holds layers after a stopped build: %+v", layers)
	}
	for _, sub := range []string{"tmp", filepath.Join("layers", "sha256")} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) > 0 {
			t.Fatalf("%s holds %d file(s) after a stopped build, e.g. %s", sub, len(ents), ents[0].Name())
		}
	}
}

// waitGoroutines waits until no more goroutines run than before: none of
// the cache's is left.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Prepare builds one runtime after the other, in the order given,
// skipping those without an interpreter.
func TestCachePrepareInOrder(t *testing.T) {
	c, f, store := newTestCache(t)
	f.missing[Node] = true
	c.Prepare(Provided, Node, Python)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := store.Get(ImageName(Python)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Prepare did not build the last runtime")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.Started(); !slices.Equal(got, []Runtime{Provided, Node, Python}) {
		t.Fatalf("Started() = %v, want [%s %s %s]", got, Provided, Node, Python)
	}
	if _, err := store.Get(ImageName(Node)); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("an image for the runtime without interpreter: %v", err)
	}
}

// While the cache is held, builds nobody waits for do not run; one a
// caller waits for does, and the others go on once the hold is released.
func TestCacheHoldPausesUnwantedBuilds(t *testing.T) {
	c, f, store := newTestCache(t)
	release := c.Hold()
	c.Prepare(Node)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Get(ctx, Python); err != nil {
		t.Fatalf("a build a caller waits for, while the cache is held: %v", err)
	}
	if n := f.count(Node); n != 0 {
		t.Fatalf("%s's build ran %d time(s) while the cache was held", Node, n)
	}
	release()
	release() // a second call changes nothing
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := store.Get(ImageName(Node)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's build did not go on after the hold was released", Node)
		}
	}
}

// A build under way that nobody waits for, held at its next write while
// the cache is held, goes on when a caller waits for it.
func TestCacheHoldPausesBuildUnderWay(t *testing.T) {
	c, f, _ := newTestCache(t)
	unblock := f.holdBuild(Python)
	c.Prepare(Python)
	waitMidway(t, f, Python)
	release := c.Hold()
	defer release()
	unblock() // its next write now waits for the hold
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Get(ctx, Python); err != nil {
		t.Fatalf("waiting for a paused build: %v", err)
	}
	if n := f.count(Python); n != 1 {
		t.Fatalf("%d builds, want the paused one finished", n)
	}
}

// GetAll runs its builds side by side, each with a waiter, so that a hold
// (the start that asked for them) pauses none of them.
func TestCacheGetAllSideBySide(t *testing.T) {
	c, f, _ := newTestCache(t)
	release := c.Hold()
	defer release()
	unblockPy, unblockSh := f.holdBuild(Python), f.holdBuild(Provided)
	type got struct {
		imgs []image.Image
		errs []error
	}
	done := make(chan got, 1)
	go func() {
		imgs, errs := c.GetAll(context.Background(), Python, Provided)
		done <- got{imgs, errs}
	}()
	// Both reach their middle before either may finish: side by side.
	seen := map[Runtime]bool{}
	for range 2 {
		select {
		case rt := <-f.midway:
			seen[rt] = true
		case <-time.After(time.Minute):
			t.Fatalf("only %v of the builds got under way", seen)
		}
	}
	unblockPy()
	unblockSh()
	g := <-done
	for i, rt := range []Runtime{Python, Provided} {
		if g.errs[i] != nil || g.imgs[i].Name != ImageName(rt) {
			t.Fatalf("GetAll: %s: %+v, %v", rt, g.imgs[i], g.errs[i])
		}
	}
}

// A real image streamed into the store is found current by the check a
// restart makes (the builder's hash of the tar is the store's diffID), so
// a restart does not build it again.
func TestEnsureRealImageKeptAcrossRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "images")
	store := openStore(t, dir)
	ctx := context.Background()
	first, stored, err := ensure(ctx, store, Provided, build, nil)
	if errors.Is(err, ErrNoInterpreter) {
		store.Close()
		t.Skipf("this host cannot build the shell's image: %v", err)
	}
	if err != nil || !stored {
		t.Fatalf("first ensure: stored %v, %v", stored, err)
	}
	store.Close()
	store = openStore(t, dir) // the next run
	defer store.Close()
	again, stored, err := ensure(ctx, store, Provided, build, nil)
	if err != nil || stored || again.ID != first.ID {
		t.Fatalf("ensure after a restart: stored %v, %v, image %s want %s", stored, err, again.ID, first.ID)
	}
}
