package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/test/harness"
)

// clusterNode issues a node's certificate with the CLI, as an operator
// would.
func clusterNode(t *testing.T, caDir, id, role, host string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	args := []string{"cluster", "issue", "--ca", caDir, "--out", dir, "--id", id, "--role", role}
	if host != "" {
		args = append(args, "--host", host)
	}
	if out, errOut, rc := cli(t, nil, args...); rc != 0 {
		t.Fatalf("cluster issue %s: exit %d\n%s%s", id, rc, out, errOut)
	}
	return dir
}

// TestClusterControllerAndWorker runs a controller and a worker as
// separate processes on one NATS JetStream: a function deployed through
// the controller runs on the worker (which reads its code from the
// cluster's store) over the mutually authenticated worker API; a worker
// killed with -9 gives clear errors, not hangs, and serves again when it
// comes back.
func TestClusterControllerAndWorker(t *testing.T) {
	t.Parallel()
	natsAddr := harness.FreeAddr(t)
	ns, err := natsd.Start(ctx(t), natsd.Options{DataDir: t.TempDir(), Listen: natsAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	natsURL := "nats://" + natsAddr

	caDir := filepath.Join(t.TempDir(), "ca")
	if out, errOut, rc := cli(t, nil, "cluster", "init", "--dir", caDir); rc != 0 {
		t.Fatalf("cluster init: exit %d\n%s%s", rc, out, errOut)
	}
	if _, errOut, rc := cli(t, nil, "cluster", "init", "--dir", caDir); rc == 0 || !strings.Contains(errOut, "exist") {
		t.Errorf("a second cluster init over the CA: exit %d: %s", rc, errOut)
	}
	workerAddr := harness.FreeAddr(t)
	workerPKI := clusterNode(t, caDir, "w1", "worker", "127.0.0.1")
	controllerPKI := clusterNode(t, caDir, "c1", "controller", "")
	workerData := t.TempDir()
	startWorker := func() *harness.Proc {
		return harness.StartProc(t, "worker", "worker", "--nats", natsURL, "--listen", workerAddr, "--pki", workerPKI,
			"--data-dir", workerData, "--sandbox", "fake", "--fake-start-latency", "20ms")
	}
	worker := startWorker()

	// A controller with a worker's certificate is refused.
	if _, errOut, rc := cli(t, nil, "controller", "--nats", natsURL, "--pki", workerPKI, "--workers", workerAddr,
		"--data-dir", t.TempDir(), "--listen", harness.FreeAddr(t)); rc == 0 || !strings.Contains(errOut, "not a controller") {
		t.Errorf("controller with a worker's certificate: exit %d: %s", rc, errOut)
	}

	apiAddr := harness.FreeAddr(t)
	ctrlData := t.TempDir()
	// No --workers: the controller finds the worker in the membership.
	harness.StartProc(t, "controller", "controller", "--nats", natsURL, "--listen", apiAddr, "--pki", controllerPKI,
		"--data-dir", ctrlData)
	url := "http://" + apiAddr
	var token string
	waitFor(t, settle, "the controller to serve", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(ctrlData, "api-token"))
		if err != nil {
			return false, err.Error()
		}
		token = strings.TrimSpace(string(b))
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	c, err := client.New(url, &http.Client{Timeout: 2 * time.Minute}, client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler"}
	if _, err := c.Deploy(ctx(t), "echo", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, pyDir)}); err != nil {
		t.Fatal(err)
	}
	invokeOK := func(what string) {
		t.Helper()
		var last string
		waitFor(t, settle, what, func() (bool, string) {
			resp, err := c.Invoke(ctx(t), "echo", []byte(`{"n":1}`))
			if err != nil {
				last = err.Error()
				return false, last
			}
			return string(resp.Body) == `{"n":1}`, string(resp.Body)
		})
	}
	invokeOK("an invocation through the controller to answer from the worker")
	f, err := c.Get(ctx(t), "echo")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Status.Instances) != 1 || f.Status.Instances[0].Worker != "w1" {
		t.Fatalf("instances %+v, want one on worker w1", f.Status.Instances)
	}
	nodes, err := c.Nodes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, n := range nodes {
		roles[n.ID] = strings.Join(n.Roles, ",")
	}
	if roles["w1"] != "worker" || roles["c1"] != "controller" {
		t.Fatalf("nodes %+v, want worker w1 and controller c1", nodes)
	}

	// A second controller serves the same functions: what one deploys or
	// deletes, the other sees.
	api2 := harness.FreeAddr(t)
	ctrl2Data := t.TempDir()
	harness.StartProc(t, "controller2", "controller", "--nats", natsURL, "--listen", api2, "--pki", clusterNode(t, caDir, "c2", "controller", ""),
		"--data-dir", ctrl2Data)
	var c2 *client.Client
	waitFor(t, settle, "the second controller to serve", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(ctrl2Data, "api-token"))
		if err != nil {
			return false, err.Error()
		}
		if c2, err = client.New("http://"+api2, &http.Client{Timeout: 2 * time.Minute}, client.WithToken(strings.TrimSpace(string(b)))); err != nil {
			return false, err.Error()
		}
		_, err = c2.Health(ctx(t))
		return err == nil, fmt.Sprint(err)
	})
	waitFor(t, settle, "the function deployed through c1 to answer through c2", func() (bool, string) {
		resp, err := c2.Invoke(ctx(t), "echo", []byte(`{"via":"c2"}`))
		if err != nil {
			return false, err.Error()
		}
		return string(resp.Body) == `{"via":"c2"}`, string(resp.Body)
	})
	if _, err := c2.Deploy(ctx(t), "other", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, pyDir)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "the function deployed through c2 to answer through c1", func() (bool, string) {
		resp, err := c.Invoke(ctx(t), "other", []byte(`{"via":"c1"}`))
		if err != nil {
			return false, err.Error()
		}
		return string(resp.Body) == `{"via":"c1"}`, string(resp.Body)
	})
	if err := c2.Delete(ctx(t), "other"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, settle, "the function deleted through c2 to be gone from c1", func() (bool, string) {
		_, err := c.Invoke(ctx(t), "other", []byte(`{}`))
		var apiErr *client.Error
		return errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound, fmt.Sprint(err)
	})

	worker.Kill()
	callCtx, cancel := context.WithTimeout(ctx(t), 3*time.Minute)
	defer cancel()
	_, err = c.Invoke(callCtx, "echo", []byte(`{"n":2}`))
	var apiErr *client.Error
	if err == nil || !errors.As(err, &apiErr) || apiErr.Status < 500 {
		t.Fatalf("invoke with the worker killed: %v, want a 5xx error", err)
	}
	if callCtx.Err() != nil {
		t.Fatalf("invoke with the worker killed ran until the test's deadline")
	}
	t.Logf("with the worker killed: %v", err)

	// The worker's entry expires; the controller stops routing to it.
	waitFor(t, settle, "the killed worker to leave the membership", func() (bool, string) {
		nodes, err := c.Nodes(ctx(t))
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.ID == "w1" {
				return false, "w1 still listed"
			}
		}
		return true, ""
	})
	startWorker()
	invokeOK("invocations to succeed again once the worker is back")
}
