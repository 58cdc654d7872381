package clusterpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// A CA saved and loaded again issues certificates that a node saved and
// loaded again uses for mutual TLS, naming its id, role and addresses.
func TestIssueSaveLoadHandshake(t *testing.T) {
	dir := t.TempDir()
	if err := mustCA(t).Save(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca", CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v, mode %v; want 0600", err, fi.Mode())
	}
	worker, err := ca.Issue(NodeRequest{ID: "worker-1", Role: Worker, Hosts: []string{"127.0.0.1", "::1", "node1.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Save(filepath.Join(dir, "worker")); err != nil {
		t.Fatal(err)
	}
	worker, err = LoadIdentity(filepath.Join(dir, "worker"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "worker", KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node key: %v; want mode 0600", err)
	}
	if id, role, err := worker.Node(); err != nil || id != "worker-1" || role != Worker {
		t.Fatalf("Node() = %s, %s, %v", id, role, err)
	}
	cert, err := parseCert(worker.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || cert.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("key %T; want ECDSA P-256", cert.PublicKey)
	}
	if !slices.Equal(cert.DNSNames, []string{"node1.example"}) || len(cert.IPAddresses) != 2 || !cert.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("SANs %v %v", cert.DNSNames, cert.IPAddresses)
	}
	controller, err := ca.Issue(NodeRequest{ID: "ctl-1", Role: Controller})
	if err != nil {
		t.Fatal(err)
	}

	serverConf, err := worker.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	clientConf, err := controller.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", serverConf)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	peer := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			peer <- err
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			peer <- err
			return
		}
		id, role, err := PeerNode(tc.ConnectionState())
		if err == nil && (id != "ctl-1" || role != Controller) {
			err = errors.New("peer is " + id + "/" + string(role))
		}
		peer <- err
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), clientConf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := <-peer; err != nil {
		t.Fatalf("server side: %v", err)
	}
}

// Saving a CA over another one is refused: it would orphan every
// certificate the first issued.
func TestSaveRefusesToOverwriteACA(t *testing.T) {
	dir := t.TempDir()
	if err := mustCA(t).Save(dir); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if err := mustCA(t).Save(dir); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second Save: %v; want a refusal", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if string(before) != string(after) {
		t.Fatal("the first CA's certificate was changed")
	}
}

// Bad requests and bad files get clear errors.
func TestRefusals(t *testing.T) {
	ca := mustCA(t)
	for _, req := range []NodeRequest{
		{ID: "", Role: Worker},
		{ID: "a/b", Role: Worker},
		{ID: "w", Role: "admin"},
		{ID: "w", Role: Worker, Hosts: []string{"not a host"}},
	} {
		if _, err := ca.Issue(req); !errors.Is(err, ErrInvalid) {
			t.Errorf("Issue(%+v): %v; want ErrInvalid", req, err)
		}
	}
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	other := mustCA(t)
	otherDir := t.TempDir()
	if err := other.Save(otherDir); err != nil {
		t.Fatal(err)
	}
	// A key that is not the certificate's.
	key, _ := os.ReadFile(filepath.Join(otherDir, CAKeyFile))
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadCA with a foreign key: %v; want ErrInvalid", err)
	}
	// A node certificate is not a CA.
	id, err := ca.Issue(NodeRequest{ID: "w", Role: Worker})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFile), id.Cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadCA of a node certificate: %v; want ErrInvalid", err)
	}
	if _, _, err := PeerNode(tls.ConnectionState{}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("PeerNode without a verified chain: %v", err)
	}
	if _, _, err := nodeOf(&x509.Certificate{}); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a certificate without a node identity: %v", err)
	}
}
