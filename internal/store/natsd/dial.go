package natsd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// PasswordEnv is the environment variable that holds the NATS password
// of `baton nats --user` and of controllers' and workers' --nats-user: a
// flag would show it to every user of the host in the process list.
const PasswordEnv = "BATON_NATS_PASSWORD"

// DialOptions configure a network connection to a NATS cluster.
type DialOptions struct {
	// Name identifies the client to the servers (monitoring, logs).
	Name string
	// TLS, when set, is the client TLS configuration of every TLS
	// connection: RootCAs verify the servers, and the certificate, if any,
	// is presented to servers that ask for one (mutual TLS). A connection
	// is TLS when its URL is tls:// or when the server requires TLS; a
	// nats:// URL to a server that does not is spoken to in the clear.
	TLS *tls.Config
	// Auth, when set, logs in with a user and password.
	Auth   *Credentials
	Logger *slog.Logger
}

// Refusal is why a connection can never succeed with the options given.
type Refusal int

const (
	// LoginRefused: the servers require a login and refused the one given
	// (or none was given).
	LoginRefused Refusal = iota + 1
	// ClientCertRefused: the servers require a client certificate and
	// refused the one presented (or none was).
	ClientCertRefused
	// ServerUntrusted: the servers' certificate is not signed by a trusted
	// CA or does not name the address dialed.
	ServerUntrusted
	// TLSUnavailable: TLS was required (a tls:// URL) and the servers do
	// not offer it.
	TLSUnavailable
)

// RefusedError is a connection refused for good: Dial returns it at once
// instead of retrying, since a retry with the same options cannot succeed.
type RefusedError struct {
	Servers string
	Reason  Refusal
	// What says in words what was refused.
	What string
	Err  error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("NATS at %s: %s: %v", e.Servers, e.What, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Dial connects to any of the servers (nats://host:port, or tls://), and
// retries until one answers or ctx ends, so that a process may start
// before its NATS cluster does. A refusal (login, certificates, see
// RefusedError) ends it at once. Once connected, the connection
// reconnects for as long as it is open, to any server of the cluster it
// learnt of.
func Dial(ctx context.Context, servers []string, o DialOptions) (*nats.Conn, error) {
	if len(servers) == 0 {
		return nil, errors.New("no nats servers to connect to")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats connection restored", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if o.TLS != nil {
		// Not nats.Secure: that would also demand TLS of servers reached
		// by nats:// URLs. tls:// URLs demand it by themselves.
		conf := o.TLS
		opts = append(opts, func(no *nats.Options) error {
			no.TLSConfig = conf
			return nil
		})
	}
	if o.Auth != nil {
		opts = append(opts, nats.UserInfo(o.Auth.User, o.Auth.Password))
	}
	list := strings.Join(servers, ",")
	wait := 100 * time.Millisecond
	closedAfterTLS := 0 // consecutive attempts the servers hung up on
	for attempt := 0; ; attempt++ {
		nc, err := nats.Connect(list, opts...)
		if err == nil {
			return nc, nil
		}
		if r := refusal(err, o); r != nil {
			r.Servers = list
			return nil, r
		}
		// With TLS 1.3 a server that rejects the client's certificate may
		// just close the connection after the handshake, before its alert
		// is read; a server going down does so too, but not every time.
		if closedAfterHandshake(err) {
			closedAfterTLS++
		} else {
			closedAfterTLS = 0
		}
		if closedAfterTLS == 3 {
			return nil, &RefusedError{Servers: list, Reason: ClientCertRefused, Err: err,
				What: "the server closed every TLS connection right away, as it does with a client certificate it refuses"}
		}
		if attempt == 0 {
			log.Info("waiting for nats", "servers", list, "err", err)
		} else {
			log.Debug("nats not reachable yet", "servers", list, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats %s: %w (%w)", list, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// closedAfterHandshake: the server hung up on a TLS connection.
func closedAfterHandshake(err error) bool {
	return errors.Is(err, nats.ErrTLS) &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET))
}

// refusal classifies an error of nats.Connect that no retry can cure; nil
// means the servers may be unreachable for now.
func refusal(err error, o DialOptions) *RefusedError {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		op       *net.OpError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		if o.Auth == nil {
			return &RefusedError{Reason: LoginRefused, What: "the server requires a login and none was given", Err: err}
		}
		return &RefusedError{Reason: LoginRefused, What: fmt.Sprintf("the server refused the login of user %q", o.Auth.User), Err: err}
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		if o.TLS == nil || o.TLS.RootCAs == nil {
			return &RefusedError{Reason: ServerUntrusted, What: "the server's TLS certificate is not signed by a CA this host trusts (no CA given)", Err: err}
		}
		return &RefusedError{Reason: ServerUntrusted, What: "the server's TLS certificate is not signed by the CA given or does not name the address dialed", Err: err}
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the server: with mutual TLS, the client's
		// certificate (or its absence) is what it objects to.
		if o.TLS == nil || len(o.TLS.Certificates) == 0 {
			return &RefusedError{Reason: ClientCertRefused, What: "the server requires a client certificate and none was given", Err: err}
		}
		return &RefusedError{Reason: ClientCertRefused, What: "the server refused this client's TLS certificate", Err: err}
	case errors.Is(err, nats.ErrSecureConnWanted):
		return &RefusedError{Reason: TLSUnavailable, What: "the server does not offer TLS, which a tls:// URL requires", Err: err}
	}
	return nil
}
