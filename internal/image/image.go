package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Image is a runnable image: a stack of stored layers plus the parts of the
// OCI config a sandbox needs.
type Image struct {
	Name string `json:"name"`
	// ID is the digest of the image's OCI config for imported images, or
	// of the record's content for images put with PutImage.
	ID string `json:"id"`
	// Layers are diffIDs, bottom first.
	Layers     []string  `json:"layers"`
	Env        []string  `json:"env,omitempty"`
	Entrypoint []string  `json:"entrypoint,omitempty"`
	Cmd        []string  `json:"cmd,omitempty"`
	WorkingDir string    `json:"workingDir,omitempty"`
	User       string    `json:"user,omitempty"`
	Created    time.Time `json:"created"`
	// Size is the total size of the image's EROFS layer files in bytes.
	Size int64 `json:"size"`
	// Source says where the image came from ("oci-layout:<dir>",
	// "docker-archive:<file>", "baton", ...).
	Source string `json:"source,omitempty"`
}

// MaxNameLen bounds image names.
const MaxNameLen = 255

// ValidateName checks an image name: 1 to MaxNameLen characters of
// lower-case letters, digits and . _ - / :, starting and ending with a
// letter or digit, with no empty or dot-only path components.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w %.40q...: longer than %d characters", ErrInvalidName, name, MaxNameLen)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '/', r == ':':
		case r >= 'A' && r <= 'Z':
			return fmt.Errorf("%w %q: must be lower-case", ErrInvalidName, name)
		default:
			return fmt.Errorf("%w %q: character %q at %d is not allowed (use a-z 0-9 . - / :)", ErrInvalidName, name, r, i)
		}
	}
	if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return fmt.Errorf("%w %q: must start and end with a letter or digit", ErrInvalidName, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || strings.Trim(part, ".") == "" {
			return fmt.Errorf("%w %q: empty or dot-only path component", ErrInvalidName, name)
		}
	}
	return nil
}

func isAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }

// imageFile maps a valid name to its record; '/' is the only character
// of the name alphabet that needs escaping in a file name.
func (s *Store) imageFile(name string) string {
	return filepath.Join(s.imageDir(), url.PathEscape(name)+".json")
}

