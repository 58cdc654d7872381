package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// bitset holds field values as offsets from the field's minimum; the
// widest field, year, has 230 values.
type bitset [4]uint64

func (b *bitset) set(i int)     { b[i>>6] |= 1 << (i & 63) }
func (b bitset) has(i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitset) empty() bool    { return b == bitset{} }

// field describes one position of a cron expression.
type field struct {
	name     string
	min, max int
	names    []string // names[i] is the value min+i (months, weekdays)
}

var (
	fMinutes = field{name: "minutes", min: 0, max: 59}
	fHours   = field{name: "hours", min: 0, max: 23}
	fDOM     = field{name: "day-of-month", min: 1, max: 31}
	fMonth   = field{name: "month", min: 1, max: 12,
		names: []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}}
	fDOW = field{name: "day-of-week", min: 1, max: 7,
		names: []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}}
	fYear = field{name: "year", min: 1970, max: 2199}
)

// cronSchedule is a parsed cron expression; every set holds offsets from
// its field's minimum.
type cronSchedule struct {
	expr                   string
	minutes, hours, months bitset
	years                  bitset

	// Exactly one of day-of-month and day-of-week is "?", and the other
	// alone decides which days fire.
	domIsQ bool

	domDays        bitset // plain days (offset from 1)
	domLast        bool   // L: the last day of the month
	domLastWeekday bool   // LW: the last Monday-Friday of the month
	domNearest     bitset // nW: the weekday nearest day n, within its month

	dowDays bitset   // plain weekdays (offset from 1 = Sunday)
	dowLast bitset   // xL: the last weekday x of the month
	dowNth  [7]uint8 // x#n: bit n of dowNth[x-1]
}

type parseErr struct{ value, reason string }

func parseCron(expr, inner string) (Schedule, error) {
	parts := strings.Fields(inner)
	if len(parts) != 6 {
		return nil, &ParseError{Expr: expr, Reason: fmt.Sprintf(
			"want 6 fields (minutes hours day-of-month month day-of-week year), got %d", len(parts))}
	}
	c := &cronSchedule{expr: expr}
	fail := func(f field, pe *parseErr) error {
		return &ParseError{Expr: expr, Field: f.name, Value: pe.value, Reason: pe.reason}
	}
	var pe *parseErr
	if c.minutes, pe = parsePlain(fMinutes, parts[0]); pe != nil {
		return nil, fail(fMinutes, pe)
	}
	if c.hours, pe = parsePlain(fHours, parts[1]); pe != nil {
		return nil, fail(fHours, pe)
	}
	if c.months, pe = parsePlain(fMonth, parts[3]); pe != nil {
		return nil, fail(fMonth, pe)
	}
	if c.years, pe = parsePlain(fYear, parts[5]); pe != nil {
		return nil, fail(fYear, pe)
	}
	dom, dow := parts[2], parts[4]
	switch {
	case dom == "?" && dow == "?":
		return nil, fail(fDOW, &parseErr{dow, `"?" may be in only one of day-of-month and day-of-week; give the other a value or "*"`})
	case dom != "?" && dow != "?":
		return nil, fail(fDOW, &parseErr{dow, `one of day-of-month and day-of-week must be "?" (day-of-month is ` + strconv.Quote(dom) + `)`})
	case dom == "?":
		c.domIsQ = true
		if pe = c.parseDOW(dow); pe != nil {
			return nil, fail(fDOW, pe)
		}
	default:
		if pe = c.parseDOM(dom); pe != nil {
			return nil, fail(fDOM, pe)
		}
	}
	// Refuse what can never fire (30 February, 5#5 in a year range
	// without such a month) instead of storing a trigger that stays silent.
	if c.Next(time.Date(fYear.min, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Minute)).IsZero() {
		return nil, &ParseError{Expr: expr, Reason: "never fires between 1970 and 2199 (no day matches the day-of-month, month and year fields together)"}
	}
	return c, nil
}

// parsePlain parses a field that has only *, lists, ranges and steps.
func parsePlain(f field, s string) (bitset, *parseErr) {
	var b bitset
	for item := range strings.SplitSeq(s, ",") {
		if pe := parseItem(f, item, &b); pe != nil {
			return b, pe
		}
	}
	return b, nil
}

