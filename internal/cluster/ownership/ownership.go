// Package ownership gives every function exactly one owning controller at a
// time: the controller that keeps the function's queue and scaling state
// (Dirigent's partitioned data plane), with hand-over when a controller
// joins, leaves or dies.
//
// Functions hash to a fixed number of shards (ShardOf); each shard is
// assigned to one live controller by rendezvous hashing over the
// controllers' ids (Assign), so every controller computes the same
// assignment from the same membership. The assignment says who should own
// a shard; a lease says who does: a key per shard in the KV bucket
// baton_leases, taken with Create (which fails while another controller
// holds it) and renewed with Update on its last revision (which fails
// once anyone else wrote it). The bucket's TTL is the membership's, so a
// dead controller's leases expire with its membership entry, and the
// controller the assignment names takes them over.
//
// Fencing: a controller believes it owns a shard only until its lease's
// TTL, less a margin, counted from when it sent the last successful
// renewal. The server counts the same TTL from when it stored that
// renewal, which is later, so a controller cut off from NATS stops
// believing before its lease can expire and be taken; a controller that
// learns otherwise (a renewal that fails on its revision) stops at once.
// Two replicas therefore never both own a shard, as long as the clocks of
// controllers and NATS servers run at about the same rate (the margin is
// a tenth of the TTL). A shard's lease revision is a fencing token
// (Token): a write conditioned on it fails after the shard moved.
//
// Leases are per shard rather than per function so that renewal costs a
// controller (shards it owns) KV writes per heartbeat, however many
// functions it serves, and so that nothing has to be created or deleted
// when functions are.
package ownership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/store/jsstore"
)

// Bucket is the KV bucket of shard leases.
const Bucket = "baton_leases"

// DefaultShards is how many shards functions hash to. It is fixed for the
// life of the bucket (stored in its metadata): more shards spread load
// more evenly over many controllers, fewer cost fewer renewals.
const DefaultShards = 64

const (
	shardsMetadata = "baton.shards"
	keyPrefix      = "shard."
	markerTTL      = time.Minute
)

// Change reports shards this controller gained or lost. Lost shards are
// reported before their leases are released, so a controller that drops
// their state in OnChange never overlaps with the next owner.
type Change struct {
	Gained []int
	Lost   []int
}

// Options configure a controller's ownership.
type Options struct {
	JS      jetstream.JetStream
	Members *membership.Members
	// Self is this controller's node id and advertised address (its
	// membership entry: a controller owns shards only while it is live).
	Self    string
	Address string
	// Interval between lease renewals (default membership.DefaultInterval);
	// use the heartbeat interval.
	Interval time.Duration
	// Shards is used when this controller creates the bucket (default
	// DefaultShards); otherwise the bucket's count applies.
	Shards   int
	Replicas int
	// OnChange, when set, is called on the ownership's goroutine after
	// every change, in order. It must return soon: renewals wait for it.
	OnChange func(Change)
	Logger   *slog.Logger
}

// Ownership is one controller's view of which shards it owns and who owns
// the others.
type Ownership struct {
	kv      jetstream.KeyValue
	members *membership.Members
	self    string
	// runID is random per Start: this run may take back a lease it wrote
	// (after its NATS connection dropped), never one of an earlier run.
	runID    string
	addr     string
	shards   int
	ttl      time.Duration
	interval time.Duration
	margin   time.Duration
	onChange func(Change)
	log      *slog.Logger

	// mu guards the maps and failed. It is never held across a KV call or
	// OnChange. held is written only by the loop goroutine.
	mu      sync.Mutex
	held    map[int]lease
	holders map[int]holder
	live    map[string]string // controller id → address
	failed  error

	kick   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

// lease is a shard this controller holds.
type lease struct {
	rev        uint64
	validUntil time.Time
}

// holder is the value of a lease key: whoever holds it.
type holder struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Run     string `json:"run,omitempty"`
	// Renewed is when the holder last wrote the lease, by its clock.
	Renewed time.Time `json:"renewed"`
	rev     uint64
}

