// Package registry keeps deployed workflows (their Amazon States Language
// definitions) in JetStream KV, replicated like the function registry: a
// definition is checked (internal/workflow/asl) before anything is
// stored, and each deploy of a name makes a new version.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/workflow/asl"
)

const bucket = "baton_workflows"

// ErrNotFound: no workflow of that name.
var ErrNotFound = errdefs.New(errdefs.NotFound, "workflow_not_found", "workflow not found")

// ErrInvalid: the definition or the name was refused.
var ErrInvalid = errdefs.New(errdefs.Invalid, "invalid_workflow", "invalid workflow")

// Workflow is one deployed version of a workflow.
type Workflow struct {
	Name       string          `json:"name"`
	Version    int             `json:"version"`
	Definition json.RawMessage `json:"definition"` // as JSON, whatever it was deployed as
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"`
}

// Registry is the workflows' store.
type Registry struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// Open opens (or makes) the workflows bucket.
func Open(ctx context.Context, nc *nats.Conn, log *slog.Logger) (*Registry, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("workflows: %w", err)
	}
	kv, err := jsstore.EnsureKV(ctx, js, log, "workflows bucket", jetstream.KeyValueConfig{
		Bucket: bucket, History: 1, Storage: jetstream.FileStorage, Description: "Baton workflows (ASL definitions)",
	})
	if err != nil {
		return nil, err
	}
	return &Registry{js: js, kv: kv}, nil
}

// Put checks src (JSON or YAML) and stores it as name's next version.
// A definition that does not pass leaves what was stored untouched.
func (r *Registry) Put(ctx context.Context, name string, src []byte) (Workflow, error) {
	if err := function.ValidateName(name); err != nil {
		return Workflow{}, fmt.Errorf("%w: workflow name: %v", ErrInvalid, err)
	}
	def, err := asl.Parse(src)
	if err != nil {
		return Workflow{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	canonical, err := json.Marshal(def)
	if err != nil {
		return Workflow{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(src) > 0 && src[0] == '{' && json.Valid(src) {
		canonical = src // keep the user's own text when it was JSON
	}
	for {
		now := time.Now().UTC()
		w := Workflow{Name: name, Version: 1, Definition: canonical, Created: now, Updated: now}
		prev, rev, err := r.get(ctx, name)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return Workflow{}, err
		default:
			w.Version, w.Created = prev.Version+1, prev.Created
		}
		data, _ := json.Marshal(w)
		if rev == 0 {
			_, err = r.kv.Create(ctx, name, data)
		} else {
			_, err = r.kv.Update(ctx, name, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || jsstore.RevisionMismatch(err) {
			continue // another deploy of the same name won: build on it
		}
		if err != nil {
			return Workflow{}, fmt.Errorf("store workflow %s: %w", name, jsstore.Unanswered(err))
		}
		return w, nil
	}
}

// Get returns a workflow and its parsed definition.
func (r *Registry) Get(ctx context.Context, name string) (Workflow, *asl.Definition, error) {
	w, _, err := r.get(ctx, name)
	if err != nil {
		return Workflow{}, nil, err
	}
	def, err := asl.Parse(w.Definition)
	if err != nil {
		return Workflow{}, nil, fmt.Errorf("stored workflow %s no longer parses: %w", name, err)
	}
	return w, def, nil
}

func (r *Registry) get(ctx context.Context, name string) (Workflow, uint64, error) {
	// From the leader: a workflow started right after its deploy must be
	// found (jsstore.LatestGet).
	e, err := jsstore.LatestGet(ctx, r.js, r.kv, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Workflow{}, 0, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err != nil {
		return Workflow{}, 0, fmt.Errorf("read workflow %s: %w", name, jsstore.Unanswered(err))
	}
	var w Workflow
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return Workflow{}, 0, fmt.Errorf("decode workflow %s: %w", name, err)
	}
	return w, e.Revision(), nil
}

// List returns every workflow, by name.
func (r *Registry) List(ctx context.Context) ([]Workflow, error) {
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list workflows: %w", jsstore.Unanswered(err))
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]Workflow, 0, len(names))
	for _, n := range names {
		w, _, err := r.get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// Delete removes a workflow.
func (r *Registry) Delete(ctx context.Context, name string) error {
	if _, _, err := r.get(ctx, name); err != nil {
		return err
	}
	if err := r.kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete workflow %s: %w", name, jsstore.Unanswered(err))
	}
	return nil
}
