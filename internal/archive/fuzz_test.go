package archive

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// FuzzExtract checks the one property that matters most: whatever the
// input, nothing is written outside dest, no symlink left in dest points
// outside it, and a failed extraction leaves dest empty.
func FuzzExtract(f *testing.F) {
	seeds := [][]byte{
		newZip(f).file("a.txt", "hello").add("bin/run", 0o755, "#!/bin/sh").dir("d/").bytes(),
		newZip(f).dir("d/").symlink("d/up", "..").symlink("x", "d/up/d/up/..").bytes(),
		newZip(f).symlink("link", ".").file("link/../../etc/x", "pwned").bytes(),
		newZip(f).symlink("link", ".").file("link/x", "x").bytes(),
		newZip(f).symlink("a", ".").symlink("b", "a/..").bytes(),
		newZip(f).symlink("n/l", "../n").file("n/l2/f", "x").bytes(),
		newZip(f).file("../x", "x").file("/abs", "y").file(`..\z`, "z").bytes(),
		newZip(f).file("a", "1").file("a/b", "2").bytes(),
		newZip(f).symlink("s", "t").symlink("t", "s").bytes(),
		newZip(f).add("dev", fs.ModeDevice|0o600, "").bytes(),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	limits := Limits{MaxFiles: 64, MaxTotalBytes: 1 << 20, MaxFileBytes: 1 << 20}

	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		dest := filepath.Join(base, "dest")
		for _, d := range []string{outside, dest} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}

		_, err := Extract(bytes.NewReader(data), int64(len(data)), dest, limits)

		ents, rerr := os.ReadDir(base)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if len(ents) != 2 {
			t.Fatalf("something was written beside dest: %v", ents)
		}
		if o, _ := os.ReadDir(outside); len(o) != 0 {
			t.Fatalf("something was written outside dest: %v", o)
		}
		if err != nil {
			assertEmpty(t, dest)
			return
		}

		root, rerr := os.OpenRoot(dest)
		if rerr != nil {
			t.Fatal(rerr)
		}
		defer root.Close()
		werr := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dest, p)
			if strings.HasPrefix(rel, tmpPrefix) {
				t.Errorf("staging directory %s left behind", rel)
			}
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			// os.Root refuses to follow links that leave the root; dangling
			// links (and links through files) are fine.
			if _, err := root.Stat(rel); err != nil &&
				!errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				t.Errorf("symlink %s: %v", rel, err)
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
	})
}
