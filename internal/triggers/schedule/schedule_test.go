package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the DST test needs a zone with DST whatever the host has

	"github.com/baton-faas/baton/internal/errdefs"
)

// ts parses "2006-01-02T15:04" or "2006-01-02T15:04:05" in UTC.
func ts(t *testing.T, s string) time.Time {
	t.Helper()
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02T15:04:05.999999999"} {
		if v, err := time.Parse(layout, s); err == nil {
			return v
		}
	}
	t.Fatalf("bad test time %q", s)
	return time.Time{}
}

var validExprs = []string{
	"rate(1 minute)",
	"rate(5 minutes)",
	"rate(1 hour)",
	"rate(12 hours)",
	"rate(1 day)",
	"rate(7 days)",
	"rate(1 second)",
	"rate(30 seconds)",
	"rate(106751 days)",
	"cron(0/5 * * * ? *)",
	"cron(0 10 * * ? *)",
	"cron(15 12 * * ? *)",
	"cron(0 18 ? * MON-FRI *)",
	"cron(0 8 1 * ? *)",
	"cron(0/10 * ? * MON-FRI *)",
	"cron(0/5 8-17 ? * MON-FRI *)",
	"cron(0 9 ? * 2#1 *)",
	"cron(15 10 ? * 6L 2019-2022)",
	"cron(0 0 L * ? *)",
	"cron(0 0 LW * ? *)",
	"cron(0 0 15W * ? *)",
	"cron(0 0 1,15 JAN,jul ? *)",
	"cron(0-59/20 */6 * * ? 2024/2)",
	"cron(0 0 ? * SUN,SAT *)",
	"cron(0 0 ? * L *)",
	"cron(0 0 29 2 ? *)",
	"cron(0 0 ? * 6L,2#1,FRIL,tue#3 *)",
	"cron(5 4 * 1-12/3 ? *)",
	"cron(0 0 1W,L,10-12 * ? 1970)",
	"cron(0 0 ? * 1-7/2 2199)",
}

func TestParseValid(t *testing.T) {
	for _, expr := range validExprs {
		s, err := Parse(expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", expr, err)
			continue
		}
		if s.String() != expr {
			t.Errorf("Parse(%q).String() = %q", expr, s.String())
		}
	}
	// Surrounding and inner space is tolerated; String trims the outside.
	s, err := Parse("  rate(  5   minutes )\n")
	if err != nil || s.String() != "rate(  5   minutes )" {
		t.Errorf("spaced rate: %v, %v", s, err)
	}
}

