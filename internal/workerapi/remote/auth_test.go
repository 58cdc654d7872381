package remote_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/remote"
	"github.com/baton-faas/baton/internal/workerapi/remote/remotetest"
	pb "github.com/baton-faas/baton/internal/workerapi/remote/wirepb"
)

// dialWith returns a client of addr with conf.
func dialWith(t *testing.T, addr string, conf *tls.Config) *remote.Client {
	t.Helper()
	c, err := remote.Dial(addr, conf, remote.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The worker API refuses every call that does not come from a controller
// of the cluster, and a controller refuses a worker of another cluster.
func TestRefusesUnauthenticated(t *testing.T) {
	p := remotetest.NewPKI(t)
	served := remotetest.Serve(t, newFake(t), p, "127.0.0.1:0")
	other := remotetest.NewPKI(t)
	pool := func(id *clusterpki.Identity) *tls.Config {
		conf, err := id.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		return conf
	}
	noCert := pool(p.Identity(t, "c", clusterpki.Controller))
	noCert.Certificates = nil
	foreignCert := pool(p.Identity(t, "c", clusterpki.Controller))
	foreignCert.Certificates = other.ClientTLS(t).Certificates

	for _, tc := range []struct {
		name string
		conf *tls.Config
		want string // in the error's text
	}{
		{"no client certificate", noCert, "certificate required"},
		{"a certificate of another CA", foreignCert, "unknown certificate authority"},
		{"a server of another CA", pool(other.Identity(t, "c", clusterpki.Controller)), "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialWith(t, served.Addr, tc.conf).Info(ctxFor(t))
			if err == nil {
				t.Fatal("the call was accepted")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("refused with %q; want it to say %q", err, tc.want)
			}
			if !errors.Is(err, workerapi.ErrWorkerUnavailable) {
				t.Errorf("refused with %v; want it to wrap ErrWorkerUnavailable (no call reached the worker)", err)
			}
		})
	}

	t.Run("a worker calling a worker", func(t *testing.T) {
		conf := pool(p.Identity(t, "worker-2", clusterpki.Worker))
		_, err := dialWith(t, served.Addr, conf).Info(ctxFor(t))
		if !errors.Is(err, remote.ErrPermissionDenied) {
			t.Fatalf("a worker's call: %v; want ErrPermissionDenied", err)
		}
		if class, _ := errdefs.Classify(err); class != errdefs.Unauthenticated {
			t.Errorf("class %s, want %s", class, errdefs.Unauthenticated)
		}
		if !strings.Contains(err.Error(), "worker-2") {
			t.Errorf("refusal %q does not name the node", err)
		}
	})

	t.Run("no TLS at all", func(t *testing.T) {
		conn, err := grpc.NewClient(served.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := pb.NewWorkerClient(conn).Info(ctxFor(t), &pb.InfoRequest{}); err == nil {
			t.Fatal("a plain-text call was accepted")
		}
	})

	// A controller's own certificate is accepted (the refusals above are
	// not the server being broken).
	if _, err := remotetest.Dial(t, served.Addr, p).Info(ctxFor(t)); err != nil {
		t.Fatalf("a controller of the cluster: %v", err)
	}
}

// An expired certificate is refused.
func TestRefusesExpiredCertificate(t *testing.T) {
	p := remotetest.NewPKI(t)
	served := remotetest.Serve(t, newFake(t), p, "127.0.0.1:0")
	id, err := p.CA.Issue(clusterpki.NodeRequest{ID: "old", Role: clusterpki.Controller, Validity: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := id.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	_, err = dialWith(t, served.Addr, conf).Info(ctxFor(t))
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired certificate: %v; want a refusal saying it expired", err)
	}
}
