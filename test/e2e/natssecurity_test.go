package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// natsPassword is the password of the secured NATS cluster's user.
const natsPassword = "e2e-nats-secret"

// runRefused runs baton with extra environment variables, expecting it to
// give up on its own: a non-zero exit whose output says every one of want.
func runRefused(t *testing.T, what string, env []string, want []string, args ...string) {
	t.Helper()
	// Refusals are immediate; the deadline only keeps a hang from
	// stalling the suite, and a hang fails the test.
	runCtx, cancel := context.WithTimeout(ctx(t), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, harness.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if runCtx.Err() != nil || !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Errorf("%s: %v (deadline: %v), want a non-zero exit of its own\n%s", what, err, runCtx.Err(), out.String())
		return
	}
	t.Logf("%s: exit %d: %s", what, exit.ExitCode(), strings.TrimSpace(out.String()))
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("%s said:\n%s\nwant a message with %q", what, out.String(), w)
		}
	}
}

// TestNATSSecurityJoin runs three `baton nats` nodes that require mutual
// TLS (certificates from `baton cluster issue --role nats`) and a login.
// Workers and controllers with a missing or wrong password, a NATS CA
// that is not the servers', or a certificate of another cluster are
// refused with a non-zero exit and a message naming NATS, what it refused
// and the flag to fix; with the right flags they join, and a function
// deployed through the controller answers from the worker.
func TestNATSSecurityJoin(t *testing.T) {
	// The processes get the password from the environment, as an operator
	// would give it (not parallel: t.Setenv).
	t.Setenv("BATON_NATS_PASSWORD", natsPassword)
	caDir := filepath.Join(t.TempDir(), "ca")
	otherCA := filepath.Join(t.TempDir(), "other-ca")
	for _, dir := range []string{caDir, otherCA} {
		if out, errOut, rc := cli(t, nil, "cluster", "init", "--dir", dir); rc != 0 {
			t.Fatalf("cluster init: exit %d\n%s%s", rc, out, errOut)
		}
	}

	natsPKIs := map[string]string{}
	nodes := startNATSCluster(t, "secure", func(name string) []string {
		pki := clusterNode(t, caDir, "nats-"+name, "nats", "127.0.0.1")
		natsPKIs[name] = pki
		return []string{"--tls-cert", filepath.Join(pki, "node.crt"), "--tls-key", filepath.Join(pki, "node.key"),
			"--tls-ca", filepath.Join(pki, "ca.crt"), "--user", "baton"}
	})
	for _, n := range nodes {
		eventually(t, n.name+" reports JetStream ready", func(context.Context) error {
			if !n.running() {
				return fmt.Errorf("%s exited: %v\n%s", n.name, n.waitErr, n.log())
			}
			if !strings.Contains(n.log(), "JetStream ready") {
				return errors.New("not in its log yet")
			}
			return nil
		})
	}
	var plainURLs, tlsURLs []string
	for _, n := range nodes {
		plainURLs = append(plainURLs, "nats://"+n.listen)
		tlsURLs = append(tlsURLs, "tls://"+n.listen)
	}
	natsURL, natsTLSURL := strings.Join(plainURLs, ","), strings.Join(tlsURLs, ",")

	workerAddr := harness.FreeAddr(t)
	workerPKI := clusterNode(t, caDir, "w1", "worker", "127.0.0.1")
	controllerPKI := clusterNode(t, caDir, "c1", "controller", "")
	strangerPKI := clusterNode(t, otherCA, "w9", "worker", "127.0.0.1")
	worker := func(pki string, extra ...string) []string {
		return append([]string{"worker", "--nats", natsURL, "--listen", harness.FreeAddr(t), "--pki", pki,
			"--data-dir", t.TempDir(), "--sandbox", "fake"}, extra...)
	}
	runRefused(t, "a worker without --nats-user", nil,
		[]string{"NATS at", "requires a login", "--nats-user", "BATON_NATS_PASSWORD"}, worker(workerPKI)...)
	runRefused(t, "a worker with a wrong password", []string{"BATON_NATS_PASSWORD=wrong"},
		[]string{"NATS at", `refused the login of user "baton"`, "--nats-user"}, worker(workerPKI, "--nats-user", "baton")...)
	runRefused(t, "a worker with another user", nil,
		[]string{"NATS at", `refused the login of user "intruder"`}, worker(workerPKI, "--nats-user", "intruder")...)
	runRefused(t, "a controller with --nats-user and no password", []string{"BATON_NATS_PASSWORD="},
		[]string{"--nats-user", "BATON_NATS_PASSWORD"},
		"controller", "--nats", natsTLSURL, "--listen", harness.FreeAddr(t), "--pki", controllerPKI,
		"--data-dir", t.TempDir(), "--nats-user", "baton")
	runRefused(t, "a worker trusting another CA for NATS", nil,
		[]string{"NATS at", "not signed by the CA", "--nats-tls-ca"},
		worker(workerPKI, "--nats-user", "baton", "--nats-tls-ca", filepath.Join(otherCA, "ca.crt"))...)
	runRefused(t, "a worker with a certificate of another cluster", nil,
		[]string{"NATS at", "certificate", "client certificates from their --tls-ca only", "--pki"},
		worker(strangerPKI, "--nats-user", "baton", "--nats-tls-ca", filepath.Join(caDir, "ca.crt"))...)
	runRefused(t, "a worker with the NATS node's certificate", nil, []string{"not a worker"},
		worker(natsPKIs["n1"], "--nats-user", "baton")...)

	// The right flags: the worker upgrades nats:// to the TLS the servers
	// require, the controller asks for TLS with tls://.
	harness.StartProc(t, "worker", "worker", "--nats", natsURL, "--nats-user", "baton", "--listen", workerAddr,
		"--pki", workerPKI, "--data-dir", t.TempDir(), "--sandbox", "fake")
	apiAddr := harness.FreeAddr(t)
	ctrlData := t.TempDir()
	ctrl := harness.StartProc(t, "controller", "controller", "--nats", natsTLSURL, "--nats-user", "baton",
		"--listen", apiAddr, "--pki", controllerPKI, "--data-dir", ctrlData)
	var c *client.Client
	waitFor(t, settle, "the controller to serve", func() (bool, string) {
		if done, err := ctrl.Exited(); done {
			t.Fatalf("the controller exited: %v\n%s", err, ctrl.Logs())
		}
		b, err := os.ReadFile(filepath.Join(ctrlData, "api-token"))
		if err != nil {
			return false, err.Error()
		}
		if c, err = client.New("http://"+apiAddr, &http.Client{Timeout: 2 * time.Minute}, client.WithToken(strings.TrimSpace(string(b)))); err != nil {
			return false, err.Error()
		}
		_, err = c.Health(ctx(t))
		return err == nil, fmt.Sprint(err)
	})
	if strings.Contains(ctrl.Logs(), "not encrypted") {
		t.Errorf("the controller's NATS connection is in the clear:\n%s", ctrl.Logs())
	}
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler"}
	if _, err := c.Deploy(ctx(t), "echo", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, pyDir)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "an invocation through the controller to answer from the worker", func() (bool, string) {
		resp, err := c.Invoke(ctx(t), "echo", []byte(`{"secure":true}`))
		if err != nil {
			return false, err.Error()
		}
		return string(resp.Body) == `{"secure":true}`, string(resp.Body)
	})
	nodesSeen, err := c.Nodes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, n := range nodesSeen {
		ids[n.ID] = true
	}
	if !ids["w1"] || !ids["c1"] || len(ids) != 2 {
		t.Errorf("nodes %+v, want w1 and c1 only (the refused nodes never joined)", nodesSeen)
	}
}

// The HTTP API serves without a token (--no-auth) on loopback only,
// unless the loudly named override says otherwise.
func TestNoAuthRefusedOffLoopback(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"0.0.0.0:0", ":0", "10.1.2.3:8080"} {
		runRefused(t, "baton server --no-auth --listen "+listen, nil,
			[]string{"--no-auth", listen, "--insecure-no-auth-on-network"},
			"server", "--no-auth", "--listen", listen, "--data-dir", t.TempDir())
		runRefused(t, "baton controller --no-auth --listen "+listen, nil,
			[]string{"--no-auth", listen, "--insecure-no-auth-on-network"},
			"controller", "--no-auth", "--listen", listen, "--data-dir", t.TempDir(),
			"--nats", "nats://127.0.0.1:1", "--pki", t.TempDir())
	}
}
