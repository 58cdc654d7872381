package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	pb "github.com/baton-faas/baton/internal/workerapi/remote/wirepb"
)

// Pull implements transfer.Source: it streams a buffer the worker keeps.
// A worker that cannot be reached, or whose stream breaks, is a lost
// source (transfer.ErrSourceLost).
func (c *Client) Pull(ctx context.Context, r transfer.Ref, app string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.rpc.Pull(sctx, &pb.PullRequest{Ref: refToWire(&r), App: app})
	if err != nil {
		cancel()
		return nil, c.pullFailed(ctx, r, err)
	}
	// The first message (or the refusal) comes before the caller reads.
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return nil, c.pullFailed(ctx, r, err)
	}
	return &pullStream{c: c, ctx: ctx, r: r, stream: stream, cancel: cancel, buf: first.GetData(), eof: err != nil}, nil
}

func (c *Client) pullFailed(ctx context.Context, r transfer.Ref, err error) error {
	err = c.fail(ctx, "pull "+r.ID, err)
	if errors.Is(err, workerapi.ErrWorkerUnavailable) {
		return fmt.Errorf("buffer %s on worker %s: %w: %w", r.ID, r.Worker, transfer.ErrSourceLost, err)
	}
	return err
}

// pullStream reads a Pull's chunks.
type pullStream struct {
	c      *Client
	ctx    context.Context
	r      transfer.Ref
	stream pb.Worker_PullClient
	cancel context.CancelFunc
	buf    []byte
	eof    bool
}

func (p *pullStream) Read(b []byte) (int, error) {
	for len(p.buf) == 0 {
		if p.eof {
			return 0, io.EOF
		}
		msg, err := p.stream.Recv()
		if errors.Is(err, io.EOF) {
			p.eof = true
			continue
		}
		if err != nil {
			return 0, p.c.pullFailed(p.ctx, p.r, err)
		}
		p.buf = msg.GetData()
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

func (p *pullStream) Close() error {
	p.cancel()
	return nil
}

// Peers pulls buffers from the workers that keep them, over the worker
// API with this node's certificate: a worker's transfer.Source for data
// other workers produced. One client per address, kept until Close.
type Peers struct {
	tls  *tls.Config
	opts ClientOptions

	mu      sync.Mutex // guards clients; a leaf, never held across a call
	clients map[string]*Client
	closed  bool
}

// NewPeers returns a Peers dialing with tlsConf (the node's client TLS).
func NewPeers(tlsConf *tls.Config, opts ClientOptions) *Peers {
	return &Peers{tls: tlsConf, opts: opts, clients: map[string]*Client{}}
}

// Pull implements transfer.Source.
func (p *Peers) Pull(ctx context.Context, r transfer.Ref, app string) (io.ReadCloser, error) {
	if r.Addr == "" {
		return nil, fmt.Errorf("buffer %s on worker %s: no address to pull from: %w", r.ID, r.Worker, transfer.ErrSourceLost)
	}
	c, err := p.client(r.Addr)
	if err != nil {
		return nil, fmt.Errorf("buffer %s on worker %s: %w: %w", r.ID, r.Worker, transfer.ErrSourceLost, err)
	}
	return c.Pull(ctx, r, app)
}

func (p *Peers) client(addr string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("closed")
	}
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	// Dial only builds the client: it connects on first use.
	c, err := Dial(addr, p.tls, p.opts)
	if err != nil {
		return nil, err
	}
	p.clients[addr] = c
	return c, nil
}

// Close closes every client.
func (p *Peers) Close() {
	p.mu.Lock()
	p.closed = true
	cs := p.clients
	p.clients = nil
	p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

var (
	_ transfer.Source = (*Client)(nil)
	_ transfer.Source = (*Peers)(nil)
)
