package controller

import (
	"context"
	"testing"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/metrics"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi/fake"
)

// A function's invoke of a name that cannot be a function, or of one
// that does not exist, is refused with its class before anything runs.
func TestInvokeForRefusesBadNames(t *testing.T) {
	fw := fake.New(fake.Options{ID: "w1"})
	defer fw.Close()
	c := New(Options{Registry: registry.New(noFunctions{}, nil, archive.DefaultLimits(), nil), Worker: fw, Metrics: metrics.New()})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown(context.Background())
	for name, class := range map[string]errdefs.Class{"Bad_Name": errdefs.Invalid, "missing": errdefs.NotFound} {
		_, err := c.InvokeFor(context.Background(), "app", name, []byte(`{}`), true)
		if got, code := errdefs.Classify(err); got != class || code == "" {
			t.Errorf("invoke %q: %v (%s %s), want class %s", name, err, got, code, class)
		}
	}
}
