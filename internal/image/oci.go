package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	specs "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerdNameAnnotation is where containerd (and Docker 25+) put the
// full image reference; org.opencontainers.image.ref.name often holds only
// the tag.
const containerdNameAnnotation = "io.containerd.image.name"

// ImportOCILayout imports an image from an OCI image layout directory and
// stores it as name. If the layout holds several images, the one whose
// org.opencontainers.image.ref.name (or io.containerd.image.name)
// annotation matches name is taken; a multi-platform index resolves to
// linux on this host's architecture.
func (s *Store) ImportOCILayout(ctx context.Context, dir, name string) (Image, error) {
	if err := ValidateName(name); err != nil {
		return Image{}, err
	}
	if err := s.checkOpen(); err != nil {
		return Image{}, err
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: not an OCI image layout: %w", dir, err)
	}
	img, err := pickFromIndex(ii, name)
	if err != nil {
		return Image{}, fmt.Errorf("import OCI layout %s: %w", dir, err)
	}
	return s.importImage(ctx, img, name, "oci-layout:"+absPath(dir))
}

// ImportArchive imports an image from a tar archive, which may be an OCI
// image layout tarball or a `docker save` archive (either may be gzipped),
// and stores it as name. Several images in one archive are told apart by
// name as in ImportOCILayout, or by the RepoTags of a docker archive.
func (s *Store) ImportArchive(ctx context.Context, archive, name string) (Image, error) {
	if err := ValidateName(name); err != nil {
		return Image{}, err
	}
	if err := s.checkOpen(); err != nil {
		return Image{}, err
	}
	tarPath, cleanup, err := s.uncompressed(ctx, archive)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", archive, err)
	}
	defer cleanup()

	kind, err := archiveKind(tarPath)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", archive, err)
	}
	switch kind {
	case "docker":
		img, err := pickFromDockerArchive(tarPath, name)
		if err != nil {
			return Image{}, fmt.Errorf("import docker archive %s: %w", archive, err)
		}
		return s.importImage(ctx, img, name, "docker-archive:"+absPath(archive))
	default:
		// go-containerregistry reads layouts from directories only.
		dir, err := os.MkdirTemp(s.tmpDir(), "oci-*")
		if err != nil {
			return Image{}, fmt.Errorf("import %s: %w", archive, err)
		}
		defer os.RemoveAll(dir)
		if err := extractLayout(ctx, tarPath, dir); err != nil {
			return Image{}, fmt.Errorf("import %s: %w", archive, err)
		}
		ii, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return Image{}, fmt.Errorf("import %s: not an OCI image layout: %w", archive, err)
		}
		img, err := pickFromIndex(ii, name)
		if err != nil {
			return Image{}, fmt.Errorf("import OCI archive %s: %w", archive, err)
		}
		return s.importImage(ctx, img, name, "oci-archive:"+absPath(archive))
	}
}

