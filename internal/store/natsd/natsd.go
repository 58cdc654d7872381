// Package natsd runs the nats-server Baton links: embedded with
// file-backed JetStream in Baton's data directory, so that `baton server`
// needs no external service, or as one node of a clustered JetStream
// (`baton nats`), so that a cluster needs nothing but the `baton` binary.
package natsd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configure the server. The zero value of the cluster and
// security fields is the single-node server of `baton server`.
type Options struct {
	DataDir string
	// Listen, when set (host:port), also accepts network clients; empty
	// means in-process connections only.
	Listen string
	Logger *slog.Logger

	// Name is the server's name; it must be unique within a cluster.
	// Empty means "baton" (the single-node server).
	Name string
	// ClientTLS, when set, makes the client listener accept TLS
	// connections only. Its ClientAuth decides whether clients must
	// present a certificate (tls.RequireAndVerifyClientCert for mutual TLS).
	ClientTLS *tls.Config
	// ClientAuth, when set, requires clients to log in with it.
	ClientAuth *Credentials
	// Cluster, when set, makes this server one node of a JetStream cluster.
	Cluster *ClusterOptions
}

// ClusterOptions make a server one node of a JetStream cluster.
type ClusterOptions struct {
	// Name of the cluster; every node of it must use the same.
	Name string
	// Listen is the host:port on which this node accepts routes from its
	// peers.
	Listen string
	// Routes are the peers' route URLs (nats-route://host:port). The list
	// may include this node's own address, so every node can be given the
	// same list; an empty list makes a node that waits for peers to connect.
	Routes []*url.URL
	// TLS, when set, secures routes in both directions: it is the server
	// configuration for routes accepted and the client configuration for
	// routes this node opens, so it needs a certificate usable for both and
	// the CA in RootCAs and ClientCAs.
	TLS *tls.Config
	// Auth, when set, requires peers to log in with it, and this node logs
	// in to its peers with it.
	Auth *Credentials
}

// Credentials are a NATS user name and password.
type Credentials struct {
	User     string
	Password string
}

// Server is a running NATS server.
type Server struct {
	ns   *server.Server
	auth *Credentials
}

// Start starts the server and waits until it accepts connections.
func Start(ctx context.Context, o Options) (*Server, error) {
	opts, err := serverOptions(o)
	if err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create nats server: %w", err)
	}
	if o.Logger != nil {
		// Notices are routine chatter at info level; warnings and errors
		// (limits reached, a damaged store) must reach the operator.
		ns.SetLoggerV2(slogLogger{o.Logger.With("component", "nats")}, false, false, false)
	}
	ns.Start()
	deadline := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !ns.ReadyForConnections(deadline) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server not ready after %s", deadline)
	}
	return &Server{ns: ns, auth: o.ClientAuth}, nil
}