// Start opens the lease bucket, follows membership and leases, and starts
// taking and renewing this controller's shards. ctx bounds the start only.
// The controller joins the membership first (membership.Members.Join): it
// owns shards only while its own entry is live. Leases that a previous run
// of the same controller left are waited out, not taken over (at most one
// TTL): a lease cannot tell a crashed run from a live duplicate.
func Start(ctx context.Context, o Options) (*Ownership, error) {
	if err := membership.ValidateID(o.Self); err != nil {
		return nil, err
	}
	if o.Interval == 0 {
		o.Interval = membership.DefaultInterval
	}
	ttl := o.Members.TTL()
	if o.Interval <= 0 || 2*o.Interval > ttl {
		return nil, fmt.Errorf("lease renewal interval %s does not fit twice in the TTL %s", o.Interval, ttl)
	}
	if o.Shards == 0 {
		o.Shards = DefaultShards
	}
	if o.Shards < 1 || o.Shards > 4096 {
		return nil, fmt.Errorf("shards = %d, want 1 to 4096", o.Shards)
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	kv, shards, err := openBucket(ctx, o.JS, ttl, o.Shards, o.Replicas)
	if err != nil {
		return nil, err
	}
	own := &Ownership{
		kv: kv, members: o.Members, runID: newRun(), self: o.Self, addr: o.Address, shards: shards, ttl: ttl, interval: o.Interval, margin: ttl / 10,
		onChange: o.OnChange, log: o.Logger.With("component", "ownership", "node", o.Self),
		held: map[int]lease{}, holders: map[int]holder{}, live: map[string]string{}, kick: make(chan struct{}, 1),
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	own.cancel = cancel
	mw, err := o.Members.Watch(runCtx)
	if err != nil {
		cancel()
		return nil, err
	}
	for _, n := range mw.Snapshot() {
		if n.Has(membership.RoleController) {
			own.live[n.ID] = n.Address
		}
	}
	lw, err := kv.WatchAll(runCtx)
	if err == nil {
		// Know the holders before the first round, so that Owner answers
		// right from the start and nothing is taken blindly.
		err = own.readLeases(ctx, lw)
	}
	if err != nil {
		if lw != nil {
			_ = lw.Stop()
		}
		mw.Stop()
		cancel()
		return nil, fmt.Errorf("watch leases: %w", err)
	}
	// A controller whose NATS connection drops stops owning at once: a
	// peer may prove it gone (no responder to its probe, see Expel) and
	// take its shards long before the leases expire.
	nc := o.JS.Conn()
	prev := nc.Opts.DisconnectedErrCB
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		if prev != nil {
			prev(c, err)
		}
		own.disconnected()
	})
	own.wg.Add(3)
	go own.followMembers(runCtx, mw)
	go own.followLeases(runCtx, lw)
	go own.run(runCtx)
	return own, nil
}

func openBucket(ctx context.Context, js jetstream.JetStream, ttl time.Duration, shards, replicas int) (jetstream.KeyValue, int, error) {
	kv, st, err := jsstore.OpenKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Baton shard leases: which controller owns which functions",
		History: 1, TTL: ttl, LimitMarkerTTL: markerTTL, Storage: jetstream.FileStorage, Replicas: replicas,
		Metadata: map[string]string{shardsMetadata: strconv.Itoa(shards)},
	})
	if err != nil {
		return nil, 0, fmt.Errorf("ownership: %w", err)
	}
	n, err := strconv.Atoi(st.Metadata()[shardsMetadata])
	if err != nil || n < 1 {
		return nil, 0, fmt.Errorf("lease bucket %s has no valid %s in its metadata: delete it and let Baton create it", Bucket, shardsMetadata)
	}
	if st.TTL() != ttl {
		// Leases must expire with the membership entries they depend on.
		return nil, 0, fmt.Errorf("lease bucket %s has TTL %s but membership has %s: delete the lease bucket (it holds nothing durable)", Bucket, st.TTL(), ttl)
	}
	return kv, n, nil
}

