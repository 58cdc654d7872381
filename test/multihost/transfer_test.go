package multihost

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/client"
)

// TestTransferAcrossHosts: direct transfers between workers on netns
// hosts. Workers run fake sandboxes, whose functions echo their event, so
// a 1 MB input comes back as a 1 MB output that the worker keeps; the
// next step, on another worker, pulls it over the worker API (worker to
// worker, mutual TLS) and the execution's output, pulled by the
// controller, is the input byte for byte. Then the worker that keeps a
// step's output is killed -9 before the next step pulls it: the next step
// fails with Baton.TransferSourceLost, which the workflow catches to run
// the producing step again on a live worker, and the execution finishes
// with the right bytes.
func TestTransferAcrossHosts(t *testing.T) {
	t.Parallel()
	c := newCluster(t, false)
	d := deployed{}
	cl := c.client(c.controllers...)
	// Two functions of one app, and a filler of that app, served by one
	// controller: steps go over its local bus, the only one that passes
	// references. Each takes 10 GiB of a worker's memory (fake sandboxes
	// use none), so that the producer and the filler fill one worker and
	// the consumer must start on another: placement would otherwise put
	// an app's instances together.
	d.deploy(t, cl, "xdt-a", 1)
	owner := c.ownerOf("xdt-a")
	var second, filler string
	for i := 0; i < 128 && (second == "" || filler == ""); i++ {
		name := fmt.Sprintf("xdt-b%d", i)
		d.deploy(t, cl, name, 1)
		switch {
		case c.ownerOf(name) != owner:
		case second == "":
			second = name
		default:
			filler = name
		}
	}
	if filler == "" {
		t.Fatal("not two function names among 128 hash to the owner of xdt-a")
	}
	for _, fn := range []string{"xdt-a", second, filler} {
		setSpec(t, cl, fn, func(sp *apiv1.FunctionSpec) { sp.App, sp.MemoryMB = "xdt-app", 10240 })
	}
	oc := c.client(owner)
	// The producer and the filler start together on one worker.
	for _, fn := range []string{"xdt-a", filler} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := oc.Invoke(ctx, fn, []byte(`{}`))
		cancel()
		if err != nil {
			t.Fatalf("invoke %s: %v", fn, err)
		}
	}

	data := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	input, _ := json.Marshal(map[string]string{"data": data})
	check := func(t *testing.T, x apiv1.Execution) {
		t.Helper()
		if x.Status != apiv1.ExecutionSucceeded {
			t.Fatalf("execution %s: %s %s: %s", x.ID, x.Status, x.Error, x.Cause)
		}
		var out struct{ Data string }
		if err := json.Unmarshal(x.Output, &out); err != nil || out.Data != data {
			t.Fatalf("execution %s: the output is not the input (%d bytes: %.100s)", x.ID, len(x.Output), x.Output)
		}
	}

	t.Run("PullAcrossHosts", func(t *testing.T) {
		putWF(t, oc, "xdt-hop", fmt.Sprintf(`{"StartAt":"A","States":{
			"A":{"Type":"Task","Resource":"xdt-a","Next":"B"},
			"B":{"Type":"Task","Resource":%q,"End":true}}}`, second))
		crossed := false
		for i := 0; i < 6 && !crossed; i++ {
			x := runWF(t, oc, "xdt-hop", input)
			check(t, x)
			hosts := taskHosts(t, oc, x.ID)
			t.Logf("execution %s: A on %s, B on %s", x.ID, hosts["A"], hosts["B"])
			crossed = hosts["A"] != "" && hosts["B"] != "" && hosts["A"] != hosts["B"]
		}
		if !crossed {
			t.Fatal("the two steps never ran on two different workers: nothing was pulled across hosts")
		}
	})

	t.Run("SenderKilled", func(t *testing.T) {
		putWF(t, oc, "xdt-lost", fmt.Sprintf(`{"StartAt":"Produce","States":{
			"Produce":{"Type":"Task","Resource":"xdt-a","Parameters":{"data.$":"$.data"},"ResultPath":"$.out","Next":"Pause"},
			"Pause":{"Type":"Wait","Seconds":4,"Next":"Consume"},
			"Consume":{"Type":"Task","Resource":%q,"InputPath":"$.out","End":true,
				"Catch":[{"ErrorEquals":["Baton.TransferSourceLost"],"ResultPath":"$.lost","Next":"Produce"}]}}}`, second))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		x, err := oc.StartExecution(ctx, "xdt-lost", input, client.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Kill the worker that keeps Produce's output while Pause waits.
		var victim *node
		waitFor(t, "Produce to finish", func() error {
			h := taskHosts(t, oc, x.ID)["Produce"]
			for _, w := range c.workers {
				if w.id == h {
					victim = w
					return nil
				}
			}
			return fmt.Errorf("Produce ran on %q", h)
		})
		victim.proc.Kill()
		t.Logf("killed %s, which keeps Produce's output", victim.id)
		var final apiv1.Execution
		waitFor(t, "the execution to end", func() error {
			final, err = oc.DescribeExecution(ctx, x.ID)
			if err != nil {
				return err
			}
			if final.Status == apiv1.ExecutionRunning {
				return fmt.Errorf("still running at %s", final.ResumeAt)
			}
			return nil
		})
		check(t, final)
		var lost, produced int
		for _, ev := range final.History {
			if ev.State == "Consume" && ev.Kind == "TaskFailed" && ev.Error == "Baton.TransferSourceLost" {
				lost++
			}
			if ev.State == "Produce" && ev.Kind == "TaskSucceeded" {
				produced++
			}
		}
		if lost == 0 || produced < 2 {
			t.Fatalf("want Consume failed with Baton.TransferSourceLost and Produce run again; history: %s", historyString(final.History))
		}
	})
}

// setSpec redeploys a function with its spec changed (a new version).
func setSpec(t *testing.T, cl *client.Client, name string, change func(*apiv1.FunctionSpec)) {
	t.Helper()
	sp := spec()
	change(&sp)
	waitFor(t, "redeploy "+name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cl.Deploy(ctx, name, client.DeployRequest{FunctionSpec: sp, Code: code(t, 2)})
		return err
	})
}

func putWF(t *testing.T, cl *client.Client, name, def string) {
	t.Helper()
	waitFor(t, "deploy workflow "+name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cl.DeployWorkflow(ctx, name, []byte(def))
		return err
	})
}

func runWF(t *testing.T, cl *client.Client, name string, input []byte) apiv1.Execution {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x, err := cl.StartExecution(ctx, name, input, client.StartOptions{Sync: true})
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return x
}

// taskHosts maps each top-level state of an execution to the worker its
// last successful task ran on.
func taskHosts(t *testing.T, cl *client.Client, id string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x, err := cl.DescribeExecution(ctx, id)
	if err != nil {
		t.Fatalf("describe %s: %v", id, err)
	}
	out := map[string]string{}
	for _, ev := range x.History {
		if ev.Kind == "TaskSucceeded" && ev.Path == "" {
			out[ev.State] = ev.Host
		}
	}
	return out
}

func historyString(h []apiv1.ExecutionEvent) string {
	var b strings.Builder
	for _, ev := range h {
		fmt.Fprintf(&b, "\n  %s %s attempt %d host %s %s %s", ev.Kind, ev.State, ev.Attempt, ev.Host, ev.Error, ev.Cause)
	}
	return b.String()
}
