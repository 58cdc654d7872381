package baseimage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
)

// glibcOpens are libraries glibc loads with dlopen, invisible in
// DT_NEEDED: libgcc_s for thread cancellation and pthread_exit (a process
// that needs it and lacks it aborts), and the NSS modules that glibc
// before 2.34 needs for the "files" and "dns" sources. Missing ones are
// skipped.
var glibcOpens = []string{"libgcc_s.so.1", "libnss_files.so.2", "libnss_dns.so.2"}

// executable adds the interpreter binary at the real host path exe, its
// dynamic loader and all the libraries it links, and returns its image path.
func (b *builder) executable(exe string) (string, error) {
	ld, err := newLoader(b.ctx, exe)
	if err != nil {
		return "", err
	}
	b.ld = ld
	img, err := b.addHost(exe)
	if err != nil {
		return "", err
	}
	b.loadPaths[exe] = img
	if ld.exe.interp != "" {
		// The kernel opens PT_INTERP by its literal path, so the path and
		// every symlink on it must exist as on the host.
		if _, err := b.addHost(ld.exe.interp); err != nil {
			return "", fmt.Errorf("baseimage: dynamic loader: %w", err)
		}
	}
	links, err := ld.closure(b.ctx, exe, glibcOpens)
	if err != nil {
		return "", fmt.Errorf("baseimage: %w", err)
	}
	if err := b.placeLibs(links, b.loadPaths); err != nil {
		return "", err
	}
	// A statically linked OpenSSL (Node's) decides where CA certificates
	// are looked for; shared ones are handled by placeLibs.
	b.noteOpenSSL(exe)
	return img, nil
}

// noteOpenSSL records the OPENSSLDIR compiled into the ELF file p, if any,
// so that common adds OpenSSL's default CA locations.
func (b *builder) noteOpenSSL(p string) {
	dir, err := opensslDir(p)
	if err != nil || dir == "" || slices.Contains(b.opensslDirs, dir) {
		return
	}
	b.opensslDirs = append(b.opensslDirs, dir)
}

func (b *builder) node(info *Info) error {
	if err := b.check(); err != nil { // before running the interpreter
		return err
	}
	exe, err := exec.LookPath("node")
	if err != nil {
		return fmt.Errorf("%w: no node on PATH", ErrNoInterpreter)
	}
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return fmt.Errorf("baseimage: node: %w", err)
	}
	cmd := exec.CommandContext(b.ctx, real, "-e",
		`process.stdout.write(JSON.stringify({version: process.versions.node}))`)
	cmd.Env = []string{} // NODE_OPTIONS and friends must not steer it
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("baseimage: ask %s for its version: %w", real, err)
	}
	var facts struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &facts); err != nil {
		return fmt.Errorf("baseimage: %s: bad self-description: %w", real, err)
	}
	info.Version = facts.Version

	// Node needs nothing from its prefix (the built-in modules are inside
	// the binary), so only the binary moves.
	b.relocate(path.Dir(real), path.Join(relocTarget, "bin"))
	img, err := b.executable(real)
	if err != nil {
		return err
	}
	info.Interpreter = img
	if img != "/usr/bin/node" {
		return b.addSymlink("/usr/bin/node", relTarget("/usr/bin/node", img))
	}
	return nil
}

// Generated /etc files: enough for user, group and host lookups, and
// nothing that describes the host.
var etcFiles = []struct {
	path string
	data string
}{
	// Homes point to /tmp, the only writable place in a sandbox.
	{"/etc/passwd", "root:x:0:0:root:/tmp:/sbin/nologin\n" +
		"baton:x:1000:1000:baton:/tmp:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"},
	{"/etc/group", "root:x:0:\nbaton:x:1000:\nnogroup:x:65534:\n"},
	// Only sources glibc has built in (or that glibcOpens brings).
	{"/etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n" +
		"networks: files\nprotocols: files\nservices: files\n"},
	{"/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
	// Empty means the resolver's defaults; it exists so that a sandbox on
	// the host network can bind-mount the host's file over it.
	{"/etc/resolv.conf", ""},
}

// hostEtc are host files copied when present: protocol and service
// numbers are the same everywhere and getaddrinfo needs them for names.
var hostEtc = []string{"/etc/protocols", "/etc/services"}

// caBundles are the usual CA bundle locations (the list Go's crypto/x509
// uses); the first present one goes in.
var caBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// mountPoints are empty directories the sandbox mounts over; a read-only
// root cannot grow them later.
var mountPoints = []struct {
	path string
	mode os.FileMode
}{
	{"/dev", 0o755}, {"/proc", 0o555}, {"/sys", 0o555},
	{"/tmp", 0o777 | os.ModeSticky}, {"/var/task", 0o755}, {"/opt/baton", 0o755},
}

// common adds what every image has besides its interpreter.
func (b *builder) common() error {
	for _, f := range etcFiles {
		if err := b.addData(f.path, 0o644, []byte(f.data)); err != nil {
			return err
		}
	}
	for _, p := range hostEtc {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			if _, err := b.addHost(p); err != nil {
				return err
			}
		}
	}
	for _, p := range caBundles {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			if _, err := b.addHost(p); err != nil {
				return err
			}
			break
		}
	}
	// OpenSSL's own default locations, which on Debian are symlinks to
	// the bundle and its directory. Only the links and the directory come
	// along, not the hundreds of per-certificate files: the bundle holds
	// them all.
	for _, dir := range b.opensslDirs {
		for _, name := range []string{"cert.pem", "certs"} {
			p := path.Join(dir, name)
			fi, err := os.Stat(p)
			if err != nil || !(fi.IsDir() || fi.Mode().IsRegular()) {
				continue
			}
			if _, err := b.addHost(p); err != nil {
				return err
			}
		}
	}
	for _, m := range mountPoints {
		if err := b.addDir(m.path, m.mode); err != nil {
			return err
		}
	}
	return nil
}

// opensslDir finds the OPENSSLDIR compiled into the OpenSSL in file p, as
// `openssl version -d` prints it, without needing the openssl tool.
func opensslDir(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	needle := []byte(`OPENSSLDIR: "`)
	const chunk = 1 << 20
	const keep = 4096 // room for the needle and the directory after it
	buf := make([]byte, 0, chunk+keep)
	for {
		n, err := io.ReadFull(f, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if i := bytes.Index(buf, needle); i >= 0 {
			rest := buf[i+len(needle):]
			if j := bytes.IndexByte(rest, '"'); j >= 0 {
				if dir := string(rest[:j]); path.IsAbs(dir) {
					return path.Clean(dir), nil
				}
				return "", nil
			}
			if err != nil {
				return "", nil
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if len(buf) > keep {
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
	}
}