func TestParseInvalid(t *testing.T) {
	cases := []struct{ expr, want string }{
		{"", "empty schedule expression"},
		{"   ", "empty schedule expression"},
		{"rate", "want rate(value unit) or cron("},
		{"RATE(5 minutes)", "want rate(value unit) or cron("},
		{"at(2024-01-01T00:00:00)", "want rate(value unit) or cron("},
		{"rate()", "got 0 part(s)"},
		{"rate(5)", "got 1 part(s)"},
		{"rate(5 minutes now)", "got 3 part(s)"},
		{"rate(0 minutes)", `rate(0 minutes): value "0": must be a positive integer`},
		{"rate(-1 minutes)", `value "-1": must be a positive integer`},
		{"rate(+5 minutes)", `value "+5": must be a positive integer`},
		{"rate(1.5 hours)", `value "1.5": must be a positive integer`},
		{"rate(five minutes)", `value "five": must be a positive integer`},
		{"rate(99999999999999999999 days)", `value "99999999999999999999": too large`},
		{"rate(106752 days)", `value "106752": period too long`},
		{"rate(5 weeks)", `unit "weeks": want second(s), minute(s), hour(s) or day(s)`},
		{"rate(5 Minutes)", `unit "Minutes"`},
		{"rate(5 minute)", `unit "minute": with value 5 write "minutes"`},
		{"rate(1 hours)", `unit "hours": with value 1 write "hour"`},
		{"cron(* * * * *)", "want 6 fields (minutes hours day-of-month month day-of-week year), got 5"},
		{"cron(0 0 * * ? * 5)", "got 7"},
		{"cron()", "got 0"},
		{"cron(60 * * * ? *)", `minutes "60": out of range 0-59`},
		{"cron(* 24 * * ? *)", `hours "24": out of range 0-23`},
		{"cron(0 0 32 * ? *)", `day-of-month "32": out of range 1-31`},
		{"cron(0 0 0 * ? *)", `day-of-month "0": out of range 1-31`},
		{"cron(0 0 * 13 ? *)", `month "13": out of range 1-12`},
		{"cron(0 0 ? * 8 *)", `cron(0 0 ? * 8 *): day-of-week "8": out of range 1-7`},
		{"cron(0 0 ? * 0 *)", `day-of-week "0": out of range 1-7`},
		{"cron(0 0 * * ? 1969)", `year "1969": out of range 1970-2199`},
		{"cron(0 0 * * ? 2200)", `year "2200": out of range 1970-2199`},
		{"cron(0 0 * * * *)", `day-of-week "*": one of day-of-month and day-of-week must be "?"`},
		{"cron(0 0 1 * MON *)", `one of day-of-month and day-of-week must be "?"`},
		{"cron(0 0 ? * ? *)", `"?" may be in only one of day-of-month and day-of-week`},
		{"cron(? 0 * * ? *)", `minutes "?": "?" is allowed only as the whole day-of-month or day-of-week field`},
		{"cron(0 0 1,? * ? *)", `day-of-month "?": "?" is allowed only`},
		{"cron(0 0 * FOO ? *)", `month "FOO": not a number (1-12) or a name (JAN-DEC)`},
		{"cron(0 0 ? * FUNDAY *)", `day-of-week "FUNDAY": not a number (1-7) or a name (SUN-SAT)`},
		{"cron(x 0 * * ? *)", `minutes "x": not a number (0-59)`},
		{"cron(5-1 * * * ? *)", `minutes "5-1": range start 5 is after its end 1 (ranges do not wrap)`},
		{"cron(0 0 ? * FRI-MON *)", `day-of-week "FRI-MON": range start 6 is after its end 2`},
		{"cron(0 0 * * ? 2020-2010)", `year "2020-2010": range start 2020`},
		{"cron(*/0 * * * ? *)", `minutes "0": step must be a positive integer`},
		{"cron(*/x * * * ? *)", `minutes "x": step must be a positive integer`},
		{"cron(1/+2 * * * ? *)", `minutes "+2": step must be a positive integer`},
		{"cron(1,,2 * * * ? *)", `minutes "": empty list item`},
		{"cron(0 0 1-* * ? *)", `day-of-month "*": not a number (1-31)`},
		{"cron(0 -5 * * ? *)", `hours "": missing number`},
		{"cron(0 0 ?/2 * ? *)", `day-of-month "?": not a number`},
		{"cron(0 0 ? * 3#6 *)", `day-of-week "3#6": the week after # must be 1-5, got "6"`},
		{"cron(0 0 ? * 3#0 *)", `the week after # must be 1-5, got "0"`},
		{"cron(0 0 ? * 3# *)", `the week after # must be 1-5, got ""`},
		{"cron(0 0 ? * 8#1 *)", `day-of-week "8#1": # wants a weekday before it: out of range 1-7`},
		{"cron(0 0 32W * ? *)", `day-of-month "32W": W wants a day before it (1W-31W): out of range 1-31`},
		{"cron(0 0 W * ? *)", `day-of-month "W": W wants a day before it (1W-31W): missing number`},
		{"cron(0 0 ? * 8L *)", `day-of-week "8L": L wants a weekday before it (1L-7L, FRIL): out of range 1-7`},
		{"cron(L * * * ? *)", `minutes "L": not a number (0-59)`},
		{"cron(0 0 ? * L-2 *)", `day-of-week "L": not a number (1-7) or a name`},
		{"cron(0 0 30 2 ? *)", "never fires between 1970 and 2199"},
		{"cron(0 0 31 4,6,9,11 ? *)", "never fires"},
		{"cron(0 0 ? 2 2#5 2015)", "never fires"}, // February 2015 has four of every weekday
		{"cron(" + strings.Repeat("1,", 200) + "1 * * * ? *)", "longer than 256 characters"},
	}
	for _, c := range cases {
		s, err := Parse(c.expr)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.expr, s, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) error %q does not contain %q", c.expr, err, c.want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error %v is not ErrInvalid", c.expr, err)
		}
		if class, code := errdefs.Classify(err); class != errdefs.Invalid || code != "invalid_schedule" {
			t.Errorf("Parse(%q) error classified %s/%s", c.expr, class, code)
		}
	}
}

