package fake

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/node/grain"
	"github.com/baton-faas/baton/internal/sandbox"
)

// The fake answers the host agent's zygote protocol: a grain worker
// started in a fake sandbox forks held instances that, once released,
// serve the Runtime API; kills and exits are reported as for real forks,
// and closing the channel ends the zygote and its children.
func TestZygoteForksEchoingInstances(t *testing.T) {
	r, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := r.Create(context.Background(), sandbox.Spec{ID: "zygote"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ours, theirs, err := grain.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	proc, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"python3", "runtime.py", "zygote"}, ExtraFiles: []*os.File{theirs}})
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	z := grain.New(ours, nil)
	if _, err := z.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	// A one-event Runtime API for the child.
	ln, err := sb.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	var served atomic.Bool
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case strings.HasSuffix(req.URL.Path, "/next") && !served.Swap(true):
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", "r1")
			_, _ = io.WriteString(w, `{"forked":true}`)
		case strings.HasSuffix(req.URL.Path, "/next"):
			<-req.Context().Done()
		default:
			b, _ := io.ReadAll(req.Body)
			got <- string(b)
			w.WriteHeader(http.StatusAccepted)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	child, err := z.Spawn(ctx, map[string]string{runtimeAPIEnv: ln.Addr().String()}, out, out)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	select {
	case b := <-got:
		t.Fatalf("a held child ran before its release (posted %s)", b)
	case <-time.After(50 * time.Millisecond):
	}
	if err := child.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	select {
	case b := <-got:
		if b != `{"forked":true}` {
			t.Errorf("response %q, want the event", b)
		}
	case <-ctx.Done():
		t.Fatal("the released child never answered")
	}
	if err := child.Kill(syscall.SIGKILL); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case <-child.Done():
	case <-ctx.Done():
		t.Fatal("the killed child's exit was never reported")
	}
	if st := child.Exit(); st.Signal != int(syscall.SIGKILL) || st.ZygoteLost {
		t.Errorf("child exit %+v, want killed by SIGKILL", st)
	}

	// A second child, never released, dies with the channel.
	second, err := z.Spawn(ctx, map[string]string{runtimeAPIEnv: ln.Addr().String()}, out, out)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	z.Close()
	<-second.Done()
	if st, err := proc.Wait(); err != nil || st.Code != 0 {
		t.Errorf("zygote exit %+v (%v), want 0 once its channel closed", st, err)
	}
}
