package natsd_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/store/natsd/natsdtest"
)

// Dial tells apart the refusals no retry can cure (login, certificates,
// TLS) and returns them at once, saying what was refused.
func TestDialRefusals(t *testing.T) {
	ca, other := natsdtest.NewCA(t), natsdtest.NewCA(t)
	auth := &natsd.Credentials{User: "baton", Password: "s3cret"}
	ports := natsdtest.FreePorts(t, 2)
	secured, err := natsd.Start(context.Background(), natsd.Options{
		DataDir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(ports[0]), ClientTLS: ca.Config(), ClientAuth: auth,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer secured.Shutdown()
	plain, err := natsd.Start(context.Background(), natsd.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(ports[1])})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	securedURL, plainURL := "nats://127.0.0.1:"+strconv.Itoa(ports[0]), "nats://127.0.0.1:"+strconv.Itoa(ports[1])
	tlsURL := func(u string) string { return "tls://" + strings.TrimPrefix(u, "nats://") }

	// trust is a client's configuration: the servers it trusts and the
	// certificate it presents.
	trust := func(roots, cert *natsdtest.CA) *tls.Config {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if roots != nil {
			c.RootCAs = roots.Pool
		}
		if cert != nil {
			c.Certificates = []tls.Certificate{cert.Cert}
		}
		return c
	}
	cases := []struct {
		name   string
		url    string
		opts   natsd.DialOptions
		reason natsd.Refusal // 0: connects
		says   string
	}{
		{"mutual TLS and login", securedURL, natsd.DialOptions{TLS: trust(ca, ca), Auth: auth}, 0, ""},
		{"tls:// URL", tlsURL(securedURL), natsd.DialOptions{TLS: trust(ca, ca), Auth: auth}, 0, ""},
		{"wrong password", securedURL, natsd.DialOptions{TLS: trust(ca, ca), Auth: &natsd.Credentials{User: "baton", Password: "wrong"}},
			natsd.LoginRefused, `refused the login of user "baton"`},
		{"no login", securedURL, natsd.DialOptions{TLS: trust(ca, ca)}, natsd.LoginRefused, "requires a login"},
		{"no TLS configuration", securedURL, natsd.DialOptions{Auth: auth}, natsd.ServerUntrusted, "not signed"},
		{"server of another CA", securedURL, natsd.DialOptions{TLS: trust(other, ca), Auth: auth}, natsd.ServerUntrusted, "not signed"},
		{"no client certificate", securedURL, natsd.DialOptions{TLS: trust(ca, nil), Auth: auth}, natsd.ClientCertRefused, "certificate"},
		{"client of another CA", securedURL, natsd.DialOptions{TLS: trust(ca, other), Auth: auth}, natsd.ClientCertRefused, "certificate"},
		{"nats:// to a server without TLS", plainURL, natsd.DialOptions{TLS: trust(ca, ca)}, 0, ""},
		{"tls:// to a server without TLS", tlsURL(plainURL), natsd.DialOptions{TLS: trust(ca, ca)}, natsd.TLSUnavailable, "does not offer TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A refusal is final (with TLS 1.3 the server may hang up
			// before its alert about a client certificate is read, and
			// Dial takes three such hang-ups for a refusal): Dial returns it long before this ends.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			nc, err := natsd.Dial(ctx, []string{tc.url}, tc.opts)
			if tc.reason == 0 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected; want a refusal")
			}
			var refused *natsd.RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("dial: %v; want a refusal (waited until the context ended: %v)", err, ctx.Err())
			}
			if refused.Reason != tc.reason || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "NATS at "+tc.url) {
				t.Fatalf("dial: %v (reason %d); want reason %d naming the server and saying %q", err, refused.Reason, tc.reason, tc.says)
			}
		})
	}
}
