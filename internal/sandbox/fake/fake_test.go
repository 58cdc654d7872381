package fake

import (
	"context"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/sandbox"
	"github.com/baton-faas/baton/internal/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Runtime {
		r, err := New(Options{StartLatency: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

// Limits are recorded, not enforced; a negative start latency is refused.
func TestLimitsRecorded(t *testing.T) {
	if _, err := New(Options{StartLatency: -time.Second}); err == nil {
		t.Error("a negative start latency was accepted")
	}
	r, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := r.Create(context.Background(), sandbox.Spec{ID: "limits", MemoryMB: 128, PIDs: 64, CPUShares: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	if got, want := sb.(*Sandbox).Resources(), (sandbox.Resources{MemoryMB: 128, PIDs: 64, CPUShares: 1024}); got != want {
		t.Errorf("resources %+v, want %+v", got, want)
	}
	grown := sandbox.Resources{MemoryMB: 256, PIDs: 128, CPUShares: 2048, CPUMillis: 1000}
	if err := sb.Resize(context.Background(), grown); err != nil {
		t.Fatal(err)
	}
	if got := sb.(*Sandbox).Resources(); got != grown {
		t.Errorf("resources after Resize %+v, want %+v", got, grown)
	}
	if err := sb.Resize(context.Background(), sandbox.Resources{MemoryMB: -1}); err == nil {
		t.Error("a negative limit was accepted")
	}
	l := sandbox.Limits{MemoryMB: 128, PIDs: 256, CPUShares: 1024, CPUMillis: 1000}
	p, err := sb.Start(context.Background(), sandbox.ProcessSpec{Args: []string{"idle"}, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(*Process).Limits(); got != l {
		t.Errorf("process limits %+v, want %+v", got, l)
	}
	_ = p.Kill()
	if st, err := p.Wait(); err != nil || st.Signal != 9 {
		t.Errorf("killed idle process: %+v (%v)", st, err)
	}
}
