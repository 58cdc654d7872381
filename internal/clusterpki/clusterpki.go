// Package clusterpki is the certificate authority of a Baton cluster: it
// creates the cluster's CA, issues every node (controller or worker) a
// certificate naming its id and role, and builds the mutual-TLS
// configurations with which nodes talk to each other. Keys are ECDSA
// P-256; a node's id is its certificate's Common Name, its role the
// Organizational Unit, and its addresses the SANs its peers dial.
package clusterpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
)

// Role is what a node is in the cluster.
type Role string

const (
	Controller Role = "controller"
	Worker     Role = "worker"
	// NATS is a `baton nats` node: controllers and workers verify its
	// certificate when they connect; it is never a controller or worker.
	NATS Role = "nats"
)

// Files in a CA directory and in a node's identity directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	CertFile   = "node.crt"
	KeyFile    = "node.key"
)

// Default validities.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultNodeValidity = 365 * 24 * time.Hour
)

// ErrInvalid marks a request the CA refuses (bad id, role or host) and
// files that are not what they should be.
var ErrInvalid = errdefs.New(errdefs.Invalid, "invalid_certificate_request", "invalid certificate request")

// ErrUnauthenticated: a peer presented no certificate of the cluster, or
// one without a node identity.
var ErrUnauthenticated = errdefs.New(errdefs.Unauthenticated, "unauthenticated_node", "peer is not a node of this cluster")

