package baseimage

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// The provided image serves runtime provided functions. Their bootstrap is
// the user's own program, so the image holds no interpreter: the C library
// that compiled bootstraps link, a POSIX shell for shell-script bootstraps
// (as on AWS's provided images) and two tools a shell lacks as built-ins.

// providedShell is the path every `#!/bin/sh` bootstrap names.
const providedShell = "/bin/sh"

// providedTools are the only programs besides the shell: shell bootstraps
// wait (sleep) and detach helpers into a session of their own (setsid),
// neither of which a POSIX shell can do by itself. Anything else a
// bootstrap runs ships in its code archive.
var providedTools = []string{"sleep", "setsid"}

// toolDirs are where tools are taken from: system directories only, so that
// nothing of a user's PATH (a home directory) goes into the image.
var toolDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"}

// glibcLibs are glibc's libraries besides libc that compiled bootstraps
// (C, cgo, Rust) commonly link; missing ones are skipped.
var glibcLibs = []string{"libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2"}

func (b *builder) provided(info *Info) error {
	real, err := filepath.EvalSymlinks(providedShell)
	if err != nil {
		return fmt.Errorf("%w: no %s: %v", ErrNoInterpreter, providedShell, err)
	}
	// The path scripts name, with every symlink on it (/bin -> usr/bin,
	// sh -> dash), must resolve in the image as on the host.
	if _, err := b.addHost(providedShell); err != nil {
		return fmt.Errorf("baseimage: %s: %w", providedShell, err)
	}
	img, err := b.executable(real)
	if err != nil {
		return err
	}
	info.Interpreter = img
	info.Version = path.Base(img)
	links, err := b.ld.closure(b.ctx, real, glibcLibs)
	if err != nil {
		return fmt.Errorf("baseimage: %w", err)
	}
	if err := b.placeLibs(links, b.loadPaths); err != nil {
		return err
	}
	for _, tool := range providedTools {
		p := findTool(tool)
		if p == "" {
			info.Omitted = append(info.Omitted, tool)
			continue
		}
		if _, err := b.addHost(p); err != nil {
			return fmt.Errorf("baseimage: %s: %w", tool, err)
		}
		realTool, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("baseimage: %s: %w", tool, err)
		}
		if _, err := b.executable(realTool); err != nil {
			return fmt.Errorf("baseimage: %s: %w", tool, err)
		}
	}
	return nil
}

// findTool returns the first system path of the executable name, or "".
func findTool(name string) string {
	for _, d := range toolDirs {
		p := path.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}