func TestCronNext(t *testing.T) {
	cases := []struct {
		expr, after, want string // want "" means the zero time
	}{
		// Strictly after, whole minutes.
		{"cron(0/5 * * * ? *)", "2024-01-01T00:00", "2024-01-01T00:05"},
		{"cron(0/5 * * * ? *)", "2024-01-01T00:03:30", "2024-01-01T00:05"},
		{"cron(0/5 * * * ? *)", "2024-01-01T00:04:59.999999999", "2024-01-01T00:05"},
		{"cron(0/5 * * * ? *)", "2024-01-01T00:55:00.000000001", "2024-01-01T01:00"},
		{"cron(* * * * ? *)", "2024-01-01T00:00:59", "2024-01-01T00:01"},
		// Hour, day, month and year boundaries.
		{"cron(30 * * * ? *)", "2024-01-01T23:45", "2024-01-02T00:30"},
		{"cron(0 0 1 1 ? *)", "2023-12-31T23:59", "2024-01-01T00:00"},
		{"cron(0 0 1 1 ? *)", "2024-01-01T00:00", "2025-01-01T00:00"},
		{"cron(0 0 31 * ? *)", "2024-04-01T00:00", "2024-05-31T00:00"}, // April has no 31st
		{"cron(0 9 1 * ? *)", "2024-12-01T09:00", "2025-01-01T09:00"},
		{"cron(5 4 * 1-12/3 ? *)", "2024-01-31T04:05", "2024-04-01T04:05"},
		{"cron(0 0 1,15 JAN,jul ? *)", "2024-01-15T00:00", "2024-07-01T00:00"},
		{"cron(0 8 ? * MON-FRI *)", "2024-01-05T09:00", "2024-01-08T08:00"}, // Friday to Monday
		{"cron(0 0 ? * SUN,SAT *)", "2024-01-01T00:00", "2024-01-06T00:00"},
		{"cron(0 0 ? * L *)", "2024-01-06T00:00", "2024-01-13T00:00"}, // L alone is Saturday
		{"cron(0-59/20 */6 * * ? 2024/2)", "2024-12-31T18:40", "2026-01-01T00:00"},
		// Leap years: Feb 29 exists in 2024 and 2028 and 2000, not in 2100.
		{"cron(59 23 L * ? *)", "2024-02-01T00:00", "2024-02-29T23:59"},
		{"cron(59 23 L * ? *)", "2023-02-01T00:00", "2023-02-28T23:59"},
		{"cron(59 23 L * ? *)", "2024-02-29T23:59", "2024-03-31T23:59"},
		{"cron(0 12 29 2 ? *)", "2024-03-01T00:00", "2028-02-29T12:00"},
		{"cron(0 12 29 2 ? *)", "1999-03-01T00:00", "2000-02-29T12:00"},
		{"cron(0 12 29 2 ? *)", "2097-01-01T00:00", "2104-02-29T12:00"},
		{"cron(0 0 1 3 ? *)", "2024-02-28T00:00", "2024-03-01T00:00"},
		// W: nearest weekday, never leaving the month.
		{"cron(0 0 15W * ? *)", "2024-06-01T00:00", "2024-06-14T00:00"}, // 15th is a Saturday
		{"cron(0 0 15W * ? *)", "2024-09-01T00:00", "2024-09-16T00:00"}, // 15th is a Sunday
		{"cron(0 0 15W * ? *)", "2024-05-01T00:00", "2024-05-15T00:00"}, // Wednesday
		{"cron(0 0 1W * ? *)", "2024-05-31T00:00", "2024-06-03T00:00"},  // 1st is a Saturday: Monday 3rd
		{"cron(0 0 31W * ? *)", "2024-03-01T00:00", "2024-03-29T00:00"}, // 31st is a Sunday: Friday 29th
		{"cron(0 0 31W * ? *)", "2024-04-01T00:00", "2024-05-31T00:00"}, // April has no 31st
		{"cron(0 0 LW * ? *)", "2024-08-01T00:00", "2024-08-30T00:00"},  // 31st is a Saturday
		{"cron(0 0 LW * ? *)", "2024-03-01T00:00", "2024-03-29T00:00"},  // 31st is a Sunday
		{"cron(0 0 LW * ? *)", "2024-05-01T00:00", "2024-05-31T00:00"},  // 31st is a Friday
		// L and # in day-of-week.
		{"cron(0 10 ? * 6L *)", "2024-05-01T00:00", "2024-05-31T10:00"},
		{"cron(0 10 ? * 6L *)", "2024-02-01T00:00", "2024-02-23T10:00"}, // the 29th is a Thursday
		{"cron(0 10 ? * FRIL *)", "2024-02-23T10:00", "2024-03-29T10:00"},
		{"cron(0 10 ? * 3#2 *)", "2024-01-01T00:00", "2024-01-09T10:00"},
		{"cron(0 10 ? * 3#2 *)", "2024-01-09T10:00", "2024-02-13T10:00"},
		{"cron(0 10 ? * MON#5 *)", "2024-01-01T00:00", "2024-01-29T10:00"},
		{"cron(0 10 ? * MON#5 *)", "2024-02-01T00:00", "2024-04-29T10:00"}, // no fifth Monday in Feb or March
		{"cron(15 10 ? * 6L 2002-2005)", "2005-12-30T10:15", ""},
		// Years: before 1970 starts at 1970; past the last year is never.
		{"cron(0 0 1 1 ? 2020)", "2019-06-01T00:00", "2020-01-01T00:00"},
		{"cron(0 0 1 1 ? 2020)", "2021-01-01T00:00", ""},
		{"cron(0 0 1 1 ? 2199)", "2199-01-01T00:00", ""},
		{"cron(* * * * ? *)", "2199-12-31T23:59", ""},
		{"cron(* * * * ? *)", "2300-01-01T00:00", ""},
		{"cron(* * * * ? *)", "1969-06-01T00:00", "1970-01-01T00:00"},
		{"cron(* * * * ? *)", "1969-12-31T23:59:30", "1970-01-01T00:00"},
		{"cron(0 0 ? * 1-7/2 2199)", "1970-01-01T00:00", "2199-01-01T00:00"}, // 2199-01-01 is a Tuesday (3)
	}
	for _, c := range cases {
		s, err := Parse(c.expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.expr, err)
		}
		got := s.Next(ts(t, c.after))
		var want time.Time
		if c.want != "" {
			want = ts(t, c.want)
		}
		if !got.Equal(want) {
			t.Errorf("%s.Next(%s) = %v, want %v", c.expr, c.after, got, want)
		}
		if !got.IsZero() && got.Location() != time.UTC {
			t.Errorf("%s.Next(%s) is in %v, want UTC", c.expr, c.after, got.Location())
		}
	}
}

