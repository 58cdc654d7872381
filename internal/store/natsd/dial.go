package natsd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// DialOptions configure a network connection to a NATS cluster.
type DialOptions struct {
	// Name identifies the client to the servers (monitoring, logs).
	Name string
	// TLS, when set, is the client TLS configuration (RootCAs to trust the
	// servers; a certificate for mutual TLS).
	TLS *tls.Config
	// Auth, when set, logs in with a user and password.
	Auth   *Credentials
	Logger *slog.Logger
}

// Dial connects to any of the servers (nats://host:port, or tls://), and
// retries until one answers or ctx ends, so that a process may start
// before its NATS cluster does. Once connected, the connection reconnects
// for as long as it is open, to any server of the cluster it learnt of.
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
		opts = append(opts, nats.Secure(o.TLS))
	}
	if o.Auth != nil {
		opts = append(opts, nats.UserInfo(o.Auth.User, o.Auth.Password))
	}
	list := strings.Join(servers, ",")
	wait := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(list, opts...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
			return nil, fmt.Errorf("connect to nats %s: %w", list, err)
		}
		log.Debug("nats not reachable yet", "servers", list, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats %s: %w (%w)", list, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
