// Package schedule parses EventBridge schedule expressions, rate(value unit)
// and cron(minutes hours day-of-month month day-of-week year), and computes
// their fire times in UTC. It is pure: no clocks, no goroutines, no state
// beyond the parsed expression, so every controller replica that parses the
// same expression with the same anchor computes the same ticks.
//
// Differences from EventBridge, all deliberate:
//   - rate accepts second/seconds (a Baton extension for fast schedules in
//     tests and demos; EventBridge's minimum is one minute).
//   - cron accepts L, W and # items inside lists (EventBridge documents them
//     only as a field's sole item), LW in day-of-month (last weekday of the
//     month, as Quartz), and names in any case (jan, Mon).
//   - ranges do not wrap (FRI-MON, 22-2 are refused: write FRI-SAT,SUN-MON).
//   - a cron expression that can never fire between 1970 and 2199 (for
//     instance 30 February) is refused at parse time rather than accepted
//     and silent forever.
package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
)

// Schedule is a parsed schedule expression.
type Schedule interface {
	// Next returns the first fire time strictly after after, in UTC, or the
	// zero time if the schedule never fires again (a cron year range in
	// the past, or beyond what time.Time represents for a rate).
	Next(after time.Time) time.Time
	// String returns the expression as parsed (surrounding space trimmed).
	String() string
}

// ErrInvalid is the class of every parse error: errors.Is(err, ErrInvalid)
// holds and errdefs classifies it as Invalid, so the API answers 400.
var ErrInvalid = errdefs.New(errdefs.Invalid, "invalid_schedule", "invalid schedule expression")

// ParseError says which part of which expression is wrong.
type ParseError struct {
	Expr   string // the whole expression
	Field  string // "value", "unit", "minutes", "day-of-week", ...; empty when the whole expression is wrong
	Value  string // the offending text within Field
	Reason string
}

func (e *ParseError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Expr, e.Reason)
	}
	return fmt.Sprintf("%s: %s %q: %s", e.Expr, e.Field, e.Value, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) hold.
func (e *ParseError) Is(target error) bool { return target == ErrInvalid }

// ErrorClass implements errdefs' classification.
func (e *ParseError) ErrorClass() (errdefs.Class, string) { return ErrInvalid.ErrorClass() }

// maxExprLen bounds what we are willing to parse; real expressions are a
// few dozen characters.
const maxExprLen = 256

// Parse parses a rate or cron expression. Rate ticks are aligned to the
// Unix epoch; use ParseAt to align them to another anchor.
func Parse(expr string) (Schedule, error) {
	return ParseAt(expr, time.Unix(0, 0))
}

// ParseAt parses a rate or cron expression. A rate schedule fires at
// anchor + k×period for every integer k (the grid extends before the anchor
// too, so Next is defined for any time); triggers pass their creation time
// so that ticks are the same on every replica and across restarts. The
// anchor does not affect cron schedules.
func ParseAt(expr string, anchor time.Time) (Schedule, error) {
	e := strings.TrimSpace(expr)
	switch {
	case len(e) > maxExprLen:
		return nil, &ParseError{Expr: e[:32] + "...", Reason: fmt.Sprintf("longer than %d characters", maxExprLen)}
	case strings.HasPrefix(e, "rate(") && strings.HasSuffix(e, ")"):
		return parseRate(e, e[len("rate("):len(e)-1], anchor)
	case strings.HasPrefix(e, "cron(") && strings.HasSuffix(e, ")"):
		return parseCron(e, e[len("cron("):len(e)-1])
	case e == "":
		return nil, &ParseError{Expr: `""`, Reason: "empty schedule expression; want rate(value unit) or cron(minutes hours day-of-month month day-of-week year)"}
	default:
		return nil, &ParseError{Expr: e, Reason: "want rate(value unit) or cron(minutes hours day-of-month month day-of-week year)"}
	}
}

// Ticks lists s's fire times in (from, to], at most max of them (none if
// max <= 0). A result of length max may have been cut short; callers that
// report missed ticks after an outage say "at least" then.
func Ticks(s Schedule, from, to time.Time, max int) []time.Time {
	var out []time.Time
	t := from
	for len(out) < max {
		n := s.Next(t)
		// !n.After(t) guards against a schedule that does not advance,
		// which would otherwise loop forever.
		if n.IsZero() || n.After(to) || !n.After(t) {
			break
		}
		out = append(out, n)
		t = n
	}
	return out
}