// TestCronDSTIrrelevant: schedules are UTC; a caller's zone, and its
// daylight-saving jumps, change nothing.
func TestCronDSTIrrelevant(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse("cron(30 * * * ? *)")
	if err != nil {
		t.Fatal(err)
	}
	// New York springs forward at 02:00 local (07:00 UTC) on 10 March 2024
	// and falls back on 3 November 2024: hourly ticks stay an hour apart.
	for _, start := range []time.Time{
		time.Date(2024, 3, 10, 0, 0, 0, 0, ny),
		time.Date(2024, 11, 3, 0, 0, 0, 0, ny),
	} {
		ticks := Ticks(s, start, start.Add(6*time.Hour), 100)
		if len(ticks) != 6 {
			t.Fatalf("from %v: %d ticks, want 6: %v", start, len(ticks), ticks)
		}
		for i, tk := range ticks {
			if tk.Location() != time.UTC || tk.Minute() != 30 {
				t.Errorf("tick %v is not hh:30 UTC", tk)
			}
			if i > 0 && tk.Sub(ticks[i-1]) != time.Hour {
				t.Errorf("ticks %v and %v are not an hour apart", ticks[i-1], tk)
			}
		}
	}
	// The same instant in two zones gives the same answer.
	d, _ := Parse("cron(0 2 * * ? *)")
	at := time.Date(2024, 3, 10, 1, 0, 0, 0, ny)
	if a, b := d.Next(at), d.Next(at.UTC()); !a.Equal(b) || !a.Equal(time.Date(2024, 3, 11, 2, 0, 0, 0, time.UTC)) {
		t.Errorf("Next in New York %v, in UTC %v", a, b)
	}
}

