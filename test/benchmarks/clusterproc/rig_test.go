package clusterproc

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/test/harness"
)

// token is the API token every controller of a rig shares (--token-file),
// so that one client can talk to all of them.
const token = "clusterproc-bench-token"

// settle bounds every wait for a cluster to reach a state.
const settle = 2 * time.Minute

// proc is one baton process. Unlike harness.Proc it can be sent SIGTERM
// (the graceful hand-over is one of the measurements).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// startProc runs the baton binary with args; it is killed when the
// benchmark ends unless it ended before.
func startProc(b *testing.B, name string, args ...string) *proc {
	b.Helper()
	logPath := filepath.Join(b.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(harness.Binary(b), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		b.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); logf.Close(); close(p.done) }()
	b.Cleanup(func() {
		p.kill()
		if b.Failed() {
			b.Logf("%s log (tail):\n%s", name, tail(p.logs(), 4000))
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// term sends SIGTERM and waits up to grace for the process to end (then
// kills it).
func (p *proc) term(grace time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, grace)
	}
}

func (p *proc) logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// rig is a cluster of baton processes on loopback: an in-process NATS
// server, a CA, controllers and workers.
type rig struct {
	b         *testing.B
	natsURL   string
	caDir     string
	tokenFile string
}

func newRig(b *testing.B) *rig {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	addr := harness.FreeAddr(b)
	ns, err := natsd.Start(ctx, natsd.Options{DataDir: b.TempDir(), Listen: addr})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Shutdown)
	r := &rig{b: b, natsURL: "nats://" + addr, caDir: filepath.Join(b.TempDir(), "ca"),
		tokenFile: filepath.Join(b.TempDir(), "api-token")}
	run(b, "cluster", "init", "--dir", r.caDir)
	if err := os.WriteFile(r.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	return r
}

// run runs the baton CLI to completion and returns its standard output.
func run(b *testing.B, args ...string) string {
	b.Helper()
	cmd := exec.Command(harness.Binary(b), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		b.Fatalf("baton %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String()
}

// issue writes a node's certificate and returns its directory.
func (r *rig) issue(id, role, host string) string {
	dir := filepath.Join(r.b.TempDir(), id)
	args := []string{"cluster", "issue", "--ca", r.caDir, "--out", dir, "--id", id, "--role", role}
	if host != "" {
		args = append(args, "--host", host)
	}
	run(r.b, args...)
	return dir
}

// node is a controller or worker that can be stopped and started again
// with the same identity, address and data directory.
type node struct {
	r                   *rig
	id, role, addr, pki string
	data                string
	extra               []string
	p                   *proc
}

func (r *rig) controller(id string) *node {
	n := &node{r: r, id: id, role: "controller", addr: harness.FreeAddr(r.b), pki: r.issue(id, "controller", ""), data: r.b.TempDir()}
	n.start()
	return n
}

func (r *rig) worker(id string, extra ...string) *node {
	n := &node{r: r, id: id, role: "worker", addr: harness.FreeAddr(r.b), pki: r.issue(id, "worker", "127.0.0.1"),
		data: r.b.TempDir(), extra: extra}
	n.start()
	return n
}

func (n *node) start() {
	args := []string{n.role, "--nats", n.r.natsURL, "--listen", n.addr, "--pki", n.pki, "--data-dir", n.data, "--log-level", "warn"}
	if n.role == "controller" {
		args = append(args, "--token-file", n.r.tokenFile)
	}
	n.p = startProc(n.r.b, n.id, append(args, n.extra...)...)
}

func (n *node) url() string { return "http://" + n.addr }

// client of one or more controllers (the client fails over between them
// on dial errors).
func (r *rig) client(nodes ...*node) *client.Client {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.url()
	}
	c, err := client.New(strings.Join(urls, ","), &http.Client{Timeout: time.Minute}, client.WithToken(token))
	if err != nil {
		r.b.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or settle passes.
func waitFor(b *testing.B, what string, cond func() (bool, string)) {
	b.Helper()
	deadline := time.Now().Add(settle)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("waited %s for %s: %s", settle, what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitHealthy waits until a controller's API answers.
func waitHealthy(b *testing.B, c *client.Client, what string) {
	waitFor(b, what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Health(ctx)
		return err == nil, fmt.Sprint(err)
	})
}

// code is a tiny Python app: fake sandboxes never run it, the process
// sandbox echoes its event with it.
func code(b *testing.B) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	f, err := zw.Create("app.py")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write([]byte("def handler(event, context):\n    return event\n")); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// deploy deploys an echo function with a long idle timeout, so that
// instances stay warm between rounds.
func deploy(b *testing.B, c *client.Client, names ...string) {
	b.Helper()
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler", IdleTimeoutSeconds: 600, MaxScale: 20}
	zipped := code(b)
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := c.Deploy(ctx, name, client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipped})
		cancel()
		if err != nil {
			b.Fatalf("deploy %s: %v", name, err)
		}
	}
}

// invokeOK waits until name answers through c with its echo.
func invokeOK(b *testing.B, c *client.Client, name string) {
	b.Helper()
	waitFor(b, name+" to answer", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.Invoke(ctx, name, []byte(`{"n":1}`))
		if err != nil {
			return false, err.Error()
		}
		return string(resp.Body) == `{"n":1}`, string(resp.Body)
	})
}

// status reads a function's status through c.
func status(c *client.Client, name string) (apiv1.FunctionStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := c.Get(ctx, name)
	if err != nil {
		return apiv1.FunctionStatus{}, err
	}
	return f.Status, nil
}

// owners maps each function to the controller that owns it, as seen
// through c.
func owners(c *client.Client, names []string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		st, err := status(c, n)
		if err != nil {
			return nil, err
		}
		if st.Owner == "" {
			return nil, errors.New(n + " has no owner yet")
		}
		out[n] = st.Owner
	}
	return out, nil
}
