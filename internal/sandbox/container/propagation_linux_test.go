//go:build linux && cgo

package container

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/sandbox"
)

// A propagating mount (how the worker shows functions' code layers at
// /var/task) shows what the host mounts below its source after the
// sandbox started, read-only, and the sandbox cannot write there.
func TestPropagatingMountShowsLaterMounts(t *testing.T) {
	r := newRuntime(t)
	ctx := context.Background()
	store, err := image.Open(filepath.Join(t.TempDir(), "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	layer := func(content string) string {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "v"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := store.AddLayerFromDir(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return l.DiffID
	}
	v, err := store.NewView("task")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Attach(ctx, "one", layer("one")); err != nil {
		t.Fatal(err)
	}
	spec := testSpec(t, "prop")
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: v.Path(), Target: "/var/task", Propagate: true})
	sb := create(t, r, spec)

	if out := mustRun(t, sb, "cat /var/task/one/v"); out != "one" {
		t.Errorf("code attached before the sandbox: %q", out)
	}
	if _, err := v.Attach(ctx, "two", layer("two")); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, sb, "cat /var/task/two/v"); out != "two" {
		t.Errorf("code attached while the sandbox runs: %q", out)
	}
	for _, script := range []string{"echo x > /var/task/two/v", "echo x > /var/task/two/new", "mkdir /var/task/three"} {
		if out, st := run(t, sb, script); st.Code == 0 {
			t.Errorf("%q succeeded in the sandbox: %s", script, out)
		}
	}
	mi := []byte(mustRun(t, sb, "cat /proc/self/mountinfo"))
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && strings.HasPrefix(f[4], "/var/task/") && !strings.HasPrefix(f[5], "ro,") && f[5] != "ro" {
			t.Errorf("code mount not read-only in the sandbox: %s", line)
		}
	}

	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// Not mountsUnder: /proc/self is the main thread's view, which
	// libcontainer may have left in a container's mount namespace.
	mi, err = os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), store.Root()) {
		t.Errorf("left mounted under %s:\n%s", store.Root(), mi)
	}
}