// PutImage stores an image record whose layers are already in the store,
// such as a base image Baton assembled itself. It replaces an image of the
// same name. An empty ID is derived from the content, a zero Created
// becomes now, and Size is computed. The stored record is returned.
func (s *Store) PutImage(ctx context.Context, img Image) (Image, error) {
	if err := s.checkOpen(); err != nil {
		return Image{}, err
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	if img.Source == "" {
		img.Source = "baton"
	}
	if img.Created.IsZero() {
		img.Created = time.Now().UTC()
	}
	return s.putImage(ctx, img)
}

// putImage validates and writes an image record. Callers hold gcMu shared,
// so that the layers checked here cannot be collected before the record
// referencing them is written.
func (s *Store) putImage(ctx context.Context, img Image) (Image, error) {
	if err := ValidateName(img.Name); err != nil {
		return Image{}, err
	}
	if len(img.Layers) == 0 {
		return Image{}, fmt.Errorf("image %s: no layers", img.Name)
	}
	img.Layers = slices.Clone(img.Layers) // normalised below; the caller's slice stays as it was
	img.Size = 0
	for i, d := range img.Layers {
		if err := ctx.Err(); err != nil {
			return Image{}, err
		}
		h, err := parseDigest(d)
		if err != nil {
			return Image{}, fmt.Errorf("image %s: %w", img.Name, err)
		}
		l, err := s.readLayer(h)
		if err != nil {
			return Image{}, fmt.Errorf("image %s: %w", img.Name, err)
		}
		img.Layers[i] = l.DiffID
		img.Size += l.Size
	}
	if img.ID == "" {
		img.ID = contentID(img)
	}
	s.imgMu.Lock()
	defer s.imgMu.Unlock()
	if err := s.writeJSON(s.imageFile(img.Name), img, true); err != nil {
		return Image{}, fmt.Errorf("store image %s: %w", img.Name, err)
	}
	s.log.Info("image stored", "name", img.Name, "id", img.ID, "layers", len(img.Layers), "size", img.Size, "source", img.Source)
	return img, nil
}

// contentID is a digest of what makes an image run the way it does.
func contentID(img Image) string {
	data, _ := json.Marshal(struct {
		Layers, Env, Entrypoint, Cmd []string
		WorkingDir, User             string
	}{img.Layers, img.Env, img.Entrypoint, img.Cmd, img.WorkingDir, img.User})
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Get returns the image called name; the error wraps ErrNotFound if there
// is none.
func (s *Store) Get(name string) (Image, error) {
	if err := ValidateName(name); err != nil {
		return Image{}, err
	}
	return s.readImage(s.imageFile(name), name)
}

func (s *Store) readImage(file, name string) (Image, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, fmt.Errorf("image %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", name, err)
	}
	var img Image
	if err := json.Unmarshal(data, &img); err != nil {
		return Image{}, fmt.Errorf("image %s: decode %s: %w", name, file, err)
	}
	return img, nil
}

// List returns all images, sorted by name.
func (s *Store) List() ([]Image, error) {
	ents, err := os.ReadDir(s.imageDir())
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []Image
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		img, err := s.readImage(filepath.Join(s.imageDir(), e.Name()), e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes the image record called name. It is refused (the error
// wraps ErrInUse) while inUse(name) reports true, that is while a function
// uses the image. Its layers stay until GC finds them unreferenced.
func (s *Store) Remove(name string, inUse func(name string) bool) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	s.imgMu.Lock()
	defer s.imgMu.Unlock()
	if _, err := os.Stat(s.imageFile(name)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image %s: %w", name, ErrNotFound)
	}
	if inUse != nil && inUse(name) {
		return fmt.Errorf("remove image %s: a function uses it: %w", name, ErrInUse)
	}
	if err := os.Remove(s.imageFile(name)); err != nil {
		return fmt.Errorf("remove image %s: %w", name, err)
	}
	s.log.Info("image removed", "name", name)
	return nil
}

// GC deletes the layers that no image or ref names, that are not mounted
// and that are not listed in keep (diffIDs of layers needed for a while
// outside images and refs). It returns the removed diffIDs.
func (s *Store) GC(ctx context.Context, keep ...string) (removed []string, err error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()

	live, err := s.liveLayers(ctx)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for _, d := range keep {
		h, err := parseDigest(d)
		if err != nil {
			return nil, fmt.Errorf("gc: keep: %w", err)
		}
		live[h] = true
	}

	ents, err := os.ReadDir(s.layerDir())
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	// Both files of a layer are considered, so that halves left by an
	// interrupted add go too.
	candidates := map[string]bool{}
	for _, e := range ents {
		h := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".erofs"), ".json")
		if _, err := parseDigest(h); err == nil && !live[h] {
			candidates[h] = true
		}
	}
	var errs []error
	for _, h := range sortedKeys(candidates) {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if s.removeLayer(h) {
			removed = append(removed, "sha256:"+h)
		}
	}
	if len(removed) > 0 {
		s.log.Info("gc removed layers", "count", len(removed))
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("gc: %w", err)
	}
	return removed, nil
}

// removeLayer deletes a layer's files unless it is mounted.
func (s *Store) removeLayer(h string) bool {
	unlock := s.layerLocks.Lock(h)
	defer unlock()
	if s.mounted(h) {
		return false
	}
	// Metadata first: without it the layer reads as absent even if the
	// second removal fails.
	errMeta := os.Remove(s.layerMeta(h))
	errFile := os.Remove(s.layerFile(h))
	for _, err := range []error{errMeta, errFile} {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Error("gc: remove layer", "diffID", "sha256:"+h, "err", err)
			return false
		}
	}
	s.log.Debug("gc: layer removed", "diffID", "sha256:"+h)
	return true
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
