package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/store/natsd/natsdtest"
	"github.com/baton-faas/baton/internal/triggers/schedule"
)

// settle bounds waits for conditions a busy host may delay.
const settle = 60 * time.Second

func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s; last state: %s", settle, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startNATS runs an in-process NATS server with JetStream.
func startNATS(t *testing.T, o natsd.Options) *natsd.Server {
	t.Helper()
	o.DataDir = t.TempDir()
	ns, err := natsd.Start(testCtx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// baton is a store on a NATS of its own, as a controller that owns every
// function runs it, with the queue its firings go to.
type baton struct {
	store *Store
	queue *async.Queue
	js    jetstream.JetStream
}

func newBaton(t *testing.T) baton {
	t.Helper()
	ns := startNATS(t, natsd.Options{})
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := async.Open(testCtx(t), nc, async.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(testCtx(t), nc, q, func(string) bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close) // before the connection closes (cleanups run last first)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return baton{store: s, queue: q, js: js}
}

// events lists the events stored for fn, oldest first (nothing runs them
// here).
func (b baton) events(t *testing.T, fn string) []string {
	t.Helper()
	ctx := testCtx(t)
	stream, err := b.js.Stream(ctx, "BATON_ASYNC")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == "baton.async."+fn {
			out = append(out, string(m.Data))
		}
	}
	return out
}

func (b baton) state(t *testing.T, id string) State {
	t.Helper()
	st, _, err := b.store.state(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestMissedTicksAreReportedWithWhen: a schedule whose controller was
// away (a trigger stored 30 s ago, never fired) reports the ticks older
// than the grace as one run of missed ticks, first to last, and fires the
// recent ones; ticks a crashed controller stored but never noted count as
// fired, not missed, and are not stored twice.
func TestMissedTicksAreReportedWithWhen(t *testing.T) {
	b := newBaton(t)
	ctx := testCtx(t)
	created := time.Now().UTC().Add(-30 * time.Second)
	tr := Trigger{ID: "00000000-0000-4000-8000-000000000001", Function: "ticker", Kind: KindSchedule,
		Schedule: "rate(1 second)", Event: json.RawMessage(`{"tick":1}`), Created: created}
	sched, err := schedule.ParseAt(tr.Schedule, created)
	if err != nil {
		t.Fatal(err)
	}
	// A controller stored the first two ticks' events and died before
	// it noted them.
	tick1 := sched.Next(created)
	tick2 := sched.Next(tick1)
	for _, tick := range []time.Time{tick1, tick2} {
		if _, err := b.queue.Enqueue(ctx, tr.Function, tr.Event, tickKey(tr.ID, tick)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.store.store(ctx, tr); err != nil {
		t.Fatal(err)
	}
	began := time.Now()

	var st State
	waitFor(t, "the schedule to count missed ticks and fire again", func() (bool, string) {
		st = b.state(t, tr.ID)
		return st.Missed > 0 && st.LastTick.After(began.Add(time.Second)), fmt.Sprintf("%+v", st)
	})
	if len(st.MissedTicks) != 1 {
		t.Fatalf("missed runs %+v, want one", st.MissedTicks)
	}
	run := st.MissedTicks[0]
	if want := sched.Next(tick2); !run.First.Equal(want) {
		t.Errorf("the missed run starts at %s, want %s (the first tick nobody stored)", run.First, want)
	}
	if run.Count != st.Missed || !run.Last.Equal(st.LastMissed) {
		t.Errorf("missed run %+v, state missed %d, last missed %s", run, st.Missed, st.LastMissed)
	}
	if n := int64(len(schedule.Ticks(sched, run.First, run.Last, 1000))) + 1; n != run.Count {
		t.Errorf("the run %s..%s holds %d ticks, counted %d", run.First, run.Last, n, run.Count)
	}
	// Missed means older than the grace when noticed; the next tick was
	// not.
	if run.Noticed.Before(began) || run.Noticed.Sub(run.Last) <= grace || run.Noticed.Sub(sched.Next(run.Last)) > grace {
		t.Errorf("missed run %+v: its last tick is not the last one older than the grace when noticed (store written at %s)", run, began)
	}
	// Every tick through the last is fired or missed, once; one event per
	// fired tick.
	through := int64(len(schedule.Ticks(sched, created, st.LastTick, 1000)))
	if st.Fired+st.Missed != through {
		t.Errorf("fired %d + missed %d, but %d ticks through %s", st.Fired, st.Missed, through, st.LastTick)
	}
	waitFor(t, "one event per fired tick", func() (bool, string) {
		st = b.state(t, tr.ID)
		n := int64(len(b.events(t, tr.Function)))
		st2 := b.state(t, tr.ID)
		return st.Fired == st2.Fired && n == st.Fired, fmt.Sprintf("%d events, fired %d", n, st.Fired)
	})
}

// TestMissedRuns: a run that continues the last one joins it; a new one
// is added, and only the latest runs are kept.
func TestMissedRuns(t *testing.T) {
	sched, err := schedule.Parse("rate(1 minute)")
	if err != nil {
		t.Fatal(err)
	}
	at := func(m int) time.Time { return time.Unix(0, 0).UTC().Add(time.Duration(m) * time.Minute) }
	var st State
	st.recordMissed(sched, at(1), at(3), 3, at(10))
	st.recordMissed(sched, at(4), at(5), 2, at(11)) // the same outage, a second round
	if len(st.MissedTicks) != 1 || st.MissedTicks[0].Count != 5 || !st.MissedTicks[0].Last.Equal(at(5)) || !st.MissedTicks[0].Noticed.Equal(at(10)) {
		t.Fatalf("joined run: %+v", st.MissedTicks)
	}
	for i := range maxMissedRuns + 3 {
		st.recordMissed(sched, at(100+10*i), at(100+10*i), 1, at(200))
	}
	if len(st.MissedTicks) != maxMissedRuns || st.Missed != 5+maxMissedRuns+3 || !st.MissedTicks[maxMissedRuns-1].Last.Equal(at(100+10*(maxMissedRuns+2))) {
		t.Fatalf("after %d runs: missed %d, runs %+v", maxMissedRuns+4, st.Missed, st.MissedTicks)
	}
	if !st.LastMissed.Equal(st.LastTick) || !st.LastTick.Equal(at(100+10*(maxMissedRuns+2))) {
		t.Errorf("last tick %s, last missed %s", st.LastTick, st.LastMissed)
	}
}

func hasCode(err error, class errdefs.Class, code string) bool {
	c, k := errdefs.Classify(err)
	return err != nil && c == class && (code == "" || k == code)
}

// external is a NATS server outside Baton that wants a login.
type external struct {
	url string
	nc  *nats.Conn // an administrator's connection
	js  jetstream.JetStream
}

func newExternal(t *testing.T) external {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", natsdtest.FreePorts(t, 1)[0])
	startNATS(t, natsd.Options{Name: "external", Listen: listen, ClientAuth: &natsd.Credentials{User: "alice", Password: "s3cret"}})
	e := external{url: "nats://" + listen}
	var err error
	if e.nc, err = nats.Connect(e.url, nats.UserInfo("alice", "s3cret")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e external) streams(t *testing.T) []string {
	t.Helper()
	var out []string
	names := e.js.StreamNames(testCtx(t))
	for n := range names.Name() {
		out = append(out, n)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExternalNATSTrigger: a trigger on an external server connects with
// its credentials (given apart or in the URL, stored without the URL
// carrying them), makes its stream there, and turns each message into one
// event; bad credentials, an unreachable server, a bad subject and a
// subject another stream captures are refused and leave nothing; a named
// stream is consumed through a consumer of Baton's, filtered to the
// subject; removal deletes what Baton made there and nothing else.
func TestExternalNATSTrigger(t *testing.T) {
	b := newBaton(t)
	ext := newExternal(t)
	ctx := testCtx(t)
	add := func(subject string, e External) (Trigger, error) {
		return b.store.Add(ctx, Trigger{Function: "orders", NATSSubject: subject, NATS: &e})
	}
	dead := fmt.Sprintf("nats://127.0.0.1:%d", natsdtest.FreePorts(t, 1)[0])
	for _, bad := range []struct {
		what, subject string
		e             External
		code          string
	}{
		{"a wrong password", "shop.>", External{URL: ext.url, User: "alice", Password: "wrong"}, "nats_login_refused"},
		{"no login", "shop.>", External{URL: ext.url}, "nats_login_refused"},
		{"an unreachable server", "shop.>", External{URL: dead, User: "alice", Password: "s3cret"}, "nats_unreachable"},
		{"a malformed subject", "shop..x", External{URL: ext.url, User: "alice", Password: "s3cret"}, "invalid_trigger"},
		{"NATS's own subjects", "$JS.API.>", External{URL: ext.url, User: "alice", Password: "s3cret"}, "invalid_trigger"},
		{"a bad URL", "shop.>", External{URL: "http://" + ext.url[len("nats://"):]}, "invalid_trigger"},
		{"a missing named stream", "shop.>", External{URL: ext.url, User: "alice", Password: "s3cret", Stream: "NOPE"}, "nats_source_invalid"},
	} {
		_, err := add(bad.subject, bad.e)
		if !hasCode(err, errdefs.Invalid, bad.code) {
			t.Errorf("%s: %v, want %s", bad.what, err, bad.code)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong") {
			t.Errorf("%s: the error shows the password: %v", bad.what, err)
		}
		t.Logf("%s: %v", bad.what, err)
	}
	if ts, _, err := b.store.List(ctx, ""); err != nil || len(ts) != 0 {
		t.Fatalf("refused triggers stored: %+v, %v", ts, err)
	}
	if s := ext.streams(t); len(s) != 0 {
		t.Fatalf("refused triggers left streams on the external server: %v", s)
	}

	// Credentials in the URL.
	host := strings.TrimPrefix(ext.url, "nats://")
	tr, err := add("shop.orders.*", External{URL: "nats://alice:s3cret@" + host})
	if err != nil {
		t.Fatal(err)
	}
	if tr.NATS.URL != ext.url || tr.NATS.User != "alice" || tr.NATS.Auth() != "password" {
		t.Errorf("stored source %+v", tr.NATS)
	}
	if s := ext.streams(t); len(s) != 1 || s[0] != tr.Stream() {
		t.Errorf("streams on the external server %v, want %s", s, tr.Stream())
	}
	_, err = add("shop.>", External{URL: ext.url, User: "alice", Password: "s3cret"})
	if !hasCode(err, errdefs.Conflict, "") || !strings.Contains(err.Error(), tr.Stream()) {
		t.Errorf("an overlapping subject: %v, want a conflict naming %s", err, tr.Stream())
	}
	for i := range 3 {
		if _, err := ext.js.Publish(ctx, fmt.Sprintf("shop.orders.%d", i), []byte(fmt.Sprintf(`{"order":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every message to become an event", func() (bool, string) {
		evs := b.events(t, "orders")
		return len(evs) == 3 && b.state(t, tr.ID).Fired == 3, fmt.Sprint(evs, b.state(t, tr.ID))
	})
	var ev natsEvent
	if err := json.Unmarshal([]byte(b.events(t, "orders")[1]), &ev); err != nil || ev.Subject != "shop.orders.1" || string(ev.Data) != `{"order":1}` {
		t.Errorf("event %+v, %v", ev, err)
	}

	// A stream of the user's: only the trigger's subject, from now on.
	if _, err := ext.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ext.js.Publish(ctx, "orders.eu.0", []byte(`"before"`)); err != nil {
		t.Fatal(err)
	}
	named, err := add("orders.eu.*", External{URL: ext.url, User: "alice", Password: "s3cret", Stream: "ORDERS"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := add("orders.us.*", External{URL: ext.url, User: "alice", Password: "s3cret"}); !hasCode(err, errdefs.Conflict, "") || !strings.Contains(err.Error(), "--nats-stream ORDERS") {
		t.Errorf("a subject of the user's stream without naming it: %v, want a conflict that says to name ORDERS", err)
	}
	for _, subj := range []string{"orders.eu.1", "orders.us.1", "orders.eu.2"} {
		if _, err := ext.js.Publish(ctx, subj, []byte(`"`+subj+`"`)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the named stream's messages of the subject to become events", func() (bool, string) {
		evs := b.events(t, "orders")
		return len(evs) == 5 && b.state(t, named.ID).Fired == 2, fmt.Sprint(evs)
	})
	for _, e := range b.events(t, "orders") {
		if strings.Contains(e, "orders.us") || strings.Contains(e, "before") {
			t.Errorf("event %s is not one of the trigger's (subject orders.eu.*, from its creation)", e)
		}
	}

	for _, id := range []string{tr.ID, named.ID} {
		if err := b.store.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if s := ext.streams(t); len(s) != 1 || s[0] != "ORDERS" {
		t.Errorf("streams left on the external server %v, want the user's ORDERS only", s)
	}
	stream, err := ext.js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Errorf("ORDERS after the trigger's removal: %+v, %v; want no consumer", info, err)
	}
}

// TestExternalSourceChecks: credentials move out of URLs; what cannot work
// is refused with what to fix.
func TestExternalSourceChecks(t *testing.T) {
	creds := "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.eyJzdWIiOiJVQUJDIn0.c2ln\n------END NATS USER JWT------\n\n" +
		"************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n" +
		"-----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n------END USER NKEY SEED------\n"
	ok := []struct {
		in   External
		want External
	}{
		{External{URL: " nats://a:pw@127.0.0.1:4222 , tls://h:4443 "}, External{URL: "nats://127.0.0.1:4222,tls://h:4443", User: "a", Password: "pw"}},
		{External{URL: "nats://h:1", Creds: creds}, External{URL: "nats://h:1", Creds: creds}},
		{External{URL: "tls://nats.example", User: "u", Password: "p"}, External{URL: "tls://nats.example:4222", User: "u", Password: "p"}},
		{External{URL: "nats://h:1/", User: "u", Password: "p", Stream: "ORDERS_v2"}, External{URL: "nats://h:1", User: "u", Password: "p", Stream: "ORDERS_v2"}},
	}
	for _, c := range ok {
		got := c.in
		if err := got.normalize(); err != nil || got != c.want {
			t.Errorf("normalize %+v: %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	jwt, seed, err := parseCreds(creds)
	if err != nil || !strings.HasPrefix(jwt, "eyJ") || !strings.HasPrefix(seed, "SUA") {
		t.Errorf("parse creds: %q %q %v", jwt, seed, err)
	}
	for _, bad := range []External{
		{},
		{URL: "http://h:1"},
		{URL: "nats://tok@h:1"},
		{URL: "nats://a:pw@h:1", User: "b", Password: "x"},
		{URL: "nats://h:1", Password: "p"},
		{URL: "nats://h:1", User: "u"},
		{URL: "nats://h:1", User: "u", Password: "p", Creds: creds},
		{URL: "nats://h:1", Creds: "not creds"},
		{URL: "nats://h:1", Creds: strings.Replace(creds, "SUA", "SAA", 1)},
		{URL: "nats://h:1", User: "u", Password: "p", Stream: "a.b"},
	} {
		e := bad
		err := e.normalize()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("normalize %+v: %v, want invalid", bad, err)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("normalize %+v: the error shows the password: %v", bad, err)
		}
	}
}

// TestExternalNATSReconnects: while the external server is down the
// trigger says so (LastError); once it is back the trigger's connection
// reconnects with the stored credentials, the error clears and messages
// flow again.
func TestExternalNATSReconnects(t *testing.T) {
	b := newBaton(t)
	ctx := testCtx(t)
	opts := natsd.Options{DataDir: t.TempDir(), Name: "external", Listen: fmt.Sprintf("127.0.0.1:%d", natsdtest.FreePorts(t, 1)[0]),
		ClientAuth: &natsd.Credentials{User: "alice", Password: "s3cret"}}
	ns, err := natsd.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown() })
	url := "nats://" + opts.Listen
	tr, err := b.store.Add(ctx, Trigger{Function: "orders", NATSSubject: "shop.>", NATS: &External{URL: url, User: "alice", Password: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		t.Helper()
		nc, err := nats.Connect(url, nats.UserInfo("alice", "s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "shop.order", []byte(fmt.Sprint(n))); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	waitFor(t, "the first message to become an event", func() (bool, string) {
		return b.state(t, tr.ID).Fired == 1, fmt.Sprintf("%+v", b.state(t, tr.ID))
	})
	ns.Shutdown()
	waitFor(t, "the trigger to say its server is gone", func() (bool, string) {
		st := b.state(t, tr.ID)
		return strings.Contains(st.LastError, "connection lost"), fmt.Sprintf("%+v", st)
	})
	if ns, err = natsd.Start(ctx, opts); err != nil {
		t.Fatal(err)
	}
	publish(2)
	waitFor(t, "the trigger to reconnect and forward again", func() (bool, string) {
		st := b.state(t, tr.ID)
		return st.Fired == 2 && st.LastError == "", fmt.Sprintf("%+v", st)
	})
	if evs := b.events(t, "orders"); len(evs) != 2 {
		t.Errorf("events %v, want 2", evs)
	}
}

// TestExternalNATSWithoutJetStream: a server without JetStream cannot
// keep a trigger's messages; the trigger is refused and says why.
func TestExternalNATSWithoutJetStream(t *testing.T) {
	b := newBaton(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Username: "alice", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	_, err = b.store.Add(testCtx(t), Trigger{Function: "orders", NATSSubject: "shop.>",
		NATS: &External{URL: ns.ClientURL(), User: "alice", Password: "s3cret"}})
	if !hasCode(err, errdefs.Invalid, "nats_source_invalid") || !strings.Contains(err.Error(), "no JetStream") {
		t.Fatalf("a server without JetStream: %v, want nats_source_invalid saying so", err)
	}
	t.Log(err)
	if ts, _, err := b.store.List(testCtx(t), ""); err != nil || len(ts) != 0 {
		t.Fatalf("stored: %+v, %v", ts, err)
	}
}
