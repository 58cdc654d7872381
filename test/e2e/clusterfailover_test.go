package e2e

import (
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

// TestClusterControllerFailover runs two controllers and a worker as
// processes. Each function is served by one controller: the other sends
// its requests on. When the owner is killed with -9, the survivor takes
// the function over with the instance the worker already runs (no new
// cold start, nothing left running twice); when the killed controller
// comes back, it gets its share back the same way.
func TestClusterControllerFailover(t *testing.T) {
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
	harness.StartProc(t, "worker", "worker", "--nats", natsURL, "--listen", harness.FreeAddr(t),
		"--pki", clusterNode(t, caDir, "w1", "worker", "127.0.0.1"), "--data-dir", t.TempDir(),
		"--sandbox", "fake", "--fake-start-latency", "20ms")

	// Controllers share one API token, so that one client can use both.
	tokenFile := filepath.Join(t.TempDir(), "api-token")
	token := "failover-test-token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type controller struct {
		id, addr, pki, data string
		proc                *harness.Proc
	}
	ctrls := map[string]*controller{}
	for _, id := range []string{"c1", "c2"} {
		ctrls[id] = &controller{id: id, addr: harness.FreeAddr(t), pki: clusterNode(t, caDir, id, "controller", ""), data: t.TempDir()}
	}
	start := func(c *controller) {
		c.proc = harness.StartProc(t, "controller-"+c.id, "controller", "--nats", natsURL, "--listen", c.addr,
			"--pki", c.pki, "--data-dir", c.data, "--token-file", tokenFile)
	}
	clientOf := func(addrs ...string) *client.Client {
		urls := make([]string, len(addrs))
		for i, a := range addrs {
			urls[i] = "http://" + a
		}
		cl, err := client.New(strings.Join(urls, ","), &http.Client{Timeout: 2 * time.Minute}, client.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	for _, c := range ctrls {
		start(c)
	}
	c1, c2 := clientOf(ctrls["c1"].addr), clientOf(ctrls["c2"].addr)
	both := clientOf(ctrls["c1"].addr, ctrls["c2"].addr)
	for _, cl := range []*client.Client{c1, c2} {
		waitFor(t, settle, "a controller to serve", func() (bool, string) {
			_, err := cl.Health(ctx(t))
			return err == nil, fmt.Sprint(err)
		})
	}

	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.handler"}
	if _, err := c1.Deploy(ctx(t), "echo", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, pyDir)}); err != nil {
		t.Fatal(err)
	}
	invokeVia := func(cl *client.Client, what string) client.InvokeResponse {
		t.Helper()
		var resp client.InvokeResponse
		waitFor(t, settle, what, func() (bool, string) {
			var err error
			resp, err = cl.Invoke(ctx(t), "echo", []byte(`{"n":1}`))
			if err != nil {
				return false, err.Error()
			}
			return string(resp.Body) == `{"n":1}`, string(resp.Body)
		})
		return resp
	}
	invokeVia(c1, "echo to answer through c1")
	if resp := invokeVia(c2, "echo to answer through c2"); resp.Cold {
		t.Fatalf("the second call (through the other controller) was a cold start: one function, two instances?")
	}
	// Both controllers report the same owner and the same one instance:
	// the non-owner asks the owner.
	status := func(cl *client.Client) apiv1.FunctionStatus {
		t.Helper()
		f, err := cl.Get(ctx(t), "echo")
		if err != nil {
			t.Fatal(err)
		}
		return f.Status
	}
	s1, s2 := status(c1), status(c2)
	if s1.Owner == "" || s1.Owner != s2.Owner || len(s1.Instances) != 1 || len(s2.Instances) != 1 || s1.Instances[0].ID != s2.Instances[0].ID {
		t.Fatalf("status through c1 %+v and through c2 %+v: want one owner and the same one instance", s1, s2)
	}
	// Lists through either controller show the owner's view too.
	for _, cl := range []*client.Client{c1, c2} {
		fns, err := cl.List(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(fns) != 1 || fns[0].Status.Owner != s1.Owner || len(fns[0].Status.Instances) != 1 {
			t.Fatalf("list: %+v, want echo with its owner's one instance", fns)
		}
	}
	owner, instance := s1.Owner, s1.Instances[0].ID
	survivor := "c1"
	if owner == "c1" {
		survivor = "c2"
	}
	t.Logf("echo is owned by %s, instance %s", owner, instance)

	ctrls[owner].proc.Kill()
	// The client fails over to the survivor; the survivor takes echo over
	// once the owner's lease expires, with its instance.
	resp := invokeVia(both, "echo to answer after its owner was killed")
	if resp.Cold {
		t.Errorf("the first call after the failover was a cold start: the instance was not taken over")
	}
	st := status(clientOf(ctrls[survivor].addr))
	if st.Owner != survivor || len(st.Instances) != 1 || st.Instances[0].ID != instance {
		t.Fatalf("after the failover: %+v, want owner %s with instance %s", st, survivor, instance)
	}

	// The killed controller comes back and takes its share back: the
	// instance moves with the function again.
	start(ctrls[owner])
	back := clientOf(ctrls[owner].addr)
	waitFor(t, settle, "the restarted controller to own echo again", func() (bool, string) {
		f, err := back.Get(ctx(t), "echo")
		if err != nil {
			return false, err.Error()
		}
		return f.Status.Owner == owner && len(f.Status.Instances) == 1, fmt.Sprintf("%+v", f.Status)
	})
	if resp := invokeVia(back, "echo to answer through the restarted controller"); resp.Cold {
		t.Errorf("the first call after the hand-back was a cold start")
	}
	st = status(clientOf(ctrls[survivor].addr))
	if len(st.Instances) != 1 || st.Instances[0].ID != instance {
		t.Fatalf("after the hand-back: %+v, want the one instance %s", st, instance)
	}
}
