package remote

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
)

// confirmingCreds are TLS credentials for a client that learn whether the
// server accepted the client's certificate before the connection is used.
// With TLS 1.3 a server checks that certificate after the client already
// considers the handshake done, so a refusal would otherwise surface as a
// broken pipe on the first write. A gRPC server speaks first (its HTTP/2
// settings), so the client reads the first byte: data means accepted, an
// alert means refused, and it says so.
type confirmingCreds struct {
	credentials.TransportCredentials
}

func (c confirmingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(20 * time.Second)
	}
	var first [1]byte
	_ = conn.SetReadDeadline(deadline)
	n, err := conn.Read(first[:])
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("the worker refused this node after the TLS handshake "+
			"(is its certificate issued by the cluster's CA and still valid?): %w", err)
	}
	return &prefixedConn{Conn: conn, prefix: first[:n]}, info, nil
}

func (c confirmingCreds) Clone() credentials.TransportCredentials {
	return confirmingCreds{c.TransportCredentials.Clone()}
}

// prefixedConn returns prefix before what it reads from Conn.
type prefixedConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixedConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