// idRE is what a node id may be: it appears in file names, logs and
// NATS subjects.
var idRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$`)

// CA is a cluster's certificate authority.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// NewCA creates a CA named after the cluster (validity 0: the default).
func NewCA(cluster string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Baton cluster CA " + cluster, Organization: []string{"Baton"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clocks a little behind
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// CertPEM is the CA's certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte { return slices.Clone(ca.certPEM) }

// Save writes the CA's certificate and key into dir (created if needed).
// It refuses to overwrite an existing CA: every certificate it issued
// would stop being trusted.
func (ca *CA) Save(dir string) error {
	keyDER, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	// Neither file may exist, or a new key could end up beside an old
	// certificate.
	for _, name := range []string{CAKeyFile, CACertFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("save CA: %w: %s exists; refusing to overwrite it", ErrInvalid, filepath.Join(dir, name))
		}
	}
	if err := writeFile(filepath.Join(dir, CAKeyFile), pemBlock("EC PRIVATE KEY", keyDER), 0o600, false); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := writeFile(filepath.Join(dir, CACertFile), ca.certPEM, 0o644, false); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// LoadCA reads a CA that Save wrote.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", CACertFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA: %w: %s is not a CA certificate", ErrInvalid, CACertFile)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("load CA: %w: %s holds no EC private key", ErrInvalid, CAKeyFile)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w: %v", CAKeyFile, ErrInvalid, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA: %w: %s does not match %s", ErrInvalid, CAKeyFile, CACertFile)
	}
	return &CA{cert: cert, certPEM: certPEM, key: key}, nil
}

// NodeRequest is what a node's certificate says.
type NodeRequest struct {
	// ID is the node's stable id (its certificate's Common Name).
	ID   string
	Role Role
	// Hosts are the IP addresses and DNS names peers dial the node at
	// (its advertised address); a node that only dials others may have
	// none.
	Hosts []string
	// Validity 0 means DefaultNodeValidity.
	Validity time.Duration
}

// Issue creates a key and a certificate for a node.
func (ca *CA) Issue(req NodeRequest) (*Identity, error) {
	if !idRE.MatchString(req.ID) {
		return nil, fmt.Errorf("issue certificate: %w: node id %q must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", ErrInvalid, req.ID)
	}
	if req.Role != Controller && req.Role != Worker && req.Role != NATS {
		return nil, fmt.Errorf("issue certificate for %s: %w: role %q is not %q, %q or %q", req.ID, ErrInvalid, req.Role, Controller, Worker, NATS)
	}
	validity := req.Validity
	if validity <= 0 {
		validity = DefaultNodeValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", req.ID, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter // a certificate outliving its CA is not trusted anyway
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.ID, OrganizationalUnit: []string{string(req.Role)}, Organization: []string{"Baton"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Every node both serves and dials.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range req.Hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h != "" && validHostname(h):
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		default:
			return nil, fmt.Errorf("issue certificate for %s: %w: host %q is neither an IP address nor a DNS name", req.ID, ErrInvalid, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", req.ID, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", req.ID, err)
	}
	return &Identity{CACert: slices.Clone(ca.certPEM), Cert: pemBlock("CERTIFICATE", der), Key: pemBlock("EC PRIVATE KEY", keyDER)}, nil
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

func validHostname(h string) bool { return hostnameRE.MatchString(h) }

// Identity is what a node needs to join: the cluster's CA certificate and
// its own certificate and key, PEM-encoded.
type Identity struct {
	CACert []byte
	Cert   []byte
	Key    []byte
}

// Save writes the identity into dir (created if needed): ca.crt,
// node.crt and node.key (mode 0600). Existing files are replaced, so that
// a node's certificate can be renewed in place.
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save node identity: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KeyFile, id.Key, 0o600}, {CertFile, id.Cert, 0o644}, {CACertFile, id.CACert, 0o644}} {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.mode, true); err != nil {
			return fmt.Errorf("save node identity: %w", err)
		}
	}
	return nil
}

// LoadIdentity reads an identity that Save wrote.
func LoadIdentity(dir string) (*Identity, error) {
	var id Identity
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{CACertFile, &id.CACert}, {CertFile, &id.Cert}, {KeyFile, &id.Key}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, fmt.Errorf("load node identity: %w", err)
		}
		*f.dst = b
	}
	if _, _, err := id.material(); err != nil {
		return nil, err
	}
	return &id, nil
}

func (id *Identity) pair() (tls.Certificate, error) {
	pair, err := tls.X509KeyPair(id.Cert, id.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node identity: %w: %v", ErrInvalid, err)
	}
	return pair, nil
}

// material is the node's key pair and the pool of its cluster's CA.
func (id *Identity) material() (tls.Certificate, *x509.CertPool, error) {
	pair, err := id.pair()
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(id.CACert) {
		return tls.Certificate{}, nil, fmt.Errorf("node identity: %w: the CA certificate is not PEM", ErrInvalid)
	}
	return pair, pool, nil
}

// Node returns the id and role the identity's certificate names.
func (id *Identity) Node() (string, Role, error) {
	cert, err := parseCert(id.Cert)
	if err != nil {
		return "", "", err
	}
	return nodeOf(cert)
}

// ServerTLS is the configuration of a node's server: it presents the
// node's certificate and accepts only clients with a certificate of the
// cluster's CA (TLS 1.3).
func (id *Identity) ServerTLS() (*tls.Config, error) {
	pair, pool, err := id.material()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS is the configuration of a node dialing another: it presents
// the node's certificate and trusts only servers with a certificate of
// the cluster's CA for the address dialed.
func (id *Identity) ClientTLS() (*tls.Config, error) {
	pair, pool, err := id.material()
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, RootCAs: pool}, nil
}

// PeerNode returns the node id and role of a verified TLS peer (the
// handshake already checked its chain against the cluster's CA).
func PeerNode(state tls.ConnectionState) (string, Role, error) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", "", fmt.Errorf("%w: no verified client certificate", ErrUnauthenticated)
	}
	return nodeOf(state.VerifiedChains[0][0])
}

func nodeOf(cert *x509.Certificate) (string, Role, error) {
	if cert.Subject.CommonName == "" || len(cert.Subject.OrganizationalUnit) != 1 {
		return "", "", fmt.Errorf("%w: certificate %q names no node id and role", ErrUnauthenticated, cert.Subject)
	}
	return cert.Subject.CommonName, Role(cert.Subject.OrganizationalUnit[0]), nil
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: no PEM certificate", ErrInvalid)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return cert, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return serial, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile writes path atomically (a temporary file, synced, then put
// in place), so that a crash leaves the old file or the new one, never
// half of one. With replace false an existing file is an error and is
// left alone.
func writeFile(path string, data []byte, mode os.FileMode, replace bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after a rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp.Name(), path)
	}
	// A hard link, unlike a rename, fails when path exists.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s exists; refusing to overwrite it", ErrInvalid, path)
		}
		return err
	}
	return nil
}