// TestCronAgainstOracle compares the search in Next with plain,
// independently written day rules over years that include 2024 (leap),
// 2100 (not leap) and months starting on every weekday.
func TestCronAgainstOracle(t *testing.T) {
	lastDay := func(d time.Time) int { return time.Date(d.Year(), d.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day() }
	dayOf := func(d time.Time, n int) time.Time { return time.Date(d.Year(), d.Month(), n, 0, 0, 0, 0, time.UTC) }
	nearest := func(d time.Time, n int) bool {
		if n > lastDay(d) {
			return false
		}
		w := dayOf(d, n)
		switch {
		case w.Weekday() == time.Saturday && n == 1:
			w = w.AddDate(0, 0, 2)
		case w.Weekday() == time.Saturday:
			w = w.AddDate(0, 0, -1)
		case w.Weekday() == time.Sunday && n == lastDay(d):
			w = w.AddDate(0, 0, -2)
		case w.Weekday() == time.Sunday:
			w = w.AddDate(0, 0, 1)
		}
		return w.Equal(d)
	}
	cases := []struct {
		days string // day-of-month, month, day-of-week fields
		day  func(d time.Time) bool
	}{
		{"15W * ?", func(d time.Time) bool { return nearest(d, 15) }},
		{"1W * ?", func(d time.Time) bool { return nearest(d, 1) }},
		{"31W * ?", func(d time.Time) bool { return nearest(d, 31) }},
		{"1W,31W * ?", func(d time.Time) bool { return nearest(d, 1) || nearest(d, 31) }},
		{"LW * ?", func(d time.Time) bool {
			l := dayOf(d, lastDay(d))
			for l.Weekday() == time.Saturday || l.Weekday() == time.Sunday {
				l = l.AddDate(0, 0, -1)
			}
			return l.Equal(d)
		}},
		{"L FEB ?", func(d time.Time) bool { return d.Month() == time.February && d.Day() == lastDay(d) }},
		{"29 2 ?", func(d time.Time) bool { return d.Month() == time.February && d.Day() == 29 }},
		{"? * 6L", func(d time.Time) bool { return d.Weekday() == time.Friday && d.AddDate(0, 0, 7).Month() != d.Month() }},
		{"? * 3#2", func(d time.Time) bool { return d.Weekday() == time.Tuesday && d.Day() > 7 && d.Day() <= 14 }},
		{"? * MON#5,SUN#1", func(d time.Time) bool {
			return (d.Weekday() == time.Monday && d.Day() > 28) || (d.Weekday() == time.Sunday && d.Day() <= 7)
		}},
		{"? * MON-FRI", func(d time.Time) bool { return d.Weekday() != time.Saturday && d.Weekday() != time.Sunday }},
		{"? JUN-AUG 1,7", func(d time.Time) bool {
			return d.Month() >= time.June && d.Month() <= time.August && (d.Weekday() == time.Sunday || d.Weekday() == time.Saturday)
		}},
		{"1-31/10 * ?", func(d time.Time) bool { return d.Day() == 1 || d.Day() == 11 || d.Day() == 21 || d.Day() == 31 }},
	}
	for _, span := range [][2]int{{2023, 2029}, {2099, 2102}} {
		for _, c := range cases {
			expr := "cron(30 9 " + c.days + " *)"
			s, err := Parse(expr)
			if err != nil {
				t.Fatalf("Parse(%q): %v", expr, err)
			}
			from := time.Date(span[0], 1, 1, 0, 0, 0, 0, time.UTC)
			to := time.Date(span[1], 1, 1, 0, 0, 0, 0, time.UTC)
			var want []time.Time
			for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
				if c.day(d) {
					want = append(want, d.Add(9*time.Hour+30*time.Minute))
				}
			}
			got := Ticks(s, from, to, 10000)
			if len(got) != len(want) {
				t.Errorf("%s over %d-%d: %d ticks, want %d", expr, span[0], span[1], len(got), len(want))
				continue
			}
			for i := range got {
				if !got[i].Equal(want[i]) {
					t.Errorf("%s: tick %d is %v, want %v", expr, i, got[i], want[i])
					break
				}
			}
		}
	}
}