// importImage stores img's layers (those not already stored intact) and
// its record.
func (s *Store) importImage(ctx context.Context, img v1.Image, imgName, source string) (Image, error) {
	start := time.Now()
	cfg, err := img.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("import %s: read config: %w", imgName, err)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return Image{}, fmt.Errorf("import %s: image is for %s, not linux", imgName, cfg.OS)
	}
	if cfg.Architecture != "" && cfg.Architecture != runtime.GOARCH {
		return Image{}, fmt.Errorf("import %s: image is for %s, this host is %s", imgName, cfg.Architecture, runtime.GOARCH)
	}
	id, err := img.ConfigName()
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", imgName, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", imgName, err)
	}

	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	diffIDs := make([]string, 0, len(layers))
	converted := 0
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return Image{}, err
		}
		want, err := l.DiffID()
		if err != nil {
			return Image{}, fmt.Errorf("import %s: layer %d: %w", imgName, i, err)
		}
		if _, err := parseDigest(want.String()); err != nil {
			return Image{}, fmt.Errorf("import %s: layer %d: %w", imgName, i, err)
		}
		// A layer shared with an image imported earlier is stored already.
		if _, err := s.verifyLayer(ctx, want.Hex); err == nil {
			diffIDs = append(diffIDs, want.String())
			continue
		} else if errors.Is(err, ErrCorrupt) {
			s.log.Warn("rewriting corrupt layer", "diffID", want.String(), "err", err)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return Image{}, fmt.Errorf("import %s: layer %d (%s): %w", imgName, i, want, err)
		}
		got, err := s.addLayer(ctx, rc, true)
		rc.Close()
		if err != nil {
			return Image{}, fmt.Errorf("import %s: layer %d (%s): %w", imgName, i, want, err)
		}
		if got.DiffID != want.String() {
			return Image{}, fmt.Errorf("import %s: layer %d has diffID %s but the image config says %s", imgName, i, got.DiffID, want)
		}
		diffIDs = append(diffIDs, got.DiffID)
		converted++
	}
	rec, err := s.putImage(ctx, Image{
		Name:       imgName,
		ID:         id.String(),
		Layers:     diffIDs,
		Env:        cfg.Config.Env,
		Entrypoint: cfg.Config.Entrypoint,
		Cmd:        cfg.Config.Cmd,
		WorkingDir: cfg.Config.WorkingDir,
		User:       cfg.Config.User,
		Created:    cfg.Created.UTC(),
		Source:     source,
	})
	if err != nil {
		return Image{}, err
	}
	s.log.Info("image imported", "name", imgName, "layers", len(diffIDs), "converted", converted, "took", time.Since(start))
	return rec, nil
}

// pickFromIndex resolves name to one image of an index.
func pickFromIndex(ii v1.ImageIndex, want string) (v1.Image, error) {
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, err
	}
	descs := im.Manifests
	if len(descs) == 0 {
		return nil, errors.New("the index lists no images")
	}
	var chosen []v1.Descriptor
	if len(descs) == 1 {
		chosen = descs
	} else {
		chosen = matchDescriptors(descs, want)
		if len(chosen) > 1 {
			// The same name on several platforms.
			chosen = filter(chosen, hostPlatform)
		}
		if len(chosen) != 1 {
			var names []string
			for _, d := range descs {
				names = append(names, describe(d))
			}
			if len(chosen) == 0 {
				return nil, fmt.Errorf("%d images and none is named %q (by %s annotation): %s",
					len(descs), want, specs.AnnotationRefName, strings.Join(names, ", "))
			}
			return nil, fmt.Errorf("%d images match %q: %s", len(chosen), want, strings.Join(names, ", "))
		}
	}
	d := chosen[0]
	switch {
	case d.MediaType.IsIndex():
		child, err := ii.ImageIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		return pickPlatform(child)
	case d.MediaType.IsImage(), d.MediaType == "":
		return ii.Image(d.Digest)
	default:
		return nil, fmt.Errorf("%s is a %s, not an image", d.Digest, d.MediaType)
	}
}

// matchDescriptors returns the descriptors whose reference annotations
// name want: exactly, after normalisation (foo:1 = docker.io/library/foo:1)
// or, failing those, by tag alone (ref.name "1" for want "foo:1"). When no
// descriptor carries a name at all, the platform decides.
func matchDescriptors(descs []v1.Descriptor, want string) []v1.Descriptor {
	wantRef, wantErr := name.ParseReference(want)
	var strong, byTag []v1.Descriptor
	named := false
	for _, d := range descs {
		for _, key := range []string{containerdNameAnnotation, specs.AnnotationRefName} {
			ref := d.Annotations[key]
			if ref == "" {
				continue
			}
			named = true
			if ref == want {
				strong = append(strong, d)
				break
			}
			if r, err := name.ParseReference(ref); err == nil && wantErr == nil && r.Name() == wantRef.Name() {
				strong = append(strong, d)
				break
			}
			if t, ok := wantRef.(name.Tag); ok && key == specs.AnnotationRefName && ref == t.TagStr() {
				byTag = append(byTag, d)
				break
			}
		}
	}
	switch {
	case len(strong) > 0:
		return strong
	case len(byTag) > 0:
		return byTag
	case !named:
		return filter(descs, hostPlatform)
	}
	return nil
}

