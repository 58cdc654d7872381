package ownership_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/cluster/ownership"
	"github.com/baton-faas/baton/internal/store/natsd"
)

const (
	interval = 100 * time.Millisecond
	// Six heartbeats: a busy machine may delay a few without a node
	// being declared dead.
	ttl    = 600 * time.Millisecond
	shards = 16
)

// functions has one function name per shard.
var functions = func() []string {
	out := make([]string, shards)
	for i, found := 0, 0; found < shards; i++ {
		name := fmt.Sprintf("fn-%d", i)
		if s := ownership.ShardOf(name, shards); out[s] == "" {
			out[s] = name
			found++
		}
	}
	return out
}()

// ctl is one controller replica: its own NATS connection, membership entry
// and ownership.
type ctl struct {
	id     string
	nc     *nats.Conn
	member *membership.Member
	own    *ownership.Ownership
	// block, when set, makes OnChange wait until it is closed (a stalled
	// controller).
	block atomic.Pointer[chan struct{}]

	mu      sync.Mutex
	gained  map[int]int // shard → times gained
	changes []ownership.Change
}

func startCtl(t *testing.T, s *natsd.Server, id string) *ctl {
	t.Helper()
	return startCtlWith(t, s, id, interval, ttl)
}

// startCtlWith starts a controller with the given heartbeat and TTL (zero:
// the defaults).
func startCtlWith(t *testing.T, s *natsd.Server, id string, interval, ttl time.Duration) *ctl {
	t.Helper()
	nc, js := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	m, err := membership.Open(ctx, js, membership.Config{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	c := &ctl{id: id, nc: nc, gained: map[int]int{}}
	c.member, err = m.Join(ctx, membership.Self{ID: id, Roles: []membership.Role{membership.RoleController}, Address: id + ":8080", Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.member.Close)
	c.own, err = ownership.Start(ctx, ownership.Options{
		JS: js, Members: m, Self: id, Address: id + ":8080", Interval: interval, Shards: shards,
		OnChange: func(ch ownership.Change) {
			if ch := c.block.Load(); ch != nil {
				<-*ch
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			c.changes = append(c.changes, ch)
			for _, s := range ch.Gained {
				c.gained[s]++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.own.Close(context.Background()) })
	return c
}

// stop is a graceful shutdown: hand the shards over, leave.
func (c *ctl) stop(t *testing.T) {
	c.own.Close(clustertest.Context(t))
	if err := c.member.Leave(clustertest.Context(t)); err != nil {
		t.Fatal(err)
	}
}

func (c *ctl) owned() int {
	n := 0
	for _, f := range functions {
		if c.own.Owns(f) {
			n++
		}
	}
	return n
}

// noOverlap checks, as often as it can until the test ends, that no
// function has two owners at once.
func noOverlap(t *testing.T, ctls ...*ctl) {
	stop := make(chan struct{})
	done := make(chan struct{})
	var violations []string
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, f := range functions {
				var owners []string
				for _, c := range ctls {
					if c.own.Owns(f) {
						owners = append(owners, c.id)
					}
				}
				if len(owners) > 1 && len(violations) < 10 {
					violations = append(violations, fmt.Sprintf("%s owned by %v", f, owners))
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		for _, v := range violations {
			t.Errorf("two owners at once: %s", v)
		}
	})
}

// split waits until every function has exactly one owner among ctls and
// each of them owns some.
func split(t *testing.T, ctls ...*ctl) {
	t.Helper()
	clustertest.Eventually(t, "the controllers to split the functions", func() bool {
		total := 0
		for _, c := range ctls {
			n := c.owned()
			if n == 0 {
				return false
			}
			total += n
		}
		return total == len(functions)
	})
}

func TestTwoControllersSplitThenOneTakesOverFromTheDead(t *testing.T) {
	takeOver(t, interval, ttl)
}

// The hand-over at the default heartbeat, for the log: it is bounded by
// the membership TTL (three heartbeats) plus the server's expiry check.
func TestTakeOverAtTheDefaultHeartbeat(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds at the default heartbeat")
	}
	takeOver(t, 0, 0)
}

func takeOver(t *testing.T, interval, ttl time.Duration) {
	s := clustertest.Server(t)
	c1 := startCtlWith(t, s, "c1", interval, ttl)
	c2 := startCtlWith(t, s, "c2", interval, ttl)
	noOverlap(t, c1, c2)
	split(t, c1, c2)
	for _, f := range functions {
		want, wantAddr := "c1", "c1:8080"
		if c2.own.Owns(f) {
			want, wantAddr = "c2", "c2:8080"
		}
		// Both replicas agree on the owner (eventually: the lease watch
		// of the other replica may lag by a moment).
		for _, c := range []*ctl{c1, c2} {
			clustertest.Eventually(t, fmt.Sprintf("%s to name %s as the owner of %s", c.id, want, f), func() bool {
				id, addr, ok := c.own.Owner(f)
				return ok && id == want && addr == wantAddr
			})
		}
	}
	var fromC2 []int
	for s, f := range functions {
		if c2.own.Owns(f) {
			fromC2 = append(fromC2, s)
		}
	}

	// c2 dies: its connection is gone, it cannot release anything.
	cut := time.Now()
	c2.nc.Close()
	clustertest.Eventually(t, "c1 to own every function", func() bool { return c1.owned() == len(functions) })
	t.Logf("hand-over: c1 owned all %d shards %s after c2 was cut off (TTL %s, heartbeat %s)",
		shards, time.Since(cut).Round(time.Millisecond), c1.own.TTL(), c1.member.Interval())
	if c2.owned() != 0 {
		t.Fatalf("the cut-off c2 still owns %d functions", c2.owned())
	}
	c1.mu.Lock()
	defer c1.mu.Unlock()
	for _, s := range fromC2 {
		if c1.gained[s] == 0 {
			t.Errorf("c1 was not told it gained shard %s", fmt.Sprint(s))
		}
	}
	for _, f := range functions {
		if id, _, _ := c1.own.Owner(f); id != "c1" {
			t.Errorf("Owner(%s) = %s after the hand-over, want c1", f, id)
		}
	}
}

// A controller that joins takes its share from the one that had them all,
// which releases them first; one that leaves hands its share back at once.
func TestJoinAndLeaveRebalanceWithoutOverlap(t *testing.T) {
	s := clustertest.Server(t)
	c1 := startCtl(t, s, "c1")
	clustertest.Eventually(t, "c1 to own every function", func() bool { return c1.owned() == len(functions) })
	c2 := startCtl(t, s, "c2")
	noOverlap(t, c1, c2)
	split(t, c1, c2)
	c1.mu.Lock()
	var lost []int
	for _, ch := range c1.changes {
		lost = append(lost, ch.Lost...)
	}
	c1.mu.Unlock()
	if len(lost) == 0 {
		t.Fatal("c1 was not told it lost shards to c2")
	}
	c2.stop(t)
	clustertest.Eventually(t, "c1 to own every function again", func() bool { return c1.owned() == len(functions) })
	if c2.owned() != 0 {
		t.Fatalf("c2 owns %d functions after it stopped", c2.owned())
	}
}

// A controller still connected but declared dead (its heartbeats stopped)
// gives its shards up itself; the other takes them without overlap.
func TestControllerDeclaredDeadGivesUpItsShards(t *testing.T) {
	s := clustertest.Server(t)
	c1 := startCtl(t, s, "c1")
	c2 := startCtl(t, s, "c2")
	noOverlap(t, c1, c2)
	split(t, c1, c2)
	c2.member.Close()
	clustertest.Eventually(t, "c1 to own every function", func() bool { return c1.owned() == len(functions) })
	if n := c2.owned(); n != 0 {
		t.Fatalf("c2 owns %d functions after it was declared dead", n)
	}
	if err := c2.own.Err(); err != nil {
		t.Fatalf("c2's ownership failed: %v", err)
	}
}

// A controller that crashed and restarted at once (same id, new process)
// does not take its previous run's leases over: it waits them out, then
// owns everything again.
func TestRestartedControllerWaitsOutItsOldLeases(t *testing.T) {
	s := clustertest.Server(t)
	old := startCtl(t, s, "c1")
	clustertest.Eventually(t, "c1 to own every function", func() bool { return old.owned() == len(functions) })
	cut := time.Now()
	old.nc.Close()
	restarted := startCtl(t, s, "c1")
	noOverlap(t, old, restarted)
	// The old leases live at least a TTL after their last renewal, which
	// came before the cut (a slow machine may have taken that long to
	// start the new run: then there is nothing to check here).
	if n := restarted.owned(); n != 0 && time.Since(cut) < ttl {
		t.Fatalf("the restarted c1 owns %d functions while its old leases live", n)
	}
	clustertest.Eventually(t, "the restarted c1 to own every function", func() bool { return restarted.owned() == len(functions) })
}

// A lease's revision is a fencing token: once someone else wrote the
// lease, the old owner's renewal fails and it stops owning the shard.
func TestStaleOwnerIsFenced(t *testing.T) {
	s := clustertest.Server(t)
	c1 := startCtl(t, s, "c1")
	clustertest.Eventually(t, "c1 to own every function", func() bool { return c1.owned() == len(functions) })
	fn := functions[3]
	token, ok := c1.own.Token(fn)
	if !ok || token == 0 {
		t.Fatalf("Token(%s) = %d, %v", fn, token, ok)
	}
	_, js := clustertest.Connect(t, s)
	kv, err := js.KeyValue(clustertest.Context(t), ownership.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	// Another controller took the lease over (as after c1's had expired).
	e, err := kv.Get(clustertest.Context(t), "shard.3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(clustertest.Context(t), "shard.3", []byte(`{"id":"intruder","address":"x:1"}`), e.Revision()); err != nil {
		t.Fatal(err)
	}
	// What the stale owner would write with its token fails.
	if _, err := kv.Update(clustertest.Context(t), "shard.3", []byte(`{"id":"c1"}`), token); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("update with the stale token: err = %v, want a revision mismatch", err)
	}
	clustertest.Eventually(t, "c1 to be told it lost shard 3", func() bool {
		c1.mu.Lock()
		defer c1.mu.Unlock()
		for _, ch := range c1.changes {
			if slices.Contains(ch.Lost, 3) {
				return true
			}
		}
		return false
	})
	// The intruder never renews: its lease expires and c1, the shard's
	// assignee, takes it back under a new token.
	clustertest.Eventually(t, "c1 to own shard 3 again", func() bool {
		tok, ok := c1.own.Token(fn)
		return ok && tok != token
	})
}

// A controller that stalls (here: its loop is stuck in OnChange, as in a
// long pause) stops owning by the clock alone, before its leases expire on
// the server and another controller takes them.
func TestStalledOwnerStopsOwningByItself(t *testing.T) {
	s := clustertest.Server(t)
	c1 := startCtl(t, s, "c1")
	clustertest.Eventually(t, "c1 to own every function", func() bool { return c1.owned() == len(functions) })
	stall := make(chan struct{})
	var once sync.Once
	resume := func() { once.Do(func() { close(stall) }) }
	t.Cleanup(resume) // before c1 closes, which waits for its loop
	c1.block.Store(&stall)
	// c2 joining makes c1 release shards: its loop stalls in OnChange.
	c2 := startCtl(t, s, "c2")
	noOverlap(t, c1, c2)
	clustertest.Eventually(t, "the stalled c1 to own nothing", func() bool { return c1.owned() == 0 })
	clustertest.Eventually(t, "c2 to take the shards c1 was releasing", func() bool { return c2.owned() > 0 })
	c1.block.Store(nil)
	resume()
	split(t, c1, c2)
}

func TestStartRefusesBadSettings(t *testing.T) {
	s := clustertest.Server(t)
	_, js := clustertest.Connect(t, s)
	ctx := clustertest.Context(t)
	m, err := membership.Open(ctx, js, membership.Config{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]ownership.Options{
		"bad id":      {Self: "a b"},
		"interval":    {Self: "c1", Interval: ttl},
		"zero shards": {Self: "c1", Shards: -1},
	} {
		o.JS, o.Members = js, m
		if own, err := ownership.Start(ctx, o); err == nil {
			own.Close(ctx)
			t.Errorf("%s: Start succeeded", name)
		}
	}
}

// A controller whose process is gone (its NATS connection closed) is
// expelled by a peer's probe, which frees its leases at once: at the
// default heartbeat the take-over does not wait for the 3 s TTL. A live
// controller is never expelled.
func TestExpelTakesOverWithoutWaitingForTheTTL(t *testing.T) {
	s := clustertest.Server(t)
	c1 := startCtlWith(t, s, "c1", 0, 0)
	c2 := startCtlWith(t, s, "c2", 0, 0)
	noOverlap(t, c1, c2)
	split(t, c1, c2)
	ctx := clustertest.Context(t)
	if gone, err := c1.own.Expel(ctx, "c2"); err != nil || gone {
		t.Fatalf("expel of a live controller: %v, %v", gone, err)
	}
	if gone, err := c1.own.Expel(ctx, "c1"); err != nil || gone {
		t.Fatalf("a controller expelled itself: %v, %v", gone, err)
	}
	cut := time.Now()
	c2.nc.Close()
	clustertest.Eventually(t, "c2 to stop owning once its connection closed", func() bool { return c2.owned() == 0 })
	clustertest.Eventually(t, "the expel to succeed", func() bool {
		gone, err := c1.own.Expel(ctx, "c2")
		return err == nil && gone
	})
	clustertest.Eventually(t, "c1 to own every function", func() bool { return c1.owned() == len(functions) })
	t.Logf("expel: c1 owned all %d shards %s after c2's connection closed (TTL %s)", shards, time.Since(cut).Round(time.Millisecond), c1.own.TTL())
}
