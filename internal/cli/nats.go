package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/baton-faas/baton/internal/store/natsd"
)

// natsPasswordEnv holds the password of --user.
const natsPasswordEnv = natsd.PasswordEnv

type natsFlags struct {
	name, listen, clusterListen, routes, clusterName, dataDir string
	tlsCert, tlsKey, tlsCA, user, logLevel                    string
	insecure                                                  bool
}

func newNATSCmd() *cobra.Command {
	var fl natsFlags
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "Run one node of a NATS JetStream cluster (Baton's durable state for controllers and workers)",
		Long: `Run one node of a NATS JetStream cluster with the nats-server built into baton.

Start one node per host with the same --cluster-name and --routes (the routes may
list every node, this one included). Three nodes keep every bucket and stream
in three copies and survive the loss of any one node. Controllers and workers
connect to the nodes' --listen addresses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(fl.logLevel)
			if err != nil {
				return err
			}
			opts, err := fl.options()
			if err != nil {
				return err
			}
			if err := os.MkdirAll(fl.dataDir, 0o700); err != nil {
				return fmt.Errorf("--data-dir: %w", err)
			}
			unlock, err := lockNATSDir(fl.dataDir)
			if err != nil {
				return err
			}
			defer unlock()
			opts.Logger = log
			if opts.ClientTLS == nil && opts.ClientAuth == nil && (!isLoopback(fl.listen) || !isLoopback(fl.clusterListen)) {
				log.Warn("NATS without TLS or login is reachable from other hosts (--insecure): anyone who can connect can read and change all state")
			}
			return runNATS(cmd, opts, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.name, "name", "", "this node's name, unique in the cluster (required)")
	f.StringVar(&fl.listen, "listen", "127.0.0.1:4222", "host:port for NATS clients (controllers, workers)")
	f.StringVar(&fl.clusterListen, "cluster-listen", "127.0.0.1:6222", "host:port for routes from the other nodes")
	f.StringVar(&fl.routes, "routes", "", "comma-separated route URLs of the nodes (nats-route://host:port), this one may be among them")
	f.StringVar(&fl.clusterName, "cluster-name", "baton", "name of the cluster, the same on every node")
	f.StringVar(&fl.dataDir, "data-dir", "", "directory for this node's JetStream data (required)")
	f.StringVar(&fl.tlsCert, "tls-cert", "", "PEM certificate of this node, for clients and routes (with --tls-key and --tls-ca: mutual TLS)")
	f.StringVar(&fl.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&fl.tlsCA, "tls-ca", "", "PEM CA certificate(s) that clients' and peers' certificates must be signed by")
	f.StringVar(&fl.user, "user", "", "require clients and peers to log in as this user, with the password in "+natsPasswordEnv)
	f.BoolVar(&fl.insecure, "insecure", false, "allow listening beyond loopback without TLS or --user (anyone who can connect can read and change all state)")
	f.StringVar(&fl.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// options checks the flags and turns them into the server's options; every
// error names the flag at fault.
func (fl natsFlags) options() (natsd.Options, error) {
	var o natsd.Options
	if err := checkNodeName(fl.name); err != nil {
		return o, err
	}
	if strings.TrimSpace(fl.dataDir) == "" {
		return o, errors.New("--data-dir is required: the directory for this node's JetStream data")
	}
	if strings.TrimSpace(fl.clusterName) == "" || strings.ContainsAny(fl.clusterName, " \t") {
		return o, fmt.Errorf("--cluster-name %q: want a name without spaces", fl.clusterName)
	}
	listeners := [][2]string{{"--listen", fl.listen}, {"--cluster-listen", fl.clusterListen}}
	for _, l := range listeners {
		if err := checkListenAddr(l[1]); err != nil {
			return o, fmt.Errorf("%s %q: %w", l[0], l[1], err)
		}
	}
	routes, err := parseRoutes(fl.routes)
	if err != nil {
		return o, err
	}
	tlsConf, err := fl.tlsConfig()
	if err != nil {
		return o, err
	}
	var auth *natsd.Credentials
	if fl.user != "" {
		pw := os.Getenv(natsPasswordEnv)
		if pw == "" {
			return o, fmt.Errorf("--user %q needs a password in the environment variable %s", fl.user, natsPasswordEnv)
		}
		auth = &natsd.Credentials{User: fl.user, Password: pw}
	}
	if tlsConf == nil && auth == nil && !fl.insecure {
		for _, l := range listeners {
			if !isLoopback(l[1]) {
				return o, fmt.Errorf("%s %s is reachable from other hosts: secure it with --tls-cert/--tls-key/--tls-ca or --user, or accept the risk with --insecure", l[0], l[1])
			}
		}
	}
	return natsd.Options{
		DataDir: fl.dataDir, Listen: fl.listen, Name: fl.name,
		ClientTLS: tlsConf, ClientAuth: auth,
		Cluster: &natsd.ClusterOptions{
			Name: fl.clusterName, Listen: fl.clusterListen, Routes: routes, TLS: tlsConf, Auth: auth,
		},
	}, nil
}

func checkNodeName(name string) error {
	if name == "" {
		return errors.New("--name is required: this node's name, unique in the cluster")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("--name %q: use letters, digits, '-', '_' and '.' only", name)
		}
	}
	return nil
}

func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if p, err := net.LookupPort("tcp", port); err != nil || p == 0 {
		return errors.New("want a port number from 1 to 65535")
	}
	return nil
}

// isLoopback reports whether a listen address is reachable from this
// host only.
func isLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseRoutes(list string) ([]*url.URL, error) {
	var routes []*url.URL
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "nats-route" || u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("--routes: %q is not a route URL: want nats-route://host:port", s)
		}
		routes = append(routes, u)
	}
	return routes, nil
}

// tlsConfig builds mutual TLS for clients and routes from the PEM files:
// this node's certificate serves both and is also its client certificate
// on routes it opens, and every peer or client must show one signed by
// the CA.
func (fl natsFlags) tlsConfig() (*tls.Config, error) {
	given := map[string]string{"--tls-cert": fl.tlsCert, "--tls-key": fl.tlsKey, "--tls-ca": fl.tlsCA}
	var missing []string
	for flag, v := range given {
		if v == "" {
			missing = append(missing, flag)
		}
	}
	if len(missing) == 3 {
		return nil, nil
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("TLS needs --tls-cert, --tls-key and --tls-ca together; missing %s", strings.Join(missing, ", "))
	}
	cert, err := tls.LoadX509KeyPair(fl.tlsCert, fl.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	pem, err := os.ReadFile(fl.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", fl.tlsCA)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// lockNATSDir keeps a second node off the same JetStream directory, which
// nats-server does not do itself.
func lockNATSDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "nats.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("--data-dir %s is in use by another baton nats: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// runNATS runs the node until the command's context ends (SIGINT,
// SIGTERM), logging when it is ready and when its peers and JetStream
// leader change.
func runNATS(cmd *cobra.Command, opts natsd.Options, log *slog.Logger) error {
	ctx := cmd.Context()
	ns, err := natsd.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		log.Info("nats node stopping", "name", opts.Name)
		ns.Shutdown()
		log.Info("nats node stopped", "name", opts.Name)
	}()
	log.Info("nats node ready", "name", opts.Name, "cluster", opts.Cluster.Name,
		"clients", ns.ClientURL(), "routes", ns.ClusterAddr(), "routes_configured", len(opts.Cluster.Routes))
	var last natsd.Status
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if st, err := ns.Status(); err != nil {
			log.Warn("nats status", "err", err)
		} else {
			logStatusChange(log, last, st)
			last = st
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func logStatusChange(log *slog.Logger, prev, cur natsd.Status) {
	for _, p := range cur.Peers {
		if !slices.Contains(prev.Peers, p) {
			log.Info("nats peer connected", "peer", p, "peers", cur.Peers)
		}
	}
	for _, p := range prev.Peers {
		if !slices.Contains(cur.Peers, p) {
			log.Warn("nats peer disconnected", "peer", p, "peers", cur.Peers)
		}
	}
	switch {
	case cur.MetaLeader == prev.MetaLeader:
	case cur.MetaLeader == "":
		log.Warn("JetStream has no meta leader: buckets and streams cannot be created or changed until a majority of nodes is up",
			"cluster_size", cur.ClusterSize)
	case prev.MetaLeader == "":
		log.Info("JetStream ready", "leader", cur.MetaLeader, "cluster_size", cur.ClusterSize)
	default:
		log.Info("JetStream leader changed", "leader", cur.MetaLeader, "cluster_size", cur.ClusterSize)
	}
}
