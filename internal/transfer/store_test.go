package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for expiry tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestStore(t *testing.T, mem, spill int64, clk *clock) *Store {
	t.Helper()
	dir := ""
	if spill > 0 {
		dir = filepath.Join(t.TempDir(), "spill")
	}
	s, err := NewStore(StoreConfig{MemoryBytes: mem, SpillDir: dir, SpillBytes: spill, TTL: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refFor is the reference an exchange would sign for k (MAC unchecked by
// the store).
func refFor(k Kept, app string, pulls int) Ref {
	return Ref{Worker: "w", ID: k.ID, Size: k.Size, Digest: k.Digest, Expires: k.Expires.UnixMilli(), App: app, Pulls: pulls}
}

func readPull(t *testing.T, p *Pull) []byte {
	t.Helper()
	rc, err := p.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStoreBoundsMemoryAndSpills(t *testing.T) {
	clk := &clock{now: t0}
	s := newTestStore(t, 1000, 1500, clk)
	a := bytes.Repeat([]byte("a"), 800)
	ka, err := s.Put("app", a)
	if err != nil || ka.Spilled {
		t.Fatalf("first buffer: %+v %v, want in memory", ka, err)
	}
	b := bytes.Repeat([]byte("b"), 800)
	kb, err := s.Put("app", b)
	if err != nil || !kb.Spilled {
		t.Fatalf("second buffer over the memory bound: %+v %v, want spilled", kb, err)
	}
	if _, err := s.Put("app", bytes.Repeat([]byte("c"), 800)); !errors.Is(err, ErrFull) {
		t.Fatalf("third buffer over both bounds: %v, want ErrFull", err)
	}
	if n, mem, spill := s.Usage(); n != 2 || mem != 800 || spill != 800 {
		t.Fatalf("usage %d buffers, %d in memory, %d spilled", n, mem, spill)
	}
	pb, err := s.Take(refFor(kb, "app", 1))
	if err != nil {
		t.Fatal(err)
	}
	if pb.Bytes() != nil {
		t.Fatal("a spilled buffer claims to be in memory")
	}
	if got := readPull(t, pb); !bytes.Equal(got, b) {
		t.Fatal("the spilled buffer reads back different bytes")
	}
	pb.Close()
	files, _ := os.ReadDir(s.cfg.SpillDir)
	if len(files) != 0 {
		t.Fatalf("%d spill files left after the buffer's only pull", len(files))
	}
	if n, mem, spill := s.Usage(); n != 1 || mem != 800 || spill != 0 {
		t.Fatalf("after the pull: %d buffers, %d in memory, %d spilled", n, mem, spill)
	}
	// The room is back.
	if _, err := s.Put("app", bytes.Repeat([]byte("d"), 800)); err != nil {
		t.Fatalf("after freeing the spilled buffer: %v", err)
	}
}

func TestStoreWithoutSpillIsFull(t *testing.T) {
	s := newTestStore(t, 10, 0, &clock{now: t0})
	if _, err := s.Put("app", make([]byte, 11)); !errors.Is(err, ErrFull) {
		t.Fatalf("%v, want ErrFull", err)
	}
}

func TestStoreFanOutFreesAfterLastPull(t *testing.T) {
	s := newTestStore(t, 1<<20, 0, &clock{now: t0})
	data := []byte("shared by three receivers")
	k, err := s.Put("app", data)
	if err != nil {
		t.Fatal(err)
	}
	r := refFor(k, "app", 3)
	for i := range 3 {
		p, err := s.Take(r)
		if err != nil {
			t.Fatalf("pull %d of 3: %v", i+1, err)
		}
		if !bytes.Equal(p.Bytes(), data) {
			t.Fatalf("pull %d: wrong bytes", i+1)
		}
		p.Close()
		if n, _, _ := s.Usage(); (i < 2 && n != 1) || (i == 2 && n != 0) {
			t.Fatalf("after pull %d of 3: %d buffers kept", i+1, n)
		}
	}
	if _, err := s.Take(r); !errors.Is(err, ErrSourceLost) {
		t.Fatalf("a fourth pull: %v, want the buffer gone", err)
	}
}

func TestStoreRefusesReplayBeyondCount(t *testing.T) {
	s := newTestStore(t, 1<<20, 0, &clock{now: t0})
	k, _ := s.Put("app", []byte("x"))
	// A copy of a 1-pull reference presented after a 2-pull one was.
	two, one := refFor(k, "app", 2), refFor(k, "app", 1)
	p, err := s.Take(two)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := s.Take(one); !errors.Is(err, ErrReplayed) {
		t.Fatalf("1-pull reference after one pull: %v, want ErrReplayed", err)
	}
}

func TestStoreRefusesMismatchedRef(t *testing.T) {
	s := newTestStore(t, 1<<20, 0, &clock{now: t0})
	k, _ := s.Put("app", []byte("x"))
	r := refFor(k, "other", 1)
	if _, err := s.Take(r); !errors.Is(err, ErrForged) {
		t.Fatalf("reference naming another app than the buffer's: %v, want ErrForged", err)
	}
}

func TestStoreExpiry(t *testing.T) {
	clk := &clock{now: t0}
	s := newTestStore(t, 100, 1000, clk)
	km, _ := s.Put("app", make([]byte, 100))
	ks, _ := s.Put("app", make([]byte, 100))
	if !ks.Spilled {
		t.Fatal("second buffer not spilled")
	}
	clk.Add(time.Minute)
	s.Sweep()
	if n, mem, spill := s.Usage(); n != 0 || mem != 0 || spill != 0 {
		t.Fatalf("after expiry: %d buffers, %d in memory, %d spilled", n, mem, spill)
	}
	if files, _ := os.ReadDir(s.cfg.SpillDir); len(files) != 0 {
		t.Fatalf("%d spill files left after expiry", len(files))
	}
	for _, k := range []Kept{km, ks} {
		if _, err := s.Take(refFor(k, "app", 1)); !errors.Is(err, ErrSourceLost) {
			t.Fatalf("pull after expiry: %v, want ErrSourceLost", err)
		}
	}
}

func TestStoreSpilledFileOutlivesFreeWhileRead(t *testing.T) {
	clk := &clock{now: t0}
	s := newTestStore(t, 0, 1000, clk)
	k, _ := s.Put("app", []byte("spilled"))
	p, err := s.Take(refFor(k, "app", 1)) // frees it: the last pull
	if err != nil {
		t.Fatal(err)
	}
	if got := readPull(t, p); string(got) != "spilled" {
		t.Fatalf("read %q while freed", got)
	}
	p.Close()
	if files, _ := os.ReadDir(s.cfg.SpillDir); len(files) != 0 {
		t.Fatal("spill file kept after its last reader closed")
	}
}

func newTestExchange(t *testing.T, worker string, clk *clock, peers Source) *Exchange {
	t.Helper()
	s, err := NewStore(StoreConfig{MemoryBytes: 1 << 20, TTL: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	x, err := NewExchange(ExchangeConfig{Worker: worker, Addr: worker + ":1", Threshold: 10, Signer: testSigner(t, 7), Store: s, Peers: peers, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// exchangeSource serves another exchange's buffers as a peer would,
// optionally corrupting them on the way.
type exchangeSource struct {
	x       *Exchange
	corrupt bool
}

func (e exchangeSource) Pull(ctx context.Context, r Ref, app string) (io.ReadCloser, error) {
	p, err := e.x.Serve(r, app)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	b := bytes.Clone(p.Bytes())
	if e.corrupt {
		b[0] ^= 1
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestExchangeKeepsOnlyAboveThreshold(t *testing.T) {
	x := newTestExchange(t, "w1", &clock{now: t0}, nil)
	if _, ok := x.Keep("app", []byte("0123456789")); ok {
		t.Fatal("a result at the threshold was kept")
	}
	data := []byte("0123456789!")
	r, ok := x.Keep("app", data)
	if !ok {
		t.Fatal("a result above the threshold was not kept")
	}
	sum := sha256.Sum256(data)
	if r.Size != int64(len(data)) || r.Digest != hex.EncodeToString(sum[:]) || r.Pulls != 1 || r.App != "app" || r.Worker != "w1" {
		t.Fatalf("reference %+v", r)
	}
}

func TestExchangeFetchLocalAndRemote(t *testing.T) {
	clk := &clock{now: t0}
	src := newTestExchange(t, "w1", clk, nil)
	dst := newTestExchange(t, "w2", clk, exchangeSource{x: src})
	data := bytes.Repeat([]byte("payload "), 100)
	r, _ := src.Keep("app", data)
	got, err := dst.Fetch(context.Background(), r, "app")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pull from another worker: %v", err)
	}
	r2, _ := src.Keep("app", data)
	got, err = src.Fetch(context.Background(), r2, "app")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("hand-off on the same worker: %v", err)
	}
	if _, err := src.Fetch(context.Background(), r2, "app"); !errors.Is(err, ErrSourceLost) {
		t.Fatalf("a second pull of a 1-pull buffer: %v, want it gone", err)
	}
}

func TestExchangeDetectsCorruption(t *testing.T) {
	clk := &clock{now: t0}
	src := newTestExchange(t, "w1", clk, nil)
	dst := newTestExchange(t, "w2", clk, exchangeSource{x: src, corrupt: true})
	r, _ := src.Keep("app", bytes.Repeat([]byte("z"), 64))
	if _, err := dst.Fetch(context.Background(), r, "app"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupted bytes: %v, want ErrCorrupt", err)
	}
	// A spilled buffer altered on disk is caught on a local hand-off.
	spill, err := NewStore(StoreConfig{MemoryBytes: 0, SpillDir: filepath.Join(t.TempDir(), "s"), SpillBytes: 1 << 20, TTL: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	x, err := NewExchange(ExchangeConfig{Worker: "w3", Threshold: 10, Signer: testSigner(t, 7), Store: spill, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	r2, ok := x.Keep("app", bytes.Repeat([]byte("y"), 64))
	if !ok {
		t.Fatal("not kept")
	}
	file := filepath.Join(spill.cfg.SpillDir, r2.ID)
	if err := os.WriteFile(file, bytes.Repeat([]byte("x"), 64), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Fetch(context.Background(), r2, "app"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("spilled buffer corrupted on disk: %v, want ErrCorrupt", err)
	}
}

func TestExchangeRefusals(t *testing.T) {
	clk := &clock{now: t0}
	x := newTestExchange(t, "w1", clk, nil)
	r, _ := x.Keep("app", bytes.Repeat([]byte("q"), 64))
	if _, err := x.Fetch(context.Background(), r, "other"); !errors.Is(err, ErrWrongApp) {
		t.Fatalf("another app: %v", err)
	}
	forged := r
	forged.Pulls = 5
	if _, err := x.Fetch(context.Background(), forged, "app"); !errors.Is(err, ErrForged) {
		t.Fatalf("raised pull count: %v", err)
	}
	clk.Add(2 * time.Minute)
	if _, err := x.Fetch(context.Background(), r, "app"); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	// A reference to another worker, which this one cannot reach.
	y := newTestExchange(t, "w2", clk, nil)
	r2, _ := y.Keep("app", bytes.Repeat([]byte("q"), 64))
	if _, err := x.Fetch(context.Background(), r2, "app"); !errors.Is(err, ErrSourceLost) {
		t.Fatalf("unreachable keeper: %v", err)
	}
}

func TestResolvePayloadNested(t *testing.T) {
	clk := &clock{now: t0}
	x := newTestExchange(t, "w1", clk, nil)
	blob := []byte(`{"rows":[1,2,3],"pad":"` + string(bytes.Repeat([]byte("p"), 32)) + `"}`)
	r, _ := x.Keep("app", blob)
	payload := []byte(`{"i":7,"big":1e300,"blob":` + string(Marker(x.cfg.Signer.WithPulls(r, 1))) + `}`)
	got, err := x.Resolve(context.Background(), payload, "app")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"big":1e300,"blob":` + string(blob) + `,"i":7}`
	if string(got) != want {
		t.Fatalf("resolved payload\n%s\nwant\n%s", got, want)
	}
	plain := []byte(`{"a":"b"}`)
	if got, _ := x.Resolve(context.Background(), plain, "app"); !bytes.Equal(got, plain) {
		t.Fatal("a payload without references changed")
	}
}

func TestReadVerifiedSizes(t *testing.T) {
	data := bytes.Repeat([]byte("abc"), 1000)
	sum := sha256.Sum256(data)
	r := Ref{ID: "b", Size: int64(len(data)), Digest: hex.EncodeToString(sum[:])}
	if got, err := ReadVerified(r, bytes.NewReader(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("whole stream: %v", err)
	}
	if _, err := ReadVerified(r, bytes.NewReader(data[:len(data)-1])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short stream: %v, want ErrCorrupt", err)
	}
	if _, err := ReadVerified(r, bytes.NewReader(append(bytes.Clone(data), 'x'))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("long stream: %v, want ErrCorrupt", err)
	}
}

func TestStoreClearsOnlyItsOwnSpillFiles(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "0123456789abcdef0123456789abcdef")
	other := filepath.Join(dir, "operator-notes.txt")
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewStore(StoreConfig{SpillDir: dir, SpillBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a previous run's buffer file is still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("a file that is not a buffer was removed: %v", err)
	}
}
