package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The S3-compatible server of BenchmarkTransfer's s3 way: SeaweedFS's
// `weed`, built outside Baton's module (it is never a dependency of
// Baton). Its module has replace directives, so `go install mod@version`
// refuses it; weedBuild builds it inside a copy of its own module instead.
const (
	weedModule  = "github.com/seaweedfs/seaweedfs"
	weedVersion = "v0.0.0-20261109003541-7506e5f91cd6"
)

// weedBinary finds `weed`: BATON_BENCH_WEED names it; otherwise the copy
// built once in the user's cache directory, built there now (minutes of
// compiling) when missing and BATON_BENCH_WEED_BUILD=1. The error says
// why there is none, for the skip message.
func weedBinary(ctx context.Context, tb testing.TB) (string, error) {
	if p := os.Getenv("BATON_BENCH_WEED"); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("BATON_BENCH_WEED=%s: %w", p, err)
		}
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no BATON_BENCH_WEED and no cache directory: %w", err)
	}
	p := filepath.Join(cache, "baton-bench", "weed-"+weedVersion)
	if executable(p) == nil {
		return p, nil
	}
	if os.Getenv("BATON_BENCH_WEED_BUILD") != "1" {
		return "", fmt.Errorf("no BATON_BENCH_WEED and no %s; set BATON_BENCH_WEED=path to a weed binary, "+
			"or BATON_BENCH_WEED_BUILD=1 to build %s@%s there once", p, weedModule, weedVersion)
	}
	tb.Logf("building weed (%s@%s) into %s once; this takes minutes", weedModule, weedVersion, p)
	if err := weedBuild(ctx, p); err != nil {
		return "", err
	}
	return p, nil
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// weedBuild downloads SeaweedFS's module, copies it out of the read-only
// module cache and builds its weed command there (its own go.mod and
// replace directives apply), then moves the binary to out. The same by
// hand:
//
//	dir=$(go mod download -json github.com/seaweedfs/seaweedfs@VERSION | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
//	tmp=$(mktemp -d) && cp -r "$dir" "$tmp/src" && chmod -R u+w "$tmp/src" && cd "$tmp/src" &&
//	  GOWORK=off GOFLAGS=-mod=mod go build -p 2 -o OUT ./weed
func weedBuild(ctx context.Context, out string) error {
	tmp, err := os.MkdirTemp("", "baton-weed-build-")
	if err != nil {
		return fmt.Errorf("build weed: %w", err)
	}
	defer os.RemoveAll(tmp)
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", weedModule+"@"+weedVersion)
	dl.Dir, dl.Env = tmp, env
	raw, err := dl.Output()
	if err != nil {
		return fmt.Errorf("build weed: go mod download %s@%s: %w", weedModule, weedVersion, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(raw, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("build weed: go mod download printed %.300q (%v)", raw, err)
	}
	src := filepath.Join(tmp, "src")
	if err := os.CopyFS(src, os.DirFS(mod.Dir)); err != nil {
		return fmt.Errorf("build weed: copy %s: %w", mod.Dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("build weed: %w", err)
	}
	part := out + ".part"
	build := exec.CommandContext(ctx, "go", "build", "-p", "2", "-o", part, "./weed")
	build.Dir, build.Env = src, env
	if msg, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build weed: go build: %w: %s", err, tail(msg, 2000))
	}
	if err := os.Rename(part, out); err != nil {
		return fmt.Errorf("build weed: %w", err)
	}
	return nil
}

// s3Server is a SeaweedFS server (master, volume, filer and S3 gateway in
// one process) on loopback with its data in a temp dir, anonymous access
// (no identities configured), and one bucket.
type s3Server struct {
	// Bucket is the bucket's URL, http://127.0.0.1:PORT/BUCKET.
	Bucket string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait has returned
	log    string
}

// startS3 starts weed and waits until its S3 gateway has made the bucket.
// The server is stopped (and waited for) at the end of the benchmark.
func startS3(ctx context.Context, tb testing.TB, weed string) (*s3Server, error) {
	dir := tb.TempDir()
	ports, err := freePorts(8)
	if err != nil {
		return nil, fmt.Errorf("s3 server: %w", err)
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	// -logtostderr: its log goes to weed.log, not to files of its own in
	// the machine's temp dir.
	args := []string{"-logtostderr", "server", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-dir", filepath.Join(dir, "data"),
		"-master.port", p(0), "-master.port.grpc", p(1), "-master.telemetry=false",
		"-volume.port", p(2), "-volume.port.grpc", p(3),
		"-filer", "-filer.port", p(4), "-filer.port.grpc", p(5),
		"-s3", "-s3.port", p(6), "-s3.port.grpc", p(7), "-s3.port.iceberg", "0", "-s3.port.lance", "0"}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("s3 server: %w", err)
	}
	s := &s3Server{Bucket: "http://127.0.0.1:" + p(6) + "/xfer", exited: make(chan struct{}), log: filepath.Join(dir, "weed.log")}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, fmt.Errorf("s3 server: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	// Not CommandContext: the cleanup stops it gently, then waits.
	s.cmd = exec.Command(weed, args...)
	s.cmd.Dir, s.cmd.Stdout, s.cmd.Stderr = dir, logf, logf
	// Credentials in the environment would register an identity and turn
	// authentication on; the functions talk to it anonymously.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("s3 server: start %s: %w", weed, err)
	}
	go func() {
		_ = s.cmd.Wait() // the exit is seen through exited
		close(s.exited)
	}()
	tb.Cleanup(s.stop)
	if err := s.makeBucket(ctx); err != nil {
		return nil, fmt.Errorf("s3 server: %w; its log: %s", err, s.logTail())
	}
	return s, nil
}

// makeBucket creates the bucket, retrying while the server comes up (the
// gateway answers before the filer and volume server are ready).
func (s *s3Server) makeBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("weed exited: %v", s.cmd.ProcessState)
		default:
		}
		last = s.roundTrip(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bucket %s not made: %w (last: %v)", s.Bucket, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// roundTrip makes the bucket and checks an object round-trips through it.
func (s *s3Server) roundTrip(ctx context.Context) error {
	do := func(method, url string, body []byte) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s %s: %s: %.300s", method, url, resp.Status, got)
		}
		return got, nil
	}
	if _, err := do(http.MethodPut, s.Bucket, nil); err != nil && !strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") {
		return err
	}
	probe := s.Bucket + "/probe"
	if _, err := do(http.MethodPut, probe, []byte("probe")); err != nil {
		return err
	}
	got, err := do(http.MethodGet, probe, nil)
	if err != nil {
		return err
	}
	if string(got) != "probe" {
		return fmt.Errorf("GET %s returned %q, want %q", probe, got, "probe")
	}
	_, err = do(http.MethodDelete, probe, nil)
	return err
}

