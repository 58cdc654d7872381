package registry

import (
	"errors"
	"sync"
	"testing"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
)

const hello = `{"StartAt": "Hi", "States": {"Hi": {"Type": "Task", "Resource": "hello", "End": true}}}`

func open(t *testing.T) *Registry {
	t.Helper()
	s := clustertest.Server(t)
	nc, _ := clustertest.Connect(t, s)
	r, err := Open(clustertest.Context(t), nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDeployVersionsListAndDelete(t *testing.T) {
	r := open(t)
	ctx := clustertest.Context(t)
	if l, err := r.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("empty list: %v, %v", l, err)
	}
	w, err := r.Put(ctx, "greet", []byte(hello))
	if err != nil || w.Version != 1 || string(w.Definition) != hello {
		t.Fatalf("first deploy: %+v, %v", w, err)
	}
	yaml := "StartAt: Hi\nStates:\n  Hi:\n    Type: Pass\n    End: true\n"
	w, err = r.Put(ctx, "greet", []byte(yaml))
	if err != nil || w.Version != 2 {
		t.Fatalf("second deploy: %+v, %v", w, err)
	}
	got, def, err := r.Get(ctx, "greet")
	if err != nil || got.Version != 2 || def.States["Hi"].Type != "Pass" {
		t.Fatalf("get: %+v %+v %v", got, def, err)
	}
	// A refused definition leaves version 2 as it was.
	if _, err := r.Put(ctx, "greet", []byte(`{"StartAt": "X", "States": {"X": {"Type": "Task", "End": true}}}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad definition: %v", err)
	}
	if _, err := r.Put(ctx, "Bad Name", []byte(hello)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if got, _, _ := r.Get(ctx, "greet"); got.Version != 2 {
		t.Fatalf("after a refused deploy: version %d", got.Version)
	}
	if l, err := r.List(ctx); err != nil || len(l) != 1 || l[0].Name != "greet" {
		t.Fatalf("list: %+v, %v", l, err)
	}
	if err := r.Delete(ctx, "greet"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Get(ctx, "greet"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := r.Delete(ctx, "greet"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

// Concurrent deploys of one name each get a version of their own.
func TestConcurrentDeploysGetDistinctVersions(t *testing.T) {
	r := open(t)
	ctx := clustertest.Context(t)
	const n = 8
	versions := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := r.Put(ctx, "busy", []byte(hello))
			if err != nil {
				t.Error(err)
				return
			}
			versions[i] = w.Version
		}()
	}
	wg.Wait()
	seen := map[int]bool{}
	for _, v := range versions {
		if seen[v] || v < 1 || v > n {
			t.Fatalf("versions %v: want 1..%d once each", versions, n)
		}
		seen[v] = true
	}
}