func describe(d v1.Descriptor) string {
	s := d.Annotations[containerdNameAnnotation]
	if s == "" {
		s = d.Annotations[specs.AnnotationRefName]
	}
	if s == "" {
		s = d.Digest.String()
	}
	if d.Platform != nil {
		s += " (" + d.Platform.String() + ")"
	}
	return s
}

// hostPlatform accepts descriptors for linux on this architecture, or
// with no platform given.
func hostPlatform(d v1.Descriptor) bool {
	return d.Platform == nil || d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH
}

func filter(descs []v1.Descriptor, keep func(v1.Descriptor) bool) []v1.Descriptor {
	var out []v1.Descriptor
	for _, d := range descs {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// pickPlatform takes this host's image from a multi-platform index.
func pickPlatform(ii v1.ImageIndex) (v1.Image, error) {
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, err
	}
	var seen []string
	for _, d := range im.Manifests {
		if d.Platform != nil {
			seen = append(seen, d.Platform.String())
		}
		if d.Platform != nil && hostPlatform(d) && d.MediaType.IsImage() {
			return ii.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no image for linux/%s in the index (has %s)", runtime.GOARCH, strings.Join(seen, ", "))
}

// pickFromDockerArchive resolves want to one image of a docker save archive.
func pickFromDockerArchive(tarPath, want string) (v1.Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(tarPath) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("read manifest.json: %w", err)
	}
	if len(m) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	if len(m) == 1 {
		return tarball.Image(opener, nil)
	}
	wantRef, wantErr := name.ParseReference(want)
	var found []string
	var all []string
	for _, d := range m {
		all = append(all, strings.Join(d.RepoTags, " "))
		for _, rt := range d.RepoTags {
			r, err := name.ParseReference(rt)
			if rt == want || err == nil && wantErr == nil && r.Name() == wantRef.Name() {
				found = append(found, rt)
				break
			}
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d images, %d tagged %q: %s", len(m), len(found), want, strings.Join(all, ", "))
	}
	tag, err := name.NewTag(found[0])
	if err != nil {
		return nil, err
	}
	return tarball.Image(opener, &tag)
}

// uncompressed returns the path of the archive as a plain tar, inflating
// a gzipped archive into the store's tmp directory first.
func (s *Store) uncompressed(ctx context.Context, archive string) (string, func(), error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
	case len(magic) == 4 && string(magic) == "\x28\xb5\x2f\xfd":
		return "", nil, errors.New("zstd-compressed archives are not supported; decompress it first")
	default:
		return archive, func() {}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return "", nil, err
	}
	out, err := os.CreateTemp(s.tmpDir(), "archive-*.tar")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.Remove(out.Name()) }
	_, err = io.Copy(out, ctxReader{ctx, zr})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("gunzip: %w", err)
	}
	return out.Name(), cleanup, nil
}

// archiveKind tells a docker save archive ("docker", it has manifest.json)
// from an OCI layout tarball ("oci"). Docker 25+ writes both; the docker
// form is read in place, so it wins.
func archiveKind(tarPath string) (string, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// tar.Reader skips file bodies by seeking on an *os.File.
	tr := tar.NewReader(f)
	oci := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("not a tar archive: %w", err)
		}
		switch path.Clean(hdr.Name) {
		case "manifest.json":
			return "docker", nil
		case "oci-layout", "index.json":
			oci = true
		}
	}
	if !oci {
		return "", errors.New("neither a docker save archive (no manifest.json) nor an OCI image layout (no index.json)")
	}
	return "oci", nil
}

// extractLayout unpacks an OCI layout tarball into dir. Only directories
// and regular files are written, and only inside dir.
func extractLayout(ctx context.Context, tarPath, dir string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(ctxReader{ctx, f})
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		p := path.Clean(hdr.Name)
		if p == "." {
			continue
		}
		if path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("archive entry %q points outside the archive", hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(p))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("extract %s: %w", p, err)
			}
		default:
			// A layout is made of blobs and JSON files; links and devices
			// have no place in it.
		}
	}
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