func newRun() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// disconnected gives up every lease at once (they cannot be renewed, and
// peers may take them as soon as the probe finds nobody).
func (o *Ownership) disconnected() {
	o.mu.Lock()
	n := len(o.held)
	for s, l := range o.held {
		l.validUntil = time.Time{}
		o.held[s] = l
	}
	o.mu.Unlock()
	if n > 0 {
		o.log.Warn("NATS connection lost: this controller stops owning its shards", "shards", n)
	}
	o.poke()
}

// Expel declares a node dead when it provably is (membership's Expel:
// no process answers its probe) and frees the shard leases it held at
// once, each only if it is still the revision it held, so that their next
// owners take them now rather than when the leases expire. It reports
// whether the node was expelled.
func (o *Ownership) Expel(ctx context.Context, id string) (bool, error) {
	if id == o.self {
		return false, nil
	}
	gone, err := o.members.Expel(ctx, id)
	if err != nil || !gone {
		return false, err
	}
	o.mu.Lock()
	revs := map[int]uint64{}
	for s, h := range o.holders {
		if h.ID == id {
			revs[s] = h.rev
		}
	}
	o.mu.Unlock()
	for s, rev := range revs {
		err := o.kv.Delete(ctx, key(s), jetstream.LastRevision(rev))
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
			o.log.Warn("freeing an expelled controller's lease failed; it expires instead", "shard", s, "controller", id, "err", err)
		}
	}
	o.log.Info("expelled a controller whose NATS connection is gone", "controller", id, "shards", len(revs))
	o.poke()
	return true, nil
}

// TTL is the leases' (and membership's) TTL.
func (o *Ownership) TTL() time.Duration { return o.ttl }

// Shards is the number of shards.
func (o *Ownership) Shards() int { return o.shards }

// ShardOf is the shard of a function.
func (o *Ownership) ShardOf(function string) int { return ShardOf(function, o.shards) }

// Owns says whether this controller owns the function now: it holds the
// shard's lease and the lease is within its validity.
func (o *Ownership) Owns(function string) bool {
	_, ok := o.Token(function)
	return ok
}

// Token returns the revision of the function's shard lease while this
// controller owns it: a fencing token that changes whenever the shard
// changes hands.
func (o *Ownership) Token(function string) (uint64, bool) {
	s := o.ShardOf(function)
	o.mu.Lock()
	defer o.mu.Unlock()
	l, ok := o.held[s]
	if !ok || o.failed != nil || !time.Now().Before(l.validUntil) {
		return 0, false
	}
	return l.rev, true
}

