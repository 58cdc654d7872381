//go:build linux

package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
)

// busyExecutable writes an executable script and returns its path with
// the descriptor it was written through still open, which makes exec of
// it fail with ETXTBSY until the descriptor is closed.
func busyExecutable(t *testing.T) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteString("#!/bin/sh\nexit 7\n"); err != nil {
		t.Fatal(err)
	}
	return path, f
}

func newSandbox(t *testing.T) sandbox.Sandbox {
	t.Helper()
	sb, err := New().Create(context.Background(), sandbox.Spec{ID: "sb-test", App: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb
}

// TestStartRetriesBusyExecutable: an executable that is busy only for a
// moment (a concurrently forked child holding the descriptor it was
// written through) still starts.
func TestStartRetriesBusyExecutable(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	path, f := busyExecutable(t)
	released := make(chan struct{})
	go func() {
		time.Sleep(5 * time.Millisecond)
		f.Close()
		close(released)
	}()
	p, err := newSandbox(t).Start(context.Background(), sandbox.ProcessSpec{Args: []string{path}})
	if err != nil {
		t.Fatalf("start of an executable busy for a moment: %v", err)
	}
	<-released
	st, err := p.Wait()
	if err != nil || st.Code != 7 {
		t.Fatalf("exit %+v, err %v; want code 7", st, err)
	}
}

// TestStartBusyExecutableFails: an executable that stays busy is an error
// that says so.
func TestStartBusyExecutableFails(t *testing.T) {
	path, _ := busyExecutable(t)
	_, err := newSandbox(t).Start(context.Background(), sandbox.ProcessSpec{Args: []string{path}})
	if !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("start of a busy executable: %v, want ETXTBSY", err)
	}
}