// parseItem adds one list item, "*", "a", "a-b" with an optional "/n", to b.
func parseItem(f field, item string, b *bitset) *parseErr {
	if item == "" {
		return &parseErr{item, "empty list item"}
	}
	if item == "?" {
		return &parseErr{item, `"?" is allowed only as the whole day-of-month or day-of-week field`}
	}
	base, stepStr, hasStep := strings.Cut(item, "/")
	step := 1
	if hasStep {
		n, err := strconv.Atoi(stepStr)
		if err != nil || n < 1 || strings.Trim(stepStr, "0123456789") != "" {
			return &parseErr{stepStr, "step must be a positive integer"}
		}
		step = n
	}
	var lo, hi int
	switch a, z, isRange := strings.Cut(base, "-"); {
	case base == "*":
		lo, hi = f.min, f.max
	case isRange:
		var pe *parseErr
		if lo, pe = f.value(a); pe != nil {
			return pe
		}
		if hi, pe = f.value(z); pe != nil {
			return pe
		}
		if lo > hi {
			return &parseErr{base, fmt.Sprintf("range start %d is after its end %d (ranges do not wrap)", lo, hi)}
		}
	default:
		var pe *parseErr
		if lo, pe = f.value(base); pe != nil {
			return pe
		}
		hi = lo
		if hasStep { // "a/n" means a, a+n, ... up to the field's maximum
			hi = f.max
		}
	}
	for v := lo; v <= hi; v += step {
		b.set(v - f.min)
	}
	return nil
}

// value parses a number or (for months and weekdays) a name.
func (f field) value(s string) (int, *parseErr) {
	if s == "" {
		return 0, &parseErr{s, "missing number"}
	}
	if strings.Trim(s, "0123456789") == "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < f.min || n > f.max {
			return 0, &parseErr{s, fmt.Sprintf("out of range %d-%d", f.min, f.max)}
		}
		return n, nil
	}
	for i, name := range f.names {
		if strings.EqualFold(s, name) {
			return f.min + i, nil
		}
	}
	if len(f.names) > 0 {
		return 0, &parseErr{s, fmt.Sprintf("not a number (%d-%d) or a name (%s-%s)", f.min, f.max, f.names[0], f.names[len(f.names)-1])}
	}
	return 0, &parseErr{s, fmt.Sprintf("not a number (%d-%d)", f.min, f.max)}
}

// parseDOM parses day-of-month: plain items plus L, LW and nW.
func (c *cronSchedule) parseDOM(s string) *parseErr {
	for item := range strings.SplitSeq(s, ",") {
		switch {
		case item == "L":
			c.domLast = true
		case item == "LW":
			c.domLastWeekday = true
		case strings.HasSuffix(item, "W"):
			d, pe := fDOM.value(strings.TrimSuffix(item, "W"))
			if pe != nil {
				return &parseErr{item, "W wants a day before it (1W-31W): " + pe.reason}
			}
			c.domNearest.set(d - fDOM.min)
		default:
			if pe := parseItem(fDOM, item, &c.domDays); pe != nil {
				return pe
			}
		}
	}
	return nil
}

// parseDOW parses day-of-week: plain items plus L, xL and x#n.
func (c *cronSchedule) parseDOW(s string) *parseErr {
	for item := range strings.SplitSeq(s, ",") {
		switch {
		case item == "L": // the last day of the week: Saturday
			c.dowDays.set(fDOW.max - fDOW.min)
		case strings.HasSuffix(item, "L"):
			x, pe := fDOW.value(strings.TrimSuffix(item, "L"))
			if pe != nil {
				return &parseErr{item, "L wants a weekday before it (1L-7L, FRIL): " + pe.reason}
			}
			c.dowLast.set(x - fDOW.min)
		case strings.Contains(item, "#"):
			xs, ns, _ := strings.Cut(item, "#")
			x, pe := fDOW.value(xs)
			if pe != nil {
				return &parseErr{item, "# wants a weekday before it: " + pe.reason}
			}
			n, err := strconv.Atoi(ns)
			if err != nil || n < 1 || n > 5 || strings.Trim(ns, "0123456789") != "" {
				return &parseErr{item, fmt.Sprintf("the week after # must be 1-5, got %q", ns)}
			}
			c.dowNth[x-fDOW.min] |= 1 << n
		default:
			if pe := parseItem(fDOW, item, &c.dowDays); pe != nil {
				return pe
			}
		}
	}
	return nil
}

