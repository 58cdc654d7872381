package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/triggers/schedule"
	"github.com/baton-faas/baton/test/harness"
)

// TestTriggers: a rate(1 second) schedule fires once per tick with its
// event, and stops when removed; every message published on a NATS
// subject becomes an invocation with the message as its event; bad
// triggers are refused with the field named.
func TestTriggers(t *testing.T) {
	t.Parallel()
	natsAddr := harness.FreeAddr(t)
	srv := harness.Start(t, harness.Options{Args: []string{"--sandbox", "fake", "--fake-start-latency", "20ms", "--nats-listen", natsAddr}})
	c := srv.Client
	deploy(t, srv, "ticker", pySpec("echo"), pyDir)
	deploy(t, srv, "orders", pySpec("echo"), pyDir)

	for _, bad := range []apiv1.TriggerRequest{
		{Function: "ticker", Schedule: "rate(0 seconds)"},
		{Function: "ticker", Schedule: "cron(0 12 * * * *)"},
		{Function: "ticker", Schedule: "every minute"},
		{Function: "ticker"},
		{Function: "ticker", Schedule: "rate(1 minute)", NATSSubject: "a.b"},
		{Function: "ticker", NATSSubject: "baton.async.ticker"},
		{Function: "ticker", NATSSubject: "a..b"},
	} {
		if _, err := c.AddTrigger(ctx(t), bad); !hasStatus(err, http.StatusBadRequest, "") {
			t.Errorf("trigger %+v: %v, want 400", bad, err)
		}
	}
	if _, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "nope", Schedule: "rate(1 minute)"}); !hasStatus(err, http.StatusNotFound, "function_not_found") {
		t.Errorf("trigger of an unknown function: %v", err)
	}

	tick, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "ticker", Schedule: "rate(1 second)", Event: json.RawMessage(`{"tick":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "the schedule to fire 3 times", func() (bool, string) {
		ts, err := c.Triggers(ctx(t), "ticker")
		if err != nil || len(ts) != 1 {
			return false, fmt.Sprint(ts, err)
		}
		return ts[0].Fired >= 3, fmt.Sprintf("fired %d", ts[0].Fired)
	})
	if err := c.RemoveTrigger(ctx(t), tick.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveTrigger(ctx(t), tick.ID); !hasStatus(err, http.StatusNotFound, "") {
		t.Errorf("removing a removed trigger: %v", err)
	}
	// Every fired tick ran once, with the trigger's event.
	var runs int
	waitFor(t, settle, "the ticks' invocations to be recorded", func() (bool, string) {
		recs, err := c.Invocations(ctx(t), "ticker", 1000)
		if err != nil {
			return false, err.Error()
		}
		runs = len(recs)
		return runs >= 3, fmt.Sprint(runs)
	})
	time.Sleep(2 * time.Second) // a tick fired as the trigger was removed has landed by now
	recs, err := c.Invocations(ctx(t), "ticker", 1000)
	if err != nil {
		t.Fatal(err)
	}
	after := len(recs)
	time.Sleep(2 * time.Second)
	if recs, _ := c.Invocations(ctx(t), "ticker", 1000); len(recs) != after {
		t.Errorf("the schedule fired after it was removed: %d invocations, then %d", after, len(recs))
	}

	sub, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "orders", NATSSubject: "shop.orders.*"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: "orders", NATSSubject: "shop.>"}); !hasStatus(err, http.StatusConflict, "") {
		t.Errorf("an overlapping subject: %v, want 409", err)
	}
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range 5 {
		if err := nc.Publish(fmt.Sprintf("shop.orders.%d", i), []byte(fmt.Sprintf(`{"order":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "every message to become an invocation", func() (bool, string) {
		recs, err := c.Invocations(ctx(t), "orders", 100)
		if err != nil {
			return false, err.Error()
		}
		return len(recs) == 5, fmt.Sprint(len(recs), " invocations")
	})
	ts, err := c.Triggers(ctx(t), "orders")
	if err != nil || len(ts) != 1 || ts[0].ID != sub.ID || ts[0].Fired != 5 || !strings.HasPrefix(ts[0].NATSSubject, "shop.") {
		t.Fatalf("nats trigger: %+v, %v", ts, err)
	}
}

// triggerCLI runs baton with the server's token and extra environment
// variables (a NATS password) and returns stdout, stderr and the exit code.
func triggerCLI(t *testing.T, srv *harness.Server, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx(t), harness.Binary(t), args...)
	cmd.Env = append(os.Environ(), "BATON_TOKEN="+srv.Token)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	}
	t.Fatalf("run baton %v: %v", args, err)
	return "", "", 0
}

