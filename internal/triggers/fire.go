package triggers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/triggers/schedule"
)

// maxTicksPerRound bounds the ticks one round of fire looks at; a longer
// outage is worked through in several rounds.
const maxTicksPerRound = 100000

// tickKey is the idempotency key of a schedule's tick.
func tickKey(id string, tick time.Time) string {
	return fmt.Sprintf("trigger-%s-%d", id, tick.UnixNano())
}

// fire sends the ticks of a schedule that are due. Each tick's event has
// the idempotency key trigger-ID-TICK: whoever fires it, it is stored once.
// Ticks older than grace were missed (no controller could fire them) and
// are counted and reported as such, unless their key shows they were
// fired by a controller that died before it could note so.
func (s *Store) fire(ctx context.Context, t Trigger) {
	sched, err := schedule.ParseAt(t.Schedule, t.Created)
	if err != nil {
		return
	}
	s.mu.Lock()
	next, known := s.next[t.ID]
	s.mu.Unlock()
	if known && time.Now().Before(next) {
		return
	}
	st, rev, err := s.state(ctx, t.ID)
	if err != nil {
		// Not from the creation time: that would count every tick since
		// as missed.
		s.log.Debug("trigger: read state", "trigger", t.ID, "err", err)
		return
	}
	if rev == 0 {
		return // removed: the next reload forgets it
	}
	if st.LastTick.IsZero() {
		st.LastTick = t.Created
	}
	now := time.Now()
	if next := sched.Next(st.LastTick); next.IsZero() || next.After(now) {
		s.mu.Lock()
		s.next[t.ID] = next
		if next.IsZero() {
			s.next[t.ID] = now.Add(time.Hour) // never again: look now and then
		}
		s.mu.Unlock()
		return
	}
	ticks := schedule.Ticks(sched, st.LastTick, now, maxTicksPerRound)
	late := 0
	for late < len(ticks) && now.Sub(ticks[late]) > grace {
		late++
	}
	// A controller enqueues a round's ticks before it notes them, so the
	// ones a crash left unnoted are the first of those late now.
	for len(ticks) > 0 && late > 0 {
		_, claimed, err := s.queue.Claimed(ctx, t.Function, tickKey(t.ID, ticks[0]))
		if err != nil {
			s.log.Warn("trigger: look up a late tick", "trigger", t.ID, "tick", ticks[0], "err", err)
			return // next round
		}
		if !claimed {
			break
		}
		st.Fired++
		st.LastTick = ticks[0]
		ticks, late = ticks[1:], late-1
	}
	if late > 0 {
		st.recordMissed(sched, ticks[0], ticks[late-1], int64(late), now)
		s.log.Warn("trigger: ticks missed while no controller could fire them", "trigger", t.ID, "function", t.Function,
			"missed", late, "first", ticks[0], "last", ticks[late-1], "missedTotal", st.Missed)
		ticks = ticks[late:]
	}
	for _, tick := range ticks {
		if _, err := s.queue.Enqueue(ctx, t.Function, t.Event, tickKey(t.ID, tick)); err != nil {
			st.LastError = err.Error()
			s.log.Warn("trigger: fire", "trigger", t.ID, "function", t.Function, "tick", tick, "err", err)
			break
		}
		st.Fired++
		st.LastTick, st.LastError = tick, ""
	}
	// Conditional: of two controllers firing during a hand-over, one
	// counts (the events themselves are deduplicated by key).
	if err := s.updateState(ctx, t.ID, st, rev); err != nil {
		s.log.Debug("trigger: save state", "trigger", t.ID, "err", err)
	}
	s.mu.Lock()
	s.next[t.ID] = sched.Next(st.LastTick)
	s.mu.Unlock()
}

// recordMissed counts the n ticks first..last as missed; a run that
// continues the last one recorded (an outage longer than a round) joins it.
func (st *State) recordMissed(sched schedule.Schedule, first, last time.Time, n int64, now time.Time) {
	st.Missed += n
	st.LastMissed, st.LastTick = last, last
	if k := len(st.MissedTicks); k > 0 && sched.Next(st.MissedTicks[k-1].Last).Equal(first) {
		st.MissedTicks[k-1].Last = last
		st.MissedTicks[k-1].Count += n
		return
	}
	st.MissedTicks = append(st.MissedTicks, MissedRun{First: first, Last: last, Count: n, Noticed: now.UTC()})
	if k := len(st.MissedTicks); k > maxMissedRuns {
		st.MissedTicks = append([]MissedRun(nil), st.MissedTicks[k-maxMissedRuns:]...)
	}
}

func (s *Store) updateState(ctx context.Context, id string, st State, rev uint64) error {
	if rev == 0 {
		return s.putState(ctx, id, st)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.states.Update(ctx, id, data, rev)
	return jsstore.Unanswered(err)
}