// Owner names the controller that serves a function: the live holder of
// its shard's lease, or while no live controller holds it (nobody, or a
// dead one whose lease has yet to expire), the live controller that the
// assignment names: it is taking the lease, and requests sent to it wait
// there rather than at a dead address. ok is false when no controller is
// live.
func (o *Ownership) Owner(function string) (id, addr string, ok bool) {
	s := o.ShardOf(function)
	if _, mine := o.Token(function); mine {
		return o.self, o.addr, true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if h, ok := o.holders[s]; ok && h.ID != o.self {
		if _, live := o.live[h.ID]; live {
			return h.ID, h.Address, true
		}
	}
	a := Assign(s, slices.Sorted(maps.Keys(o.live)))
	if a == "" {
		return "", "", false
	}
	return a, o.live[a], true
}

// Address is the advertised address of a live controller ("" when it is
// not live).
func (o *Ownership) Address(id string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.live[id]
}

// OwnedShards returns the shards this controller owns now, sorted.
func (o *Ownership) OwnedShards() []int {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []int
	if o.failed != nil {
		return out
	}
	for s, l := range o.held {
		if now.Before(l.validUntil) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Owned returns those of functions that this controller owns now. (It
// does not know every function: the controller has the list.)
func (o *Ownership) Owned(functions []string) []string {
	var out []string
	for _, f := range functions {
		if o.Owns(f) {
			out = append(out, f)
		}
	}
	return out
}

// Err says why ownership stopped working (its NATS connection closed),
// nil while it works. Once it fails, this controller owns nothing.
func (o *Ownership) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failed
}

// Close hands every shard over at once (reported as lost, then released
// so the next owners need not wait for the TTL) and stops. ctx bounds the
// releases.
func (o *Ownership) Close(ctx context.Context) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.closed = true
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
	o.mu.Lock()
	held := o.held
	o.held = map[int]lease{}
	o.mu.Unlock()
	lost := slices.Sorted(maps.Keys(held))
	if len(lost) > 0 {
		o.notify(Change{Lost: lost})
	}
	for _, s := range lost {
		o.release(ctx, s, held[s].rev)
	}
}

func key(shard int) string { return keyPrefix + strconv.Itoa(shard) }

func (o *Ownership) poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *Ownership) fail(err error) {
	o.mu.Lock()
	if o.failed == nil {
		o.failed = err
		o.log.Error("ownership stopped: this controller owns nothing from now on", "err", err)
	}
	o.mu.Unlock()
	o.poke()
}

func (o *Ownership) notify(c Change) {
	if c.Gained != nil || c.Lost != nil {
		o.log.Info("shard ownership changed", "gained", c.Gained, "lost", c.Lost)
	}
	if o.onChange != nil {
		o.onChange(c)
	}
}

func (o *Ownership) followMembers(ctx context.Context, w *membership.Watch) {
	defer o.wg.Done()
	defer w.Stop()
	for ev := range w.Events() {
		if !ev.Node.Has(membership.RoleController) {
			continue
		}
		o.mu.Lock()
		if ev.Kind == membership.Left {
			delete(o.live, ev.Node.ID)
		} else {
			o.live[ev.Node.ID] = ev.Node.Address
		}
		o.mu.Unlock()
		if ev.Kind != membership.Updated {
			o.poke()
		}
	}
	if ctx.Err() == nil {
		o.fail(fmt.Errorf("membership watch ended: %v", w.Err()))
	}
}

// readLeases reads the lease watch's initial values.
func (o *Ownership) readLeases(ctx context.Context, w jetstream.KeyWatcher) error {
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch ended before its initial values")
			}
			if e == nil {
				return nil
			}
			o.applyLease(e)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// applyLease records a lease entry's holder and says whether the shard
// became free.
func (o *Ownership) applyLease(e jetstream.KeyValueEntry) (freed bool) {
	s, err := strconv.Atoi(strings.TrimPrefix(e.Key(), keyPrefix))
	if err != nil {
		return false
	}
	var h holder
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &h) == nil {
		h.rev = e.Revision()
		o.holders[s] = h
		return false
	}
	delete(o.holders, s)
	return true
}

func (o *Ownership) followLeases(ctx context.Context, w jetstream.KeyWatcher) {
	defer o.wg.Done()
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-w.Updates():
		case <-ctx.Done():
			return
		}
		if !ok {
			if ctx.Err() == nil {
				o.fail(errors.New("lease watch ended: the NATS connection closed"))
			}
			return
		}
		if e != nil && o.applyLease(e) {
			o.poke() // a shard became free: its assignee takes it now
		}
	}
}

func (o *Ownership) run(ctx context.Context) {
	defer o.wg.Done()
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		o.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-o.kick:
		}
	}
}