// asyncState is what the test reads of an asynchronous invocation's
// stored state.
type asyncState struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	State    string `json:"state"`
	Result   []byte `json:"result"`
}

// asyncStates reads the stored state of every asynchronous invocation of
// fn from the server's NATS (its --nats-listen address): every event
// stored has one, whether or not it ran yet, so they count the events.
func asyncStates(t *testing.T, natsAddr, fn string) map[string]asyncState {
	t.Helper()
	nc, err := nats.Connect("nats://"+natsAddr, nats.Name(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(ctx(t), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(c, "baton_invocations")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(c)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]asyncState{}
	for k := range keys.Keys() {
		e, err := kv.Get(c, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var st asyncState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			t.Fatalf("invocation state %s: %v", k, err)
		}
		if st.Function == fn {
			out[st.ID] = st
		}
	}
	return out
}

// triggerNamed reads one trigger through the API.
func triggerNamed(t *testing.T, srv *harness.Server, fn, id string) (apiv1.Trigger, error) {
	t.Helper()
	ts, err := srv.Client.Triggers(ctx(t), fn)
	if err != nil {
		return apiv1.Trigger{}, err
	}
	for _, tr := range ts {
		if tr.ID == id {
			return tr, nil
		}
	}
	return apiv1.Trigger{}, fmt.Errorf("trigger %s not listed: %+v", id, ts)
}

// TestTriggerMissedTicksAcrossServerKill: a rate(1 second) schedule on
// `baton server` fires; the server is killed with -9 and stays down longer
// than the grace (5 s) in which a tick may still fire late. After the
// restart on the same data, the ticks of the outage are reported as
// missed, with when (the API's missedTicks, and `baton trigger ls`), none
// was fired late or twice (one stored event per fired tick, and fired +
// missed is every tick through the last), and the schedule fires again.
func TestTriggerMissedTicksAcrossServerKill(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr := harness.FreeAddr(t)
	args := []string{"--sandbox", "fake", "--fake-start-latency", "20ms", "--nats-listen", natsAddr}
	srv := harness.Start(t, harness.Options{DataDir: dataDir, Args: args})
	const fn = "ticker"
	deploy(t, srv, fn, pySpec("echo"), pyDir)
	tr, err := srv.Client.AddTrigger(ctx(t), apiv1.TriggerRequest{Function: fn, Schedule: "rate(1 second)", Event: json.RawMessage(`{"tick":"fixed"}`)})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := schedule.ParseAt(tr.Schedule, tr.Created)
	if err != nil {
		t.Fatal(err)
	}
	// ticksThrough counts the schedule's ticks in (created, at].
	ticksThrough := func(at time.Time) int64 { return int64(len(schedule.Ticks(sched, tr.Created, at, 100000))) }

	var before apiv1.Trigger
	waitFor(t, settle, "the schedule to fire 3 times", func() (bool, string) {
		before, err = triggerNamed(t, srv, fn, tr.ID)
		return err == nil && before.Fired >= 3, fmt.Sprintf("%+v %v", before, err)
	})
	srv.Kill()
	killed := time.Now()
	// The outage: longer than the grace by a few ticks, so that some of
	// its ticks are late whenever the server is back.
	const grace = 5 * time.Second
	time.Sleep(grace + 3*time.Second)
	restarted := time.Now()
	srv = harness.Start(t, harness.Options{DataDir: dataDir, Args: args})
	t.Logf("killed at %s (tick %d), restarted at %s (tick %d); before the kill: fired %d, last tick %s",
		killed.Format(time.RFC3339Nano), ticksThrough(killed), restarted.Format(time.RFC3339Nano), ticksThrough(restarted),
		before.Fired, before.LastTick.Format(time.RFC3339Nano))

	var after apiv1.Trigger
	waitFor(t, settle, "the restarted server to report missed ticks and fire 3 more", func() (bool, string) {
		after, err = triggerNamed(t, srv, fn, tr.ID)
		return err == nil && after.Missed > 0 && after.LastTick.After(restarted) && ticksThrough(after.LastTick)-ticksThrough(restarted) >= 3,
			fmt.Sprintf("%+v %v", after, err)
	})
	t.Logf("after the restart: fired %d, missed %d, runs %+v", after.Fired, after.Missed, after.MissedTicks)

	// The outage's late ticks are one reported run: after the last tick
	// fired before the kill, covering every tick of the outage that was
	// older than the grace when the server came back.
	firstDown := sched.Next(killed)
	lastLate := sched.Next(restarted.Add(-grace - 2*time.Second))
	var run *apiv1.MissedTicks
	var sum int64
	for i, r := range after.MissedTicks {
		sum += r.Count
		if !r.First.After(firstDown) && !r.Last.Before(lastLate) {
			run = &after.MissedTicks[i]
		}
	}
	switch {
	case run == nil:
		t.Fatalf("no missed run covers the outage's ticks %s to %s: %+v", firstDown.Format(time.RFC3339Nano), lastLate.Format(time.RFC3339Nano), after.MissedTicks)
	case !run.First.After(before.LastTick):
		t.Errorf("missed run %+v includes a tick fired before the kill (last tick then %s)", *run, before.LastTick.Format(time.RFC3339Nano))
	case run.Noticed.Before(restarted):
		t.Errorf("missed run %+v noticed before the restart at %s", *run, restarted.Format(time.RFC3339Nano))
	case int64(len(schedule.Ticks(sched, run.First, run.Last, 100000)))+1 != run.Count:
		t.Errorf("missed run %+v: its count is not its ticks", *run)
	}
	if sum != after.Missed || !after.LastMissed.Equal(after.MissedTicks[len(after.MissedTicks)-1].Last) {
		t.Errorf("missed %d, last missed %s, but the runs say %+v", after.Missed, after.LastMissed, after.MissedTicks)
	}

	// No tick twice: fired + missed are the ticks through the last one,
	// and there is one stored event per fired tick (read between two
	// equal counts: a tick fires between the reads otherwise).
	var events int
	waitFor(t, settle, "one stored event per fired tick", func() (bool, string) {
		s1, err := triggerNamed(t, srv, fn, tr.ID)
		if err != nil {
			return false, err.Error()
		}
		events = len(asyncStates(t, natsAddr, fn))
		s2, err := triggerNamed(t, srv, fn, tr.ID)
		if err != nil {
			return false, err.Error()
		}
		if s1.Fired != s2.Fired || s1.LastTick != s2.LastTick {
			return false, "a tick fired between the reads"
		}
		after = s2
		return int64(events) == s2.Fired, fmt.Sprintf("%d events stored for %d ticks fired", events, s2.Fired)
	})
	if n := ticksThrough(after.LastTick); after.Fired+after.Missed != n {
		t.Errorf("fired %d + missed %d, but %d ticks through the last tick %s: a tick was counted twice or not at all",
			after.Fired, after.Missed, n, after.LastTick.Format(time.RFC3339Nano))
	}
	// The ticks fired since the restart ran.
	waitFor(t, settle, "the restarted server to run ticks", func() (bool, string) {
		recs, err := srv.Client.Invocations(ctx(t), fn, 1000)
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, r := range recs {
			if r.Start.After(restarted) {
				n++
			}
		}
		return n >= 3, fmt.Sprintf("%d invocations since the restart", n)
	})

	// What `baton trigger ls` shows a user: the count, and when.
	out, errOut, rc := triggerCLI(t, srv, nil, "trigger", "ls", "--server", srv.URL, "--function", fn)
	if rc != 0 {
		t.Fatalf("trigger ls: exit %d\n%s%s", rc, out, errOut)
	}
	t.Logf("baton trigger ls:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "MISSED TICKS") || !strings.HasPrefix(lines[1], tr.ID) {
		t.Fatalf("trigger ls:\n%s", out)
	}
	latest := after.MissedTicks[len(after.MissedTicks)-1]
	for _, want := range []string{
		fmt.Sprintf(" %d ", after.Missed),
		latest.First.Local().Format(time.DateTime),
		latest.Last.Local().Format(time.TimeOnly),
		fmt.Sprintf("(%d)", latest.Count),
	} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("trigger ls does not show %q:\n%s", want, out)
		}
	}
	out, errOut, rc = triggerCLI(t, srv, nil, "trigger", "ls", "--server", srv.URL, "--json")
	var listed apiv1.TriggerList
	if rc != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed.Triggers) != 1 || len(listed.Triggers[0].MissedTicks) == 0 {
		t.Errorf("trigger ls --json: exit %d\n%s%s", rc, out, errOut)
	}
}

