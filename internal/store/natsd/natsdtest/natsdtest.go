// Package natsdtest runs clusters of in-process NATS nodes (natsd) on
// loopback ports for tests, and makes the test certificates they need.
package natsdtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/store/natsd"
)

// FreePorts returns n loopback TCP ports that were free a moment ago.
func FreePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("free port: %v", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// Cluster is n in-process nodes with routes to each other.
type Cluster struct {
	tb    testing.TB
	Opts  []natsd.Options
	Nodes []*natsd.Server // nil for a stopped node
}

// StartCluster starts n clustered nodes in temporary directories; tweak,
// when not nil, may change each node's options (TLS, credentials) before
// it starts. The nodes stop when the test ends.
func StartCluster(tb testing.TB, n int, tweak func(i int, o *natsd.Options)) *Cluster {
	tb.Helper()
	ports := FreePorts(tb, 2*n)
	var routes []*url.URL
	for i := range n {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+i])})
	}
	c := &Cluster{tb: tb}
	for i := range n {
		o := natsd.Options{
			DataDir: tb.TempDir(),
			Listen:  fmt.Sprintf("127.0.0.1:%d", ports[i]),
			Name:    fmt.Sprintf("n%d", i+1),
			Cluster: &natsd.ClusterOptions{
				Name: "test", Listen: fmt.Sprintf("127.0.0.1:%d", ports[n+i]), Routes: routes,
			},
		}
		if tweak != nil {
			tweak(i, &o)
		}
		c.Opts = append(c.Opts, o)
		c.Nodes = append(c.Nodes, nil)
		c.Start(i)
	}
	tb.Cleanup(func() {
		for i := range c.Nodes {
			c.Stop(i)
		}
	})
	return c
}

// Start starts node i (again, after Stop) with its data directory.
func (c *Cluster) Start(i int) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := natsd.Start(ctx, c.Opts[i])
	if err != nil {
		c.tb.Fatalf("start nats node %d: %v", i, err)
	}
	c.Nodes[i] = ns
}

// Stop shuts node i down.
func (c *Cluster) Stop(i int) {
	if c.Nodes[i] != nil {
		c.Nodes[i].Shutdown()
		c.Nodes[i] = nil
	}
}

// URLs are the client URLs of the nodes, stopped ones included.
func (c *Cluster) URLs() []string {
	var out []string
	for _, o := range c.Opts {
		scheme := "nats"
		if o.ClientTLS != nil {
			scheme = "tls"
		}
		out = append(out, scheme+"://"+o.Listen)
	}
	return out
}

// WaitReady waits until every running node sees the same JetStream meta
// leader, a meta group of all nodes and routes to all other running nodes.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, why := c.ready()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			c.tb.Fatalf("nats cluster not ready after %s: %s", timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) ready() (bool, string) {
	running := 0
	for _, ns := range c.Nodes {
		if ns != nil {
			running++
		}
	}
	leader := ""
	for i, ns := range c.Nodes {
		if ns == nil {
			continue
		}
		st, err := ns.Status()
		if err != nil {
			return false, err.Error()
		}
		if st.MetaLeader == "" {
			return false, fmt.Sprintf("node %d has no meta leader", i)
		}
		if leader != "" && st.MetaLeader != leader {
			return false, fmt.Sprintf("nodes disagree on the meta leader: %s, %s", leader, st.MetaLeader)
		}
		leader = st.MetaLeader
		if st.ClusterSize < len(c.Nodes) {
			return false, fmt.Sprintf("node %d knows %d of %d nodes of the meta group", i, st.ClusterSize, len(c.Nodes))
		}
		if len(st.Peers) != running-1 {
			return false, fmt.Sprintf("node %d has routes to %v", i, st.Peers)
		}
	}
	return true, ""
}

// CA is a test certificate authority with one certificate for nodes and
// clients alike (127.0.0.1 and localhost; server and client use).
type CA struct {
	Pool    *x509.CertPool
	Cert    tls.Certificate
	certPEM []byte
	keyPEM  []byte
	caPEM   []byte
}

// NewCA makes a CA and a certificate it signed.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "baton test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "baton test node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	ca := &CA{
		Pool:    x509.NewCertPool(),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}
	ca.Pool.AddCert(caCert)
	if ca.Cert, err = tls.X509KeyPair(ca.certPEM, ca.keyPEM); err != nil {
		tb.Fatal(err)
	}
	return ca
}

// Config is mutual TLS with the CA's certificate: for a node's clients and
// routes, and for clients.
func (ca *CA) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.Cert},
		RootCAs: ca.Pool, ClientCAs: ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}
}

// WriteFiles writes cert.pem, key.pem and ca.pem into dir and returns
// their paths.
func (ca *CA) WriteFiles(tb testing.TB, dir string) (cert, key, caFile string) {
	tb.Helper()
	cert, key, caFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	for path, data := range map[string][]byte{cert: ca.certPEM, key: ca.keyPEM, caFile: ca.caPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return cert, key, caFile
}