// reconcile brings held leases in line with the assignment: drop what
// expired, release what is assigned elsewhere, renew the rest, take what
// is assigned here and free.
func (o *Ownership) reconcile(ctx context.Context) {
	now := time.Now()
	o.mu.Lock()
	ids := slices.Sorted(maps.Keys(o.live))
	_, selfLive := o.live[o.self]
	working := o.failed == nil
	var lost []int
	release := map[int]uint64{}
	renew := map[int]uint64{}
	for s, l := range o.held {
		switch {
		case !working || !now.Before(l.validUntil):
			lost = append(lost, s)
			delete(o.held, s)
		case !selfLive || Assign(s, ids) != o.self:
			lost = append(lost, s)
			release[s] = l.rev
			delete(o.held, s)
		default:
			renew[s] = l.rev
		}
	}
	var take, stale []int
	takeBack := map[int]uint64{}
	if working && selfLive {
		for s := range o.shards {
			if _, held := o.held[s]; held || Assign(s, ids) != o.self {
				continue
			}
			h, taken := o.holders[s]
			switch {
			case !taken:
				take = append(take, s)
			case now.Sub(h.Renewed) > o.ttl:
				// The lease should have expired and the watch did not say
				// so (a stream leader lost with its expiry marker, a
				// watch behind): read it again.
				stale = append(stale, s)
			case h.ID == o.self && h.Run == o.runID:
				// Dropped when the connection did; nobody wrote it since.
				takeBack[s] = h.rev
			}
		}
	}
	o.mu.Unlock()

	slices.Sort(lost)
	if len(lost) > 0 {
		o.notify(Change{Lost: lost})
	}
	for s, rev := range release {
		o.release(ctx, s, rev)
	}

	// One deadline for the round: a slow NATS must not hold renewals
	// past their validity one shard at a time.
	rctx, cancel := context.WithTimeout(ctx, o.interval)
	defer cancel()
	value, _ := json.Marshal(holder{ID: o.self, Address: o.addr, Run: o.runID, Renewed: now})
	var change Change
	for _, s := range stale {
		if o.refresh(rctx, s) {
			take = append(take, s)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(renew)) {
		sent := time.Now()
		rev, err := o.kv.Update(rctx, key(s), value, renew[s])
		switch {
		case err == nil:
			o.setLease(s, rev, sent)
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			// Fenced: the lease expired and someone may have taken it.
			o.mu.Lock()
			delete(o.held, s)
			o.mu.Unlock()
			change.Lost = append(change.Lost, s)
		case ctx.Err() == nil:
			// Keep it until its validity runs out; the next round retries.
			o.log.Warn("lease renewal failed", "shard", s, "err", err)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(takeBack)) {
		sent := time.Now()
		rev, err := o.kv.Update(rctx, key(s), value, takeBack[s])
		if err != nil {
			// Someone took it, or it expired: read it again, so that the
			// next round does not try the same revision for ever.
			if ctx.Err() == nil && o.refresh(rctx, s) {
				take = append(take, s)
			}
			continue
		}
		o.setLease(s, rev, sent)
		change.Gained = append(change.Gained, s)
	}
	for _, s := range take {
		sent := time.Now()
		rev, err := o.kv.Create(rctx, key(s), value)
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
				o.log.Warn("taking a shard lease failed", "shard", s, "err", err)
			}
			continue
		}
		o.setLease(s, rev, sent)
		change.Gained = append(change.Gained, s)
	}
	if change.Gained != nil || change.Lost != nil {
		o.notify(change)
	}
}

// refresh reads shard s's lease again instead of trusting the watch, and
// says whether the shard is free.
func (o *Ownership) refresh(ctx context.Context, s int) (free bool) {
	e, err := o.kv.Get(ctx, key(s))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		o.mu.Lock()
		delete(o.holders, s)
		o.mu.Unlock()
		return true
	case err != nil:
		return false // the next round tries again
	}
	return o.applyLease(e)
}

func (o *Ownership) setLease(s int, rev uint64, sent time.Time) {
	o.mu.Lock()
	o.held[s] = lease{rev: rev, validUntil: sent.Add(o.ttl - o.margin)}
	o.mu.Unlock()
}

// release deletes a lease this controller gave up, if it is still the
// revision it wrote; otherwise it has expired or moved already.
func (o *Ownership) release(ctx context.Context, s int, rev uint64) {
	ctx, cancel := context.WithTimeout(ctx, o.interval)
	defer cancel()
	err := o.kv.Delete(ctx, key(s), jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		o.log.Warn("releasing a shard lease failed; it expires instead", "shard", s, "err", err)
	}
}
