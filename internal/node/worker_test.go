package node

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/sandbox/process"
)

type noCode struct{}

func (noCode) Code(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("no code here")
}

func TestCollectCodeKeepsWhatIsInUse(t *testing.T) {
	w, err := New(Options{DataDir: t.TempDir(), Sandboxes: process.New(), Code: noCode{}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	used, unused := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	for _, d := range []string{used, unused} {
		if err := os.MkdirAll(filepath.Join(w.opts.DataDir, "code", strings.TrimPrefix(d, "sha256:")), 0o755); err != nil {
			t.Fatal(err)
		}
		w.holdCode(d)
	}
	w.releaseCode(unused)
	w.collectCode(0)
	if _, err := os.Stat(filepath.Join(w.opts.DataDir, "code", strings.Repeat("b", 64))); !os.IsNotExist(err) {
		t.Fatalf("unused code not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.opts.DataDir, "code", strings.Repeat("a", 64))); err != nil {
		t.Fatalf("code in use was removed: %v", err)
	}
}

func TestLogAttribution(t *testing.T) {
	lc := newLogCapture(64)
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	lc.follow(r)
	lc.begin("a")
	lc.begin("b")
	_, _ = wr.WriteString("2026-01-01T00:00:00Z\tb\tINFO\tfor b\n2026-01-01T00:00:00Z\ta\tINFO\tfor a\nunattributed\n")
	aOut, _ := lc.end("a")
	if string(aOut) != "2026-01-01T00:00:00Z\ta\tINFO\tfor a\n" {
		t.Fatalf("a got %q", aOut)
	}
	_, _ = wr.WriteString("no newline")
	bOut, _ := lc.end("b")
	if !strings.Contains(string(bOut), "for b") || !strings.HasSuffix(string(bOut), "no newline\n") {
		t.Fatalf("b got %q", bOut)
	}
	if orphan := lc.takeOrphan(); string(orphan) != "unattributed\n" {
		t.Fatalf("orphan output %q", orphan)
	}
	lc.begin("c")
	_, _ = wr.WriteString(strings.Repeat("x", 100) + "\n")
	cOut, truncated := lc.end("c")
	if len(cOut) != 64 || !truncated {
		t.Fatalf("cap not applied: %d bytes, truncated=%v", len(cOut), truncated)
	}
	wr.Close()
	lc.waitOrClose(0)
}
