// Package remotetest puts a worker behind the real network transport for
// tests: a cluster CA in a temporary directory, a remote.Server on a
// loopback port with mutual TLS, and a remote.Client of it.
package remotetest

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
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

// Served is a worker served by Serve.
type Served struct {
	// Addr is the address the server listens on.
	Addr   string
	t      testing.TB
	srv    *remote.Server
	served chan error
	once   sync.Once
}

// Serve serves w at addr ("127.0.0.1:0" for any port) until the test ends
// or Stop or Kill is called.
func Serve(t testing.TB, w workerapi.Worker, p *PKI, addr string) *Served {
	t.Helper()
	srv, err := remote.NewServer(w, p.ServerTLS(t), remote.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &Served{Addr: lis.Addr().String(), t: t, srv: srv, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(lis) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server gracefully: calls in flight may finish (30s).
func (s *Served) Stop() { s.stop(30 * time.Second) }

// Kill stops the server at once, cutting every connection, as if its
// process died.
func (s *Served) Kill() { s.stop(0) }

func (s *Served) stop(grace time.Duration) {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := s.srv.Stop(ctx); err != nil && grace > 0 {
			s.t.Errorf("stop worker API server: %v", err)
		}
		if err := <-s.served; err != nil {
			s.t.Errorf("worker API server: %v", err)
		}
	})
}

// listen listens on addr; a port just given up by a stopped server may
// take a moment to be free again.
func listen(addr string) (net.Listener, error) {
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
	return Dial(t, Serve(t, w, p, "127.0.0.1:0").Addr, p)
}
