package cluster

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Knobs of the benchmarks, read from the environment so that a quick run
// (fewer rates, shorter windows) needs no code change. Bad values fail the
// benchmark with the variable's name.

// envInt reads a positive integer.
func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// envDuration reads a positive duration ("3s", "500ms").
func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration such as 3s", name, s)
	}
	return d
}

// envRates reads a comma-separated list of positive rates per second.
func envRates(tb testing.TB, name string, def []float64) []float64 {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	rates, err := parseRates(s)
	if err != nil {
		tb.Fatalf("%s=%q: %v", name, s, err)
	}
	return rates
}

// parseRates parses "100,400,2500" into rates per second.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 || r > 1e6 {
			return nil, fmt.Errorf("rate %q: want a number of requests per second between 0 and 1e6", f)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no rate given")
	}
	return out, nil
}

func TestParseRates(t *testing.T) {
	got, err := parseRates(" 100, 400,2500 ")
	if err != nil || len(got) != 3 || got[0] != 100 || got[2] != 2500 {
		t.Fatalf("parseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"", "x", "100,-1", "0", ","} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) accepted", bad)
		}
	}
}
