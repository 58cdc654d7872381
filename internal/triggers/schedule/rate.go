package schedule

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// rateUnits maps each accepted unit to its length and whether it is the
// singular form. EventBridge wants the singular exactly when the value is 1.
var rateUnits = map[string]struct {
	d        time.Duration
	singular bool
}{
	"second": {time.Second, true}, "seconds": {time.Second, false},
	"minute": {time.Minute, true}, "minutes": {time.Minute, false},
	"hour": {time.Hour, true}, "hours": {time.Hour, false},
	"day": {24 * time.Hour, true}, "days": {24 * time.Hour, false},
}

type rateSchedule struct {
	expr   string
	period time.Duration
	anchor time.Time
}

func parseRate(expr, inner string, anchor time.Time) (Schedule, error) {
	parts := strings.Fields(inner)
	if len(parts) != 2 {
		return nil, &ParseError{Expr: expr, Reason: fmt.Sprintf("want rate(value unit), got %d part(s) inside the parentheses", len(parts))}
	}
	valStr, unitStr := parts[0], parts[1]
	// Digits only: strconv would take "+5"; EventBridge takes neither that
	// nor "5.0".
	if strings.Trim(valStr, "0123456789") != "" {
		return nil, &ParseError{Expr: expr, Field: "value", Value: valStr, Reason: "must be a positive integer"}
	}
	v, err := strconv.ParseInt(valStr, 10, 64)
	if err != nil {
		return nil, &ParseError{Expr: expr, Field: "value", Value: valStr, Reason: "too large"}
	}
	if v == 0 {
		return nil, &ParseError{Expr: expr, Field: "value", Value: valStr, Reason: "must be a positive integer"}
	}
	u, ok := rateUnits[unitStr]
	if !ok {
		return nil, &ParseError{Expr: expr, Field: "unit", Value: unitStr, Reason: "want second(s), minute(s), hour(s) or day(s)"}
	}
	if u.singular != (v == 1) {
		want := strings.TrimSuffix(unitStr, "s")
		if v != 1 {
			want += "s"
		}
		return nil, &ParseError{Expr: expr, Field: "unit", Value: unitStr, Reason: fmt.Sprintf("with value %d write %q", v, want)}
	}
	if v > math.MaxInt64/int64(u.d) {
		return nil, &ParseError{Expr: expr, Field: "value", Value: valStr, Reason: "period too long (over 292 years)"}
	}
	return &rateSchedule{expr: expr, period: time.Duration(v) * u.d, anchor: anchor}, nil
}

func (r *rateSchedule) String() string { return r.expr }

var nsPerSec = big.NewInt(int64(time.Second))

// maxUnix is the last second of year 9999; rate ticks beyond it are
// treated as "never" rather than risking time.Time's internal overflow.
const maxUnix = 253402300799

// Next computes anchor + k×period with k = floor((after-anchor)/period)+1.
// The arithmetic is in big integers of nanoseconds because after-anchor
// can exceed time.Duration's ±292 years, where time.Sub saturates.
func (r *rateSchedule) Next(after time.Time) time.Time {
	diff := nanos(after)
	diff.Sub(diff, nanos(r.anchor))
	p := big.NewInt(int64(r.period))
	k := new(big.Int).Div(diff, p) // Euclidean; p > 0, so this is floor
	k.Add(k, big.NewInt(1))
	t := k.Mul(k, p)
	t.Add(t, nanos(r.anchor))
	sec, ns := new(big.Int).DivMod(t, nsPerSec, new(big.Int))
	if !sec.IsInt64() || sec.Int64() > maxUnix {
		return time.Time{}
	}
	return time.Unix(sec.Int64(), ns.Int64()).UTC()
}

// nanos is t as nanoseconds since the Unix epoch, without overflow.
func nanos(t time.Time) *big.Int {
	n := big.NewInt(t.Unix())
	n.Mul(n, nsPerSec)
	return n.Add(n, big.NewInt(int64(t.Nanosecond())))
}