func TestRateNext(t *testing.T) {
	anchor := ts(t, "2024-01-01T00:00:07")
	cases := []struct {
		expr   string
		anchor time.Time // zero: Parse (the Unix epoch)
		after  string
		want   string
	}{
		{"rate(1 minute)", time.Time{}, "2024-01-01T00:00:30", "2024-01-01T00:01"},
		{"rate(1 minute)", time.Time{}, "2024-01-01T00:01", "2024-01-01T00:02"}, // on a tick: the next one
		{"rate(1 second)", time.Time{}, "2024-01-01T00:00:00.5", "2024-01-01T00:00:01"},
		{"rate(7 days)", time.Time{}, "1970-01-01T00:00", "1970-01-08T00:00"},
		{"rate(1 hour)", time.Time{}, "1969-12-31T22:30", "1969-12-31T23:00"}, // before the anchor too
		{"rate(5 minutes)", anchor, "2024-01-01T00:12", "2024-01-01T00:15:07"},
		{"rate(5 minutes)", anchor, "2024-01-01T00:15:07", "2024-01-01T00:20:07"},
		{"rate(5 minutes)", anchor, "2024-01-01T00:00:06", "2024-01-01T00:00:07"},
		{"rate(5 minutes)", anchor, "2023-12-31T23:58", "2024-01-01T00:00:07"},
		{"rate(5 minutes)", anchor, "2023-12-31T23:55:06", "2023-12-31T23:55:07"},
		{"rate(1 day)", anchor, "2024-02-28T12:00", "2024-02-29T00:00:07"},
		{"rate(1 day)", anchor, "2024-02-29T00:00:07", "2024-03-01T00:00:07"},
		{"rate(1 second)", ts(t, "2024-01-01T00:00:00.25"), "2024-01-01T00:00:03.25", "2024-01-01T00:00:04.25"},
		// More than 292 years from the anchor, beyond time.Duration.
		{"rate(7 seconds)", time.Time{}, "2500-01-01T00:00", "2500-01-01T00:00:01"}, // 16725225600 s = 6 mod 7
		{"rate(1 minute)", ts(t, "2500-01-01T00:00:30"), "1600-01-01T00:00", "1600-01-01T00:00:30"},
	}
	for _, c := range cases {
		var s Schedule
		var err error
		if c.anchor.IsZero() {
			s, err = Parse(c.expr)
		} else {
			s, err = ParseAt(c.expr, c.anchor)
		}
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.expr, err)
		}
		got := s.Next(ts(t, c.after))
		if want := ts(t, c.want); !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%s anchored at %v: Next(%s) = %v, want %v UTC", c.expr, c.anchor, c.after, got, want)
		}
	}
}

func TestRateAnchorIsAnInstant(t *testing.T) {
	// Replicas may hold the creation time in different zones, or with a
	// monotonic reading; the ticks must not differ.
	now := time.Now()
	ny, _ := time.LoadLocation("America/New_York")
	a, _ := ParseAt("rate(10 seconds)", now)
	b, _ := ParseAt("rate(10 seconds)", now.In(ny).Round(0))
	after := now.Add(time.Hour + 3*time.Second)
	if x, y := a.Next(after), b.Next(after); !x.Equal(y) || !x.Equal(now.Add(time.Hour+10*time.Second)) {
		t.Errorf("same anchor, different ticks: %v and %v", x, y)
	}
}

func TestRateBeyondRange(t *testing.T) {
	s, _ := Parse("rate(1 day)")
	if got := s.Next(time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC)); !got.IsZero() {
		t.Errorf("Next past year 9999 = %v, want zero", got)
	}
	if got := s.Next(time.Time{}); !got.Equal(time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Next(zero time) = %v", got)
	}
}

type stuck struct{ at time.Time }

func (s stuck) Next(time.Time) time.Time { return s.at }
func (s stuck) String() string           { return "stuck" }

