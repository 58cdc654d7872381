package natsd_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/store/natsd/natsdtest"
)

func TestStartRefusesIncompleteClusterOptions(t *testing.T) {
	route := &url.URL{Scheme: "nats-route", Host: "127.0.0.1:1"}
	good := func() natsd.Options {
		return natsd.Options{
			DataDir: t.TempDir(), Listen: "127.0.0.1:0", Name: "n1",
			Cluster: &natsd.ClusterOptions{Name: "c", Listen: "127.0.0.1:0", Routes: []*url.URL{route}},
		}
	}
	cases := []struct {
		name   string
		change func(*natsd.Options)
		want   string
	}{
		{"no name", func(o *natsd.Options) { o.Name = "" }, "needs a name"},
		{"no cluster name", func(o *natsd.Options) { o.Cluster.Name = "" }, "cluster name"},
		{"no client listener", func(o *natsd.Options) { o.Listen = "" }, "client listen address"},
		{"no data dir", func(o *natsd.Options) { o.DataDir = "" }, "data directory"},
		{"bad cluster listen", func(o *natsd.Options) { o.Cluster.Listen = "6222" }, "cluster listen address"},
		{"bad port", func(o *natsd.Options) { o.Listen = "127.0.0.1:http-ish" }, "bad port"},
		{"route without host", func(o *natsd.Options) { o.Cluster.Routes = []*url.URL{{Scheme: "nats-route"}} }, "nats-route://host:port"},
		{"route credentials without password", func(o *natsd.Options) { o.Cluster.Auth = &natsd.Credentials{User: "u"} }, "user and a password"},
		{"client TLS without listener", func(o *natsd.Options) {
			o.Cluster, o.Listen = nil, ""
			o.ClientTLS = natsdtest.NewCA(t).Config()
		}, "listen address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			tc.change(&o)
			ns, err := natsd.Start(context.Background(), o)
			if err == nil {
				ns.Shutdown()
				t.Fatalf("started; want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// The single-node server of `baton server` is as before: named baton,
// no network listener, its own JetStream leader.
func TestSingleNodeInProcess(t *testing.T) {
	ns, err := natsd.Start(context.Background(), natsd.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if u := ns.ClientURL(); u != "" {
		t.Errorf("ClientURL = %q, want none (in-process only)", u)
	}
	st, err := ns.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.MetaLeader != "baton" || st.ClusterSize != 1 || len(st.Peers) != 0 {
		t.Errorf("status = %+v, want leader baton, size 1, no peers", st)
	}
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.ConnectedClusterName() != "" {
		t.Errorf("single node reports cluster %q", nc.ConnectedClusterName())
	}
}

// Three nodes with mutual TLS on clients and routes and a login: they
// form a JetStream cluster, a client with the CA's certificate and the
// credentials gets in, and one without either is refused.
func TestClusterWithTLSAndCredentials(t *testing.T) {
	ca := natsdtest.NewCA(t)
	auth := &natsd.Credentials{User: "baton", Password: "s3cret"}
	c := natsdtest.StartCluster(t, 3, func(_ int, o *natsd.Options) {
		o.ClientTLS, o.ClientAuth = ca.Config(), auth
		o.Cluster.TLS, o.Cluster.Auth = ca.Config(), auth
	})
	c.WaitReady(3 * time.Minute)
	// The meta group counts its peers a moment after the routes are up.
	var st natsd.Status
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if st, err = c.Nodes[0].Status(); err != nil {
			t.Fatal(err)
		}
		if slices.Equal(st.Peers, []string{"n2", "n3"}) && st.ClusterSize == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node n1 status = %+v, want peers n2 n3 in a cluster of 3", st)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := natsd.Dial(ctx, c.URLs(), natsd.DialOptions{Name: "test", TLS: ca.Config(), Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.ConnectedClusterName() != "test" {
		t.Errorf("connected to cluster %q, want test", nc.ConnectedClusterName())
	}

	// A wrong password is final: Dial does not wait for ctx to end.
	start := time.Now()
	_, err = natsd.Dial(ctx, c.URLs()[:1], natsd.DialOptions{TLS: ca.Config(), Auth: &natsd.Credentials{User: "baton", Password: "wrong"}})
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("dial with a wrong password: %v, want an authorization error", err)
	}
	if ctx.Err() != nil {
		t.Errorf("dial with a wrong password waited %s, until the context ended", time.Since(start))
	}
	// Without a client certificate the TLS handshake fails.
	noCert := ca.Config()
	noCert.Certificates = nil
	if nc, err := nats.Connect(c.URLs()[0], nats.Secure(noCert), nats.UserInfo(auth.User, auth.Password), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Error("a client without a certificate connected")
	}
}

func TestDialWaitsForAServer(t *testing.T) {
	port := natsdtest.FreePorts(t, 1)[0]
	listen := "127.0.0.1:" + strconv.Itoa(port)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		nc, err := natsd.Dial(ctx, []string{"nats://" + listen}, natsd.DialOptions{})
		if err == nil {
			nc.Close()
		}
		done <- err
	}()
	ns, err := natsd.Start(ctx, natsd.Options{DataDir: t.TempDir(), Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if err := <-done; err != nil {
		t.Fatalf("Dial did not connect to the server that started after it: %v", err)
	}

	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	free := natsdtest.FreePorts(t, 1)[0]
	if _, err := natsd.Dial(short, []string{"nats://127.0.0.1:" + strconv.Itoa(free)}, natsd.DialOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial to nothing: %v, want the context's deadline", err)
	}
}
