package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mount mounts the layer read-only and returns its mount point. A layer is
// mounted once per host and shared: further calls only take a reference,
// and the release of the last reference unmounts it (lazily, so overlays
// built on it keep working). Before the first mount the EROFS file is
// checked against its recorded digest; a corrupt file is never mounted
// (the error wraps ErrCorrupt). release is safe to call more than once.
func (s *Store) Mount(ctx context.Context, diffID string) (path string, release func(), err error) {
	h, err := parseDigest(diffID)
	if err != nil {
		return "", nil, err
	}
	unlock := s.layerLocks.Lock(h)
	defer unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", nil, ErrClosed
	}
	if m := s.mounts[h]; m != nil {
		m.refs++
		s.mu.Unlock()
		return m.dir, s.releaser(h, m), nil
	}
	s.mu.Unlock()

	start := time.Now()
	l, err := s.verifyLayer(ctx, h)
	if err != nil {
		return "", nil, fmt.Errorf("mount layer: %w", err)
	}
	verified := time.Since(start)
	dir := s.mountDir(h)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", nil, fmt.Errorf("mount layer %s: %w", l.DiffID, err)
	}
	// File-backed EROFS: the kernel reads the regular file directly, with
	// no loop device in between.
	if err := unix.Mount(s.layerFile(h), dir, "erofs", unix.MS_RDONLY, ""); err != nil {
		_ = os.Remove(dir)
		if errors.Is(err, unix.ENODEV) {
			return "", nil, fmt.Errorf("mount layer %s: the kernel has no EROFS support: %w", l.DiffID, err)
		}
		return "", nil, fmt.Errorf("mount layer %s on %s: %w", l.DiffID, dir, err)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = s.unmount(dir)
		return "", nil, ErrClosed
	}
	m := &layerMount{dir: dir, refs: 1}
	s.mounts[h] = m
	s.mu.Unlock()
	s.log.Debug("layer mounted", "diffID", l.DiffID, "path", dir, "verify", verified, "took", time.Since(start))
	return dir, s.releaser(h, m), nil
}

// releaser returns the function that drops one reference to m.
func (s *Store) releaser(h string, m *layerMount) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			unlock := s.layerLocks.Lock(h)
			defer unlock()
			s.mu.Lock()
			// After Close (or a later remount) m is no longer the live
			// mount and there is nothing to drop.
			if s.mounts[h] != m {
				s.mu.Unlock()
				return
			}
			m.refs--
			if m.refs > 0 {
				s.mu.Unlock()
				return
			}
			delete(s.mounts, h)
			s.mu.Unlock()
			if err := s.unmount(m.dir); err != nil {
				s.log.Error("unmount layer", "diffID", "sha256:"+h, "err", err)
			}
		})
	}
}

// unmount detaches a layer mount and removes its mount point.
func (s *Store) unmount(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove mount point %s: %w", dir, err)
	}
	return nil
}

// mounted reports whether the layer is mounted by this store.
func (s *Store) mounted(h string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mounts[h] != nil
}

// RootFS mounts every layer of img and returns the overlay lowerdirs,
// top-most first, ready for "lowerdir=" + strings.Join(lowerDirs, ":"):
// extraTop (already mounted directories such as a function's code layer,
// given top-most first) followed by the image's layers from the top down.
// The caller adds its own private upperdir and workdir. release drops the
// layer references and is safe to call more than once; call it when the
// sandbox's overlay is gone, so that the layers stay mounted (and verified)
// for the next sandbox meanwhile.
//
// The kernel limits mount options to one page, which bounds the number of
// lowerdirs passed this way to about 40 for typical root paths.
func (s *Store) RootFS(ctx context.Context, img Image, extraTop ...string) (lowerDirs []string, release func(), err error) {
	var releases []func()
	releaseAll := func() {
		for _, r := range releases {
			r()
		}
	}
	lowerDirs = append(lowerDirs, extraTop...)
	seen := map[string]bool{}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		d := img.Layers[i]
		// A layer listed twice only matters at its top-most position: what
		// it provides lower down is provided again above everything in
		// between. Overlayfs rejects the same lowerdir twice.
		if seen[d] {
			continue
		}
		seen[d] = true
		if err := ctx.Err(); err != nil {
			releaseAll()
			return nil, nil, err
		}
		p, rel, err := s.Mount(ctx, d)
		if err != nil {
			releaseAll()
			return nil, nil, fmt.Errorf("root filesystem of image %s: %w", img.Name, err)
		}
		releases = append(releases, rel)
		lowerDirs = append(lowerDirs, p)
	}
	var once sync.Once
	return lowerDirs, func() { once.Do(releaseAll) }, nil
}

// mountPointsUnder lists the mount points at or below dir, deepest first,
// from the calling thread's mountinfo. Not /proc/self: that is the main
// thread's, which libcontainer may have left wedged in a container's mount
// namespace (a locked goroutine that joined it and exited on that thread).
func mountPointsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.Open("/proc/self/mountinfo") // kernels before 3.17
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw"
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Later lines are mounted later (on top); unmount those first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space, ...) the
// kernel uses in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
