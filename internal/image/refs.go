package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// A ref is a named, durable reference to one layer that is not part of an
// image: a function's code layer, named after the code's digest. GC keeps
// the layers that refs name, so a layer stored under a ref survives
// restarts until DeleteRef.
type ref struct {
	Name   string `json:"name"`
	DiffID string `json:"diffID"`
}

// WithRef records, together with the layer, a ref called name pointing to
// it. Adding and naming happen under one GC exclusion, so the new layer is
// never collected in between.
func WithRef(name string) DirOption {
	return func(o *dirOptions) { o.ref = name }
}

// validRef checks a ref name; ref names use the image name alphabet.
func validRef(name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("ref: %w", err)
	}
	return nil
}

func (s *Store) refDir() string { return filepath.Join(s.root, "refs") }

func (s *Store) refFile(name string) string {
	return filepath.Join(s.refDir(), url.PathEscape(name)+".json")
}

// putRef writes a ref. Callers hold gcMu (shared or exclusive).
func (s *Store) putRef(name string, l Layer, durable bool) error {
	if err := s.writeJSON(s.refFile(name), ref{Name: name, DiffID: l.DiffID}, durable); err != nil {
		return fmt.Errorf("store ref %s: %w", name, err)
	}
	return nil
}

// Ref returns the layer that the ref called name points to. The error
// wraps ErrNotFound if there is no such ref or its layer is gone.
func (s *Store) Ref(name string) (Layer, error) {
	if err := validRef(name); err != nil {
		return Layer{}, err
	}
	r, err := s.readRef(s.refFile(name))
	if err != nil {
		return Layer{}, fmt.Errorf("ref %s: %w", name, err)
	}
	h, err := parseDigest(r.DiffID)
	if err != nil {
		return Layer{}, fmt.Errorf("ref %s: %w", name, err)
	}
	l, err := s.readLayer(h)
	if err != nil {
		return Layer{}, fmt.Errorf("ref %s: %w", name, err)
	}
	return l, nil
}

func (s *Store) readRef(file string) (ref, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return ref{}, ErrNotFound
	}
	if err != nil {
		return ref{}, err
	}
	var r ref
	if err := json.Unmarshal(data, &r); err != nil {
		return ref{}, fmt.Errorf("decode %s: %w", file, err)
	}
	return r, nil
}

// Refs lists the refs whose names start with prefix, mapped to the
// diffIDs they name.
func (s *Store) Refs(prefix string) (map[string]string, error) {
	ents, err := os.ReadDir(s.refDir())
	if err != nil {
		return nil, fmt.Errorf("list refs: %w", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		r, err := s.readRef(filepath.Join(s.refDir(), e.Name()))
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			s.log.Warn("skipping unreadable ref", "file", e.Name(), "err", err)
			continue
		}
		if strings.HasPrefix(r.Name, prefix) {
			out[r.Name] = r.DiffID
		}
	}
	return out, nil
}

// DeleteRef removes the ref called name and then its layer, unless an
// image or another ref still names the layer or it is mounted (GC takes
// it later). Deleting a missing ref is not an error.
func (s *Store) DeleteRef(ctx context.Context, name string) error {
	if err := validRef(name); err != nil {
		return err
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	r, err := s.readRef(s.refFile(name))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete ref %s: %w", name, err)
	}
	if err := os.Remove(s.refFile(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete ref %s: %w", name, err)
	}
	h, err := parseDigest(r.DiffID)
	if err != nil {
		return nil // nothing sensible to collect; GC sweeps stray files
	}
	live, err := s.liveLayers(ctx)
	if err != nil {
		return fmt.Errorf("delete ref %s: %w", name, err)
	}
	if !live[h] {
		s.removeLayer(h)
	}
	return nil
}

// liveLayers returns the hex digests of the layers that images or refs
// name. Callers hold gcMu exclusively.
func (s *Store) liveLayers(ctx context.Context) (map[string]bool, error) {
	live := map[string]bool{}
	imgs, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, img := range imgs {
		for _, d := range img.Layers {
			if h, err := parseDigest(d); err == nil {
				live[h] = true
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	refs, err := s.Refs("")
	if err != nil {
		return nil, err
	}
	for _, d := range refs {
		if h, err := parseDigest(d); err == nil {
			live[h] = true
		}
	}
	return live, nil
}