// TestTriggerExternalNATS: a NATS trigger on an external NATS server
// (with JetStream and a login, on loopback) is added with its user and
// password; a wrong password, an unreachable server and a malformed
// subject are refused with a clear 400 and store nothing. Every message
// published there becomes an invocation that runs, also those published
// while the Baton server is down (kill -9): they wait in the trigger's
// stream on the external server and arrive after the restart, which
// reconnects with the stored credentials. The credentials are never
// shown; removing the trigger removes its stream there.
func TestTriggerExternalNATS(t *testing.T) {
	t.Parallel()
	const user, password = "orders-app", "ext-nats-secret"
	extAddr := harness.FreeAddr(t)
	ext, err := natsd.Start(ctx(t), natsd.Options{DataDir: t.TempDir(), Listen: extAddr, Name: "external",
		ClientAuth: &natsd.Credentials{User: user, Password: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Shutdown)
	extURL := "nats://" + extAddr
	pub, err := nats.Connect(extURL, nats.UserInfo(user, password), nats.Name(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	extJS, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	extStreams := func() []string {
		var out []string
		names := extJS.StreamNames(ctx(t))
		for n := range names.Name() {
			out = append(out, n)
		}
		if err := names.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}

	dataDir := t.TempDir()
	natsAddr := harness.FreeAddr(t)
	args := []string{"--sandbox", "fake", "--fake-start-latency", "20ms", "--nats-listen", natsAddr}
	srv := harness.Start(t, harness.Options{DataDir: dataDir, Args: args})
	const fn = "orders"
	deploy(t, srv, fn, pySpec("echo"), pyDir)

	// Refused: nothing stored, nothing made on the external server.
	add := func(env []string, extra ...string) (string, string, int) {
		return triggerCLI(t, srv, env, append([]string{"trigger", "add", fn, "--server", srv.URL}, extra...)...)
	}
	out, errOut, rc := add([]string{"BATON_TRIGGER_NATS_PASSWORD=wrong-password"},
		"--nats-subject", "shop.orders.*", "--nats-url", extURL, "--nats-user", user)
	if rc == 0 || !strings.Contains(errOut, "refused the login") || !strings.Contains(errOut, user) || strings.Contains(errOut+out, "wrong-password") {
		t.Errorf("a wrong password: exit %d, want a refusal naming the user (and not the password)\n%s%s", rc, out, errOut)
	}
	t.Logf("a wrong password: %s", strings.TrimSpace(errOut))
	deadAddr := harness.FreeAddr(t)
	for _, bad := range []struct {
		what string
		req  apiv1.TriggerRequest
		code string
	}{
		{"a wrong password", apiv1.TriggerRequest{Function: fn, NATSSubject: "shop.orders.*",
			NATS: &apiv1.ExternalNATS{URL: extURL, User: user, Password: "wrong-password"}}, "nats_login_refused"},
		{"an unreachable server", apiv1.TriggerRequest{Function: fn, NATSSubject: "shop.orders.*",
			NATS: &apiv1.ExternalNATS{URL: "nats://" + deadAddr, User: user, Password: password}}, "nats_unreachable"},
		{"a malformed subject", apiv1.TriggerRequest{Function: fn, NATSSubject: "shop..orders",
			NATS: &apiv1.ExternalNATS{URL: extURL, User: user, Password: password}}, "invalid_trigger"},
		{"a URL that is not NATS's", apiv1.TriggerRequest{Function: fn, NATSSubject: "shop.orders.*",
			NATS: &apiv1.ExternalNATS{URL: "http://" + extAddr, User: user, Password: password}}, "invalid_trigger"},
	} {
		_, err := srv.Client.AddTrigger(ctx(t), bad.req)
		if !hasStatus(err, http.StatusBadRequest, bad.code) || strings.Contains(err.Error(), password) {
			t.Errorf("%s: %v, want 400 %s", bad.what, err, bad.code)
		}
		t.Logf("%s: %v", bad.what, err)
	}
	if ts, err := srv.Client.Triggers(ctx(t), ""); err != nil || len(ts) != 0 {
		t.Fatalf("refused triggers were stored: %+v, %v", ts, err)
	}
	if s := extStreams(); len(s) != 0 {
		t.Fatalf("refused triggers left streams on the external server: %v", s)
	}

	// The password from a file, as an operator would keep it.
	pwFile := filepath.Join(t.TempDir(), "nats-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, rc = add(nil, "--nats-subject", "shop.orders.*", "--nats-url", extURL, "--nats-user", user, "--nats-password-file", pwFile)
	if rc != 0 {
		t.Fatalf("trigger add: exit %d\n%s%s", rc, out, errOut)
	}
	id := strings.TrimSpace(out)

	// Listed with its source and which credentials it has, not them.
	tr, err := triggerNamed(t, srv, fn, id)
	if err != nil {
		t.Fatal(err)
	}
	if tr.NATS == nil || tr.NATS.URL != extURL || tr.NATS.User != user || tr.NATS.Auth != "password" || !tr.NATS.StreamOwned || tr.NATS.Stream == "" {
		t.Errorf("listed source %+v", tr.NATS)
	}
	raw := do(t, http.MethodGet, srv.URL+"/v1/triggers", nil, srv.AuthHeader())
	if raw.Status != http.StatusOK || bytes.Contains(raw.Body, []byte(password)) {
		t.Errorf("GET /v1/triggers: HTTP %d, shows the password: %s", raw.Status, raw.Body)
	}
	out, errOut, rc = triggerCLI(t, srv, nil, "trigger", "ls", "--server", srv.URL)
	if rc != 0 || strings.Contains(out, password) || !strings.Contains(out, "nats:shop.orders.*@"+extURL) || !strings.Contains(out, "user "+user+", password set") {
		t.Errorf("trigger ls: exit %d, want the source and that a password is set, never the password\n%s%s", rc, out, errOut)
	}
	t.Logf("baton trigger ls:\n%s", out)
	if s := extStreams(); len(s) != 1 || s[0] != tr.NATS.Stream {
		t.Errorf("streams on the external server %v, want the trigger's %s", s, tr.NATS.Stream)
	}

	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := extJS.Publish(ctx(t), fmt.Sprintf("shop.orders.%d", i), []byte(fmt.Sprintf(`{"order":%d}`, i))); err != nil {
				t.Fatalf("publish order %d: %v", i, err)
			}
		}
	}
	// ran returns how often each order ran (a succeeded invocation with
	// the message as its event, echoed); stored counts events.
	ran := func() (map[int]int, int, string) {
		states := asyncStates(t, natsAddr, fn)
		orders := map[int]int{}
		for _, st := range states {
			if st.State != "succeeded" {
				return nil, len(states), fmt.Sprintf("invocation %s is %s", st.ID, st.State)
			}
			var ev struct {
				Subject string
				Data    struct{ Order int }
			}
			if err := json.Unmarshal(st.Result, &ev); err != nil || ev.Subject != fmt.Sprintf("shop.orders.%d", ev.Data.Order) {
				t.Fatalf("invocation %s echoed %s (%v), want {subject, data} of a message", st.ID, st.Result, err)
			}
			orders[ev.Data.Order]++
		}
		return orders, len(states), fmt.Sprint(orders)
	}
	waitUntilRan := func(n int) {
		t.Helper()
		waitFor(t, settle, fmt.Sprintf("orders 0..%d to run once each", n-1), func() (bool, string) {
			orders, stored, state := ran()
			if orders == nil || stored != n || len(orders) != n {
				return false, fmt.Sprintf("%d events stored: %s", stored, state)
			}
			for i := range n {
				if orders[i] != 1 {
					return false, state
				}
			}
			return true, ""
		})
	}
	publish(0, 5)
	waitUntilRan(5)
	waitFor(t, settle, "the trigger to count 5 messages", func() (bool, string) {
		tr, err = triggerNamed(t, srv, fn, id)
		return err == nil && tr.Fired == 5, fmt.Sprintf("%+v %v", tr, err)
	})

	// Messages published while the server is down wait on the external
	// server, and run after the restart.
	srv.Kill()
	publish(5, 10)
	srv = harness.Start(t, harness.Options{DataDir: dataDir, Args: args})
	waitUntilRan(10)
	waitFor(t, settle, "the trigger to count 10 messages", func() (bool, string) {
		tr, err = triggerNamed(t, srv, fn, id)
		return err == nil && tr.Fired == 10 && tr.LastError == "", fmt.Sprintf("%+v %v", tr, err)
	})

	out, errOut, rc = triggerCLI(t, srv, nil, "trigger", "rm", id, "--server", srv.URL)
	if rc != 0 {
		t.Fatalf("trigger rm: exit %d\n%s%s", rc, out, errOut)
	}
	if s := extStreams(); len(s) != 0 {
		t.Errorf("the removed trigger left streams on the external server: %v", s)
	}
}