func TestTicks(t *testing.T) {
	minutely, _ := Parse("rate(1 minute)")
	from, to := ts(t, "2024-01-01T00:00"), ts(t, "2024-01-01T01:00")
	cases := []struct {
		name     string
		s        Schedule
		from, to time.Time
		max      int
		want     int
	}{
		{"capped", minutely, from, to, 10, 10},
		{"uncapped, (from, to] excludes from and includes to", minutely, from, to, 100, 60},
		{"exact cap", minutely, from, to, 60, 60},
		{"zero max", minutely, from, to, 0, 0},
		{"negative max", minutely, from, to, -1, 0},
		{"empty interval", minutely, from, from, 100, 0},
		{"reversed interval", minutely, to, from, 100, 0},
		{"sub-minute interval without a tick", minutely, from.Add(time.Second), from.Add(59 * time.Second), 100, 0},
		{"schedule ends", mustParse(t, "cron(0 0 1 1 ? 2020-2022)"), ts(t, "2019-01-01T00:00"), ts(t, "2030-01-01T00:00"), 100, 3},
		{"schedule that does not advance", stuck{from}, from, to, 100, 0},
	}
	for _, c := range cases {
		got := Ticks(c.s, c.from, c.to, c.max)
		if len(got) != c.want {
			t.Errorf("%s: %d ticks, want %d: %v", c.name, len(got), c.want, got)
		}
		for i, tk := range got {
			if !tk.After(c.from) || tk.After(c.to) || (i > 0 && !tk.After(got[i-1])) {
				t.Errorf("%s: tick %d %v out of order or outside (%v, %v]", c.name, i, tk, c.from, c.to)
			}
		}
	}
	// The proof: one per second over 60 s is 60 ticks.
	secondly, _ := ParseAt("rate(1 second)", ts(t, "2024-05-05T10:00:00.123"))
	if got := Ticks(secondly, ts(t, "2024-05-05T10:00:00.123"), ts(t, "2024-05-05T10:01:00.123"), 1000); len(got) != 60 {
		t.Errorf("rate(1 second) over 60 s: %d ticks", len(got))
	}
}

func mustParse(t *testing.T, expr string) Schedule {
	t.Helper()
	s, err := Parse(expr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzParse: Parse never panics, and a parsed schedule's fire times
// strictly increase from any starting point.
func FuzzParse(f *testing.F) {
	for _, e := range validExprs {
		f.Add(e, int64(1704067200), int64(0))
	}
	f.Add("cron(0 0 ? * 5#5 *)", int64(-1e10), int64(3))
	f.Add("cron(0 0 31W 2,4 ? 2100)", int64(7e9), int64(0))
	f.Add("rate(3 seconds)", int64(1e12), int64(-1e12))
	f.Add("cron(1-2/0,L#3W ? * * ? *)", int64(0), int64(0))
	f.Fuzz(func(t *testing.T, expr string, afterSec, anchorSec int64) {
		// Keep times within years 1..9999, time.Time's sane range.
		const span = 253402300800 + 62135596800
		after := time.Unix(afterSec%span, 0)
		anchor := time.Unix(anchorSec%span, 0)
		s, err := ParseAt(expr, anchor)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || err.Error() == "" {
				t.Fatalf("ParseAt(%q) error %v is not a ParseError", expr, err)
			}
			return
		}
		if s2, err := ParseAt(s.String(), anchor); err != nil || s2.String() != s.String() {
			t.Fatalf("String() %q does not parse back: %v", s.String(), err)
		}
		t0 := after
		for range 5 {
			n := s.Next(t0)
			if n.IsZero() {
				return
			}
			if !n.After(t0) {
				t.Fatalf("%s: Next(%v) = %v, not after it", expr, t0, n)
			}
			t0 = n
		}
	})
}

// Benchmarks: go test -run '^$' -bench . ./internal/triggers/schedule/
func BenchmarkParseCron(b *testing.B) {
	for b.Loop() {
		if _, err := Parse("cron(0/5 8-17 ? * MON-FRI *)"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCronNever is the worst case of the never-fires check:
// every day of five months in every year is looked at and refused.
func BenchmarkParseCronNever(b *testing.B) {
	for b.Loop() {
		if _, err := Parse("cron(0 0 31 2,4,6,9,11 ? *)"); err == nil {
			b.Fatal("parsed an expression that never fires")
		}
	}
}

func BenchmarkNextCron(b *testing.B) {
	s, _ := Parse("cron(0 10 ? * 6L *)")
	t := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		t = s.Next(t)
	}
}

func BenchmarkNextRate(b *testing.B) {
	s, _ := ParseAt("rate(1 second)", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	t := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		t = s.Next(t)
	}
}
