// Package remotetest puts a worker behind the real network transport for
// tests: a cluster CA in a temporary directory, a remote.Server on a
// loopback port with mutual TLS, and a remote.Client of it.
package remotetest

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workerapi/remote"
)

// PKI is a test cluster's CA.
type PKI struct{ CA *clusterpki.CA }

// NewPKI creates a CA.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := clusterpki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca}
}

// Identity issues a node certificate for loopback.
func (p *PKI) Identity(t testing.TB, id string, role clusterpki.Role) *clusterpki.Identity {
	t.Helper()
	ident, err := p.CA.Issue(clusterpki.NodeRequest{ID: id, Role: role, Hosts: []string{"127.0.0.1", "localhost"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return ident
}

// ServerTLS is a worker's server configuration.
func (p *PKI) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	conf, err := p.Identity(t, "worker-1", clusterpki.Worker).ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// ClientTLS is a controller's client configuration.
func (p *PKI) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	conf, err := p.Identity(t, "controller-1", clusterpki.Controller).ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// Serve serves w at addr ("127.0.0.1:0" for any port) until the test ends
// or the returned stop is called, and returns the address it listens on.
func Serve(t testing.TB, w workerapi.Worker, p *PKI, addr string) (string, func()) {
	t.Helper()
	srv, err := remote.NewServer(w, p.ServerTLS(t), remote.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := listen(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stop worker API server: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("worker API server: %v", err)
		}
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// listen listens on addr; a port just given up by a stopped server may
// take a moment to be free again.
func listen(t testing.TB, addr string) (net.Listener, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return lis, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Dial returns a controller's client of the worker at addr, closed when
// the test ends.
func Dial(t testing.TB, addr string, p *PKI) *remote.Client {
	t.Helper()
	c, err := remote.Dial(addr, p.ClientTLS(t), remote.ClientOptions{ReconnectMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Loopback serves w on a loopback port and returns a client of it: w
// behind the real transport.
func Loopback(t testing.TB, w workerapi.Worker) *remote.Client {
	t.Helper()
	p := NewPKI(t)
	addr, _ := Serve(t, w, p, "127.0.0.1:0")
	return Dial(t, addr, p)
}
