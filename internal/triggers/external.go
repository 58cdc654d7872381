package triggers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/errdefs"
)

// External is a NATS server (with JetStream) outside Baton that a trigger
// takes messages from. Password and Creds are secrets: they are stored
// with the trigger in Baton's own NATS, so that it survives restarts and
// any controller can fire it, and they are never listed.
//
// By default Baton creates a work-queue stream of its own on that server
// for the subject (BATON_TRIGGER_<id>, deleted with the trigger): messages
// published while Baton is down wait there. With Stream set, the user's
// existing stream is consumed instead, from the messages published after
// the trigger was added, and only Baton's consumer is deleted with it.
type External struct {
	// URL is one or more comma-separated nats:// or tls:// URLs, without
	// credentials (normalize moves them to User and Password).
	URL      string `json:"url"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// Creds is the content of a .creds file: a user JWT and its nkey seed.
	Creds  string `json:"creds,omitempty"`
	Stream string `json:"stream,omitempty"`
}

// Errors of external NATS sources: the request is wrong (400), with what
// and why in the message.
var (
	ErrNATSUnreachable = errdefs.New(errdefs.Invalid, "nats_unreachable", "the trigger's NATS server cannot be reached")
	ErrNATSLogin       = errdefs.New(errdefs.Invalid, "nats_login_refused", "the trigger's NATS server refused the login")
	ErrNATSSource      = errdefs.New(errdefs.Invalid, "nats_source_invalid", "the trigger's NATS server cannot be its source")
)

// Auth says which credentials are stored: "password", "creds" or "none".
func (e *External) Auth() string {
	switch {
	case e.User != "":
		return "password"
	case e.Creds != "":
		return "creds"
	}
	return "none"
}

// servers is the URL list as shown in messages (never with credentials).
func (e *External) servers() string { return e.URL }

// normalize checks the source and moves credentials out of its URLs.
func (e *External) normalize() error {
	var urls []string
	for _, raw := range strings.Split(e.URL, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			// url.Parse's error would repeat the URL, password included.
			return fmt.Errorf("%w: NATS URL %q: want nats://host:port or tls://host:port", ErrInvalid, redactURL(raw))
		}
		if u.User != nil {
			user := u.User.Username()
			pw, ok := u.User.Password()
			if !ok || user == "" {
				return fmt.Errorf("%w: NATS URL %s: give a user and a password (a token alone is not supported)", ErrInvalid, redactURL(raw))
			}
			if (e.User != "" && (e.User != user || e.Password != pw)) || e.Creds != "" {
				return fmt.Errorf("%w: NATS URL %s carries credentials and others are given too: give them once", ErrInvalid, redactURL(raw))
			}
			e.User, e.Password = user, pw
			u.User = nil
		}
		if u.Port() == "" {
			u.Host = net.JoinHostPort(u.Hostname(), "4222") // NATS's port, as nats.go assumes
		}
		u.Path = ""
		urls = append(urls, u.String())
	}
	if len(urls) == 0 {
		return fmt.Errorf("%w: an external NATS server needs a URL (nats://host:port)", ErrInvalid)
	}
	e.URL = strings.Join(urls, ",")
	switch {
	case e.User == "" && e.Password != "":
		return fmt.Errorf("%w: a NATS password needs a user", ErrInvalid)
	case e.User != "" && e.Password == "":
		return fmt.Errorf("%w: NATS user %q needs a password", ErrInvalid, e.User)
	case e.User != "" && e.Creds != "":
		return fmt.Errorf("%w: give a NATS user and password or a .creds file, not both", ErrInvalid)
	case e.Creds != "":
		if _, _, err := parseCreds(e.Creds); err != nil {
			return err
		}
	}
	if e.Stream != "" && !validStreamName(e.Stream) {
		return fmt.Errorf("%w: NATS stream name %q: letters, digits, '-' and '_' only", ErrInvalid, e.Stream)
	}
	return nil
}

func validStreamName(name string) bool {
	if len(name) > 255 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// redactURL hides a URL's password, for messages.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndexByte(raw, '@'); i >= 0 {
		return "***" + raw[i:]
	}
	return raw
}

// credsBlock is one armored block of a .creds file: "-----BEGIN NAME-----",
// the content, "------END NAME------" (dashes vary).
var credsBlock = regexp.MustCompile(`(?m)^[ \t]*-{3,}[ \t]*BEGIN ([A-Z ]+?)[ \t]*-{3,}[ \t]*\r?\n([^-]*?)\r?\n[ \t]*-{3,}[ \t]*END ([A-Z ]+?)[ \t]*-{3,}`)

// parseCreds finds the user JWT and the nkey seed of a .creds file.
func parseCreds(creds string) (jwt, seed string, err error) {
	for _, m := range credsBlock.FindAllStringSubmatch(creds, -1) {
		content := strings.TrimSpace(m[2])
		switch {
		case strings.HasSuffix(m[1], "JWT") && jwt == "":
			jwt = content
		case strings.HasSuffix(m[1], "SEED") && seed == "":
			seed = content
		}
	}
	switch {
	case jwt == "" || seed == "":
		return "", "", fmt.Errorf("%w: the NATS credentials are not a .creds file (a user JWT and an nkey seed, each between BEGIN and END lines)", ErrInvalid)
	case strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \t\r\n"):
		return "", "", fmt.Errorf("%w: the JWT of the NATS .creds file is not a JWT", ErrInvalid)
	case !strings.HasPrefix(seed, "SU") || strings.ContainsAny(seed, " \t\r\n"):
		return "", "", fmt.Errorf("%w: the seed of the NATS .creds file is not a user's nkey seed (SU...)", ErrInvalid)
	}
	return jwt, seed, nil
}

// connectTimeout bounds connecting to one external server.
const connectTimeout = 5 * time.Second

// dial connects to the external server. A kept connection (a forwarder's)
// reconnects for as long as it is open; a check's does not.
func (e *External) dial(ctx context.Context, name string, keep bool, log *slog.Logger) (*nats.Conn, error) {
	timeout := connectTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("%w: connect to NATS at %s: %w", ErrNATSUnreachable, e.servers(), context.DeadlineExceeded)
	}
	opts := []nats.Option{nats.Name(name), nats.Timeout(timeout)}
	if keep {
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("trigger: external NATS connection lost", "connection", name, "servers", e.servers(), "err", err)
				}
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				log.Info("trigger: external NATS connection restored", "connection", name, "server", nc.ConnectedUrlRedacted())
			}))
	} else {
		opts = append(opts, nats.NoReconnect())
	}
	switch e.Auth() {
	case "password":
		opts = append(opts, nats.UserInfo(e.User, e.Password))
	case "creds":
		jwt, seed, err := parseCreds(e.Creds)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserJWTAndSeed(jwt, seed))
	}
	nc, err := nats.Connect(e.URL, opts...)
	if err != nil {
		return nil, e.connectError(err)
	}
	return nc, nil
}

// connectError says why a connection failed, in terms of what to fix.
func (e *External) connectError(err error) error {
	var (
		verify  *tls.CertificateVerificationError
		invalid x509.CertificateInvalidError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		switch e.Auth() {
		case "password":
			return fmt.Errorf("%w: %s does not accept user %q with that password (%v)", ErrNATSLogin, e.servers(), e.User, err)
		case "creds":
			return fmt.Errorf("%w: %s does not accept the .creds file's user (%v)", ErrNATSLogin, e.servers(), err)
		}
		return fmt.Errorf("%w: %s requires a login and none was given: add a user and password or a .creds file (%v)", ErrNATSLogin, e.servers(), err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("%w: %s requires TLS: use a tls:// URL (%v)", ErrNATSSource, e.servers(), err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("%w: %s does not offer TLS, which a tls:// URL requires (%v)", ErrNATSSource, e.servers(), err)
	case errors.As(err, &verify), errors.As(err, &invalid), errors.As(err, &unknown), errors.As(err, &host):
		return fmt.Errorf("%w: %s: its TLS certificate is not trusted by this host (%v)", ErrNATSSource, e.servers(), err)
	}
	if errors.Is(err, nats.ErrNoServers) {
		// nats.go says only that no server answered; the first one's dial
		// error says why (refused, no route, timeout).
		if u, perr := url.Parse(strings.Split(e.URL, ",")[0]); perr == nil {
			if c, derr := net.DialTimeout("tcp", u.Host, connectTimeout); derr != nil {
				err = derr
			} else {
				c.Close()
			}
		}
		return fmt.Errorf("%w: %s: %v (is it running, and reachable from the Baton server?)", ErrNATSUnreachable, e.servers(), err)
	}
	return fmt.Errorf("%w: %s: %v", ErrNATSUnreachable, e.servers(), err)
}

// jetStreamError says what a JetStream request of the external server's
// failure means.
func (e *External) jetStreamError(what string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("%w: %s has no JetStream for this user's account; a trigger keeps messages in a stream there until they became invocations (%v)",
			ErrNATSSource, e.servers(), err)
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %s: %s: no answer from JetStream (%v)", ErrNATSUnreachable, e.servers(), what, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("%w: %s: %s: %s", ErrNATSSource, e.servers(), what, apiErr.Description)
	}
	return fmt.Errorf("%s: %s: %w", e.servers(), what, err)
}

// openSource makes or finds the trigger's stream on js and its durable
// consumer.
func (s *Store) openSource(ctx context.Context, js jetstream.JetStream, t Trigger) (jetstream.Stream, jetstream.Consumer, error) {
	var stream jetstream.Stream
	var err error
	switch {
	case t.NATS == nil || t.NATS.Stream == "":
		if stream, err = s.ensureStream(ctx, js, t); err != nil {
			if t.NATS != nil && !errors.Is(err, ErrConflict) {
				err = t.NATS.jetStreamError("create stream "+t.Stream(), err)
			}
			return nil, nil, err
		}
	default:
		stream, err = js.Stream(ctx, t.NATS.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, nil, fmt.Errorf("%w: %s has no stream %q", ErrNATSSource, t.NATS.servers(), t.NATS.Stream)
		}
		if err != nil {
			return nil, nil, t.NATS.jetStreamError("stream "+t.NATS.Stream, err)
		}
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, t.consumerConfig())
	if err != nil {
		if t.NATS != nil {
			return nil, nil, t.NATS.jetStreamError(fmt.Sprintf("consumer %s of stream %s for subject %s", t.Consumer(), t.Stream(), t.NATSSubject), err)
		}
		return nil, nil, err
	}
	return stream, cons, nil
}

// consumerConfig is the trigger's durable consumer: explicit acks (an
// event is acknowledged once Baton's queue stored it), redelivered until
// then.
func (t Trigger) consumerConfig() jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable: t.Consumer(), AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		Description: "Baton trigger " + t.ID + " of function " + t.Function,
	}
	if t.NATS != nil && t.NATS.Stream != "" {
		// The user's stream may hold more subjects and older messages:
		// this trigger's subject, from now on.
		c.FilterSubject = t.NATSSubject
		c.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	return c
}

// prepareExternal checks an external source at Add: it connects with the
// credentials, makes sure JetStream is there, and creates the stream (or
// finds the user's) and the durable consumer. undo removes what it made.
func (s *Store) prepareExternal(ctx context.Context, t Trigger) (undo func(), err error) {
	nc, err := t.NATS.dial(ctx, "baton trigger "+t.ID, false, s.log)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return nil, t.NATS.jetStreamError("account info", err)
	}
	if _, _, err := s.openSource(ctx, js, t); err != nil {
		if t.NATS.Stream == "" {
			// The stream may have been made before the consumer failed;
			// its name is this new trigger's, so nobody else's goes.
			s.deleteStream(js, t)
		}
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		s.cleanupExternal(ctx, t)
	}, nil
}

// cleanupExternal removes what a removed trigger made on its external
// server: Baton's stream, or its consumer of the user's stream. An
// unreachable server keeps them; the log says what is left.
func (s *Store) cleanupExternal(ctx context.Context, t Trigger) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	left := func(err error) {
		s.log.Warn("trigger removed; what it made on its NATS server stays", "trigger", t.ID, "servers", t.NATS.servers(),
			"stream", t.Stream(), "consumer", t.Consumer(), "streamOwned", t.NATS.Stream == "", "err", err)
	}
	nc, err := t.NATS.dial(ctx, "baton trigger "+t.ID+" removal", false, s.log)
	if err != nil {
		left(err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		left(err)
		return
	}
	if t.NATS.Stream == "" {
		err = js.DeleteStream(ctx, t.Stream())
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = nil
		}
	} else {
		err = js.DeleteConsumer(ctx, t.Stream(), t.Consumer())
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			err = nil
		}
	}
	if err != nil {
		left(err)
	}
}