// stop asks weed to exit, kills it if it has not within 20 s, and waits.
func (s *s3Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM) // already gone is fine
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *s3Server) logTail() string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return err.Error()
	}
	return tail(b, 2000)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// freePorts returns n loopback ports that were free a moment ago (all held
// open together so that they differ).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// TestWeedBinary: BATON_BENCH_WEED is used when it names an executable
// file, and otherwise refused with an error naming it (the s3 way's skip
// message).
func TestWeedBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "weed")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, wantErr string }{
		{exe, ""},
		{plain, "not an executable file"},
		{dir, "not an executable file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		t.Setenv("BATON_BENCH_WEED", tc.path)
		got, err := weedBinary(context.Background(), t)
		switch {
		case tc.wantErr == "" && (err != nil || got != tc.path):
			t.Errorf("BATON_BENCH_WEED=%s: got %q, %v; want the path", tc.path, got, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.path)):
			t.Errorf("BATON_BENCH_WEED=%s: got %q, %v; want an error naming the path and %q", tc.path, got, err, tc.wantErr)
		}
	}
}

// TestFreePorts: the ports handed to weed's servers differ.
func TestFreePorts(t *testing.T) {
	ports, err := freePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: %d repeated or invalid", ports, p)
		}
		seen[p] = true
	}
}