func (c *cronSchedule) String() string { return c.expr }

// Next walks year, month, day, hour and minute in order, resetting the
// smaller units whenever a larger one advances. A schedule that matches
// nothing costs at most 230 years × 12 months × 31 days of checks.
func (c *cronSchedule) Next(after time.Time) time.Time {
	after = after.UTC()
	if after.Year() > fYear.max {
		return time.Time{}
	}
	t := after.Truncate(time.Minute).Add(time.Minute)
	if t.Year() < fYear.min {
		t = time.Date(fYear.min, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	month, day, hour, minute := int(t.Month()), t.Day(), t.Hour(), t.Minute()
	for year := t.Year(); year <= fYear.max; year++ {
		if !c.years.has(year - fYear.min) {
			month, day, hour, minute = 1, 1, 0, 0
			continue
		}
		for ; month <= 12; month++ {
			if !c.months.has(month - fMonth.min) {
				day, hour, minute = 1, 0, 0
				continue
			}
			first := time.Date(year, time.Month(month), 1, 0, 0, 0, 0, time.UTC)
			dim := first.AddDate(0, 1, -1).Day()
			wd1 := int(first.Weekday()) // 0 = Sunday
			for ; day <= dim; day++ {
				if !c.dayMatches(day, dim, (wd1+day-1)%7) {
					hour, minute = 0, 0
					continue
				}
				for ; hour <= 23; hour++ {
					if !c.hours.has(hour) {
						minute = 0
						continue
					}
					for ; minute <= 59; minute++ {
						if c.minutes.has(minute) {
							return time.Date(year, time.Month(month), day, hour, minute, 0, 0, time.UTC)
						}
					}
					minute = 0
				}
				hour, minute = 0, 0
			}
			day, hour, minute = 1, 0, 0
		}
		month = 1
	}
	return time.Time{}
}

// dayMatches says whether day of a month with dim days fires; wd is its
// weekday, 0 = Sunday.
func (c *cronSchedule) dayMatches(day, dim, wd int) bool {
	if c.domIsQ {
		x := wd // offset of EventBridge's weekday (1 = Sunday) from 1
		return c.dowDays.has(x) ||
			(c.dowLast.has(x) && day+7 > dim) ||
			c.dowNth[x]&(1<<((day-1)/7+1)) != 0
	}
	if c.domDays.has(day-1) || (c.domLast && day == dim) {
		return true
	}
	if c.domLastWeekday && day == lastWeekday(dim, wd, day) {
		return true
	}
	if c.domNearest.empty() {
		return false
	}
	// Only a weekday can be nearest to some n: n itself, or the Friday
	// before a Saturday n, or the Monday after a Sunday n, without leaving
	// the month (1W on a Saturday is Monday the 3rd; 31W on a Sunday is
	// Friday the 29th).
	if wd == 0 || wd == 6 {
		return false
	}
	wdOf := func(n int) int { return ((wd+n-day)%7 + 7) % 7 }
	for n := max(1, day-2); n <= min(dim, day+2); n++ {
		if c.domNearest.has(n-1) && nearestWeekday(n, dim, wdOf(n)) == day {
			return true
		}
	}
	return false
}

// lastWeekday is the last Monday-Friday of a month with dim days, given
// that day of it falls on weekday wd.
func lastWeekday(dim, wd, day int) int {
	wdLast := ((wd+dim-day)%7 + 7) % 7
	switch wdLast {
	case 6:
		return dim - 1
	case 0:
		return dim - 2
	}
	return dim
}

// nearestWeekday is the Monday-Friday nearest day n (weekday wd) within
// a month of dim days.
func nearestWeekday(n, dim, wd int) int {
	switch {
	case wd == 6 && n == 1:
		return 3
	case wd == 6:
		return n - 1
	case wd == 0 && n == dim:
		return n - 2
	case wd == 0:
		return n + 1
	}
	return n
}
