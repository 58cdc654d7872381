package benchmarks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWeedBinary: BATON_BENCH_WEED is used when it names an executable
// file, and otherwise refused with an error naming it (the s3 way's skip
// message).
func TestWeedBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "weed")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, wantErr string }{
		{exe, ""},
		{plain, "not an executable file"},
		{dir, "not an executable file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		t.Setenv("BATON_BENCH_WEED", tc.path)
		got, err := weedBinary(context.Background(), t)
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.path):
			t.Errorf("BATON_BENCH_WEED=%s: got %q, %v; want the path", tc.path, got, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.path)):
			t.Errorf("BATON_BENCH_WEED=%s: got %q, %v; want an error naming the path and %q", tc.path, got, err, tc.wantErr)
		}
	}
}

// TestFreePorts: the ports handed to weed's servers differ.
func TestFreePorts(t *testing.T) {
	ports, err := freePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: %d repeated or invalid", ports, p)
		}
		seen[p] = true
	}
}