// serverOptions translates Options into nats-server's, checking them.
func serverOptions(o Options) (*server.Options, error) {
	opts := &server.Options{
		ServerName: "baton",
		JetStream:  true,
		StoreDir:   filepath.Join(o.DataDir, "jetstream"),
		NoSigs:     true,
		DontListen: o.Listen == "",
		// Code archives go through the object store in chunks, but a single
		// invocation record or function spec can still be large.
		MaxPayload: 8 << 20,
	}
	if o.Name != "" {
		opts.ServerName = o.Name
	}
	if o.Listen != "" {
		host, port, err := splitHostPort("nats listen address", o.Listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}
	if o.ClientTLS != nil {
		if o.Listen == "" {
			return nil, errors.New("nats client TLS needs a listen address")
		}
		opts.TLSConfig = o.ClientTLS
		opts.TLS = true
		opts.TLSVerify = o.ClientTLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
	}
	if o.ClientAuth != nil {
		if o.ClientAuth.User == "" || o.ClientAuth.Password == "" {
			return nil, errors.New("nats client credentials need a user and a password")
		}
		opts.Username, opts.Password = o.ClientAuth.User, o.ClientAuth.Password
	}
	if o.Cluster == nil {
		return opts, nil
	}
	c := o.Cluster
	switch {
	case o.Name == "":
		return nil, errors.New("a clustered nats server needs a name, unique in its cluster")
	case c.Name == "":
		return nil, errors.New("a clustered nats server needs a cluster name")
	case o.Listen == "":
		return nil, errors.New("a clustered nats server needs a client listen address")
	case o.DataDir == "":
		return nil, errors.New("a clustered nats server needs a data directory")
	}
	host, port, err := splitHostPort("nats cluster listen address", c.Listen)
	if err != nil {
		return nil, err
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
	if c.TLS != nil {
		opts.Cluster.TLSConfig = c.TLS
		opts.Cluster.TLSTimeout = 5
	}
	for _, r := range c.Routes {
		if r == nil || r.Host == "" {
			return nil, fmt.Errorf("nats route %v: want nats-route://host:port", r)
		}
		r := *r
		if c.Auth != nil && r.User == nil {
			// Routes log in with the credentials in their URL.
			r.User = url.UserPassword(c.Auth.User, c.Auth.Password)
		}
		opts.Routes = append(opts.Routes, &r)
	}
	if c.Auth != nil {
		if c.Auth.User == "" || c.Auth.Password == "" {
			return nil, errors.New("nats route credentials need a user and a password")
		}
		opts.Cluster.Username, opts.Cluster.Password = c.Auth.User, c.Auth.Password
	}
	return opts, nil
}

// Connect opens an in-process client connection.
func (s *Server) Connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(s.ns), nats.Name("baton")}
	if s.auth != nil {
		opts = append(opts, nats.UserInfo(s.auth.User, s.auth.Password))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL network clients connect to ("" without a listener).
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// ClusterAddr is the address this node accepts routes on ("" when it is
// not clustered).
func (s *Server) ClusterAddr() string {
	if a := s.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Status is what a node knows of its cluster at one moment.
type Status struct {
	// Peers are the names of the nodes this one has a route to, sorted.
	Peers []string
	// MetaLeader is the name of the JetStream meta leader; empty while
	// there is none (JetStream cannot create or change anything then).
	MetaLeader string
	// ClusterSize is the number of nodes of the JetStream meta group,
	// online or not (1 when not clustered).
	ClusterSize int
}

// Status reports the node's routes and JetStream's meta group.
func (s *Server) Status() (Status, error) {
	var st Status
	rz, err := s.ns.Routez(&server.RoutezOptions{})
	if err != nil {
		return st, fmt.Errorf("nats routes: %w", err)
	}
	for _, r := range rz.Routes {
		// A route pool opens several connections per peer.
		if r.RemoteName != "" && !slices.Contains(st.Peers, r.RemoteName) {
			st.Peers = append(st.Peers, r.RemoteName)
		}
	}
	slices.Sort(st.Peers)
	jz, err := s.ns.Jsz(&server.JSzOptions{})
	if err != nil {
		return st, fmt.Errorf("nats jetstream status: %w", err)
	}
	st.ClusterSize = 1
	if jz.Meta != nil {
		st.MetaLeader, st.ClusterSize = jz.Meta.Leader, jz.Meta.Size
	} else {
		st.MetaLeader = s.ns.Name()
	}
	return st, nil
}

// Shutdown stops the server and waits for it to flush.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

func splitHostPort(what, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: want host:port", what, addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s %q: bad port", what, addr)
	}
	return host, port, nil
}

// slogLogger adapts slog to nats-server's logger interface.
type slogLogger struct{ l *slog.Logger }

// routeRetry starts nats-server's error for each failed attempt to reach a
// route, once a second per connection of the route pool while a peer is
// down: debug chatter. `baton nats` reports peers that come and go itself.
const routeRetry = "Error trying to connect to route"

func (s slogLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, routeRetry) {
		s.l.Debug(msg)
		return
	}
	s.l.Error(msg)
}
func (s slogLogger) Debugf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogLogger) Tracef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
