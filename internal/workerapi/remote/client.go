// Package remote is the worker API (workerapi.Worker) across a network:
// a Server exposes a worker (the node) over gRPC with mutual TLS, and a
// Client is a workerapi.Worker that calls it, so that a controller drives
// workers on other hosts exactly as it drives the node in its own process.
//
// Errors keep their class and code, the workerapi sentinels and the
// *workerapi.Failure and *workerapi.InitError they carry (errors.go); a
// call that fails on the way (refused, reset, no answer in time) is an
// error wrapping workerapi.ErrWorkerUnavailable, and for Invoke also a
// *workerapi.Failure saying whether the event may have reached the worker.
// Code is not part of the transport: a worker fetches it by digest from
// the cluster's object store itself.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/baton-faas/baton/internal/workerapi"
	pb "github.com/baton-faas/baton/internal/workerapi/remote/wirepb"
)

// ImportChunkBytes is the size of the archive chunks ImportImage sends:
// one chunk (and gRPC's flow-control window) in memory at a time.
const ImportChunkBytes = 256 << 10

// ClientOptions configure a Client. The zero value is usable.
type ClientOptions struct {
	Logger *slog.Logger
	// AnswerGrace is how long past the caller's deadline Invoke waits for
	// the worker's answer (default 5s): the worker enforces the deadline
	// and answers with a timeout failure, which should win over a lost
	// answer.
	AnswerGrace time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// client probes it (default and gRPC's floor: 10s); without an answer
	// within KeepaliveTimeout (default 5s) the connection is lost and its
	// calls and event streams fail. Losing a worker is for the cluster's
	// membership to notice sooner; this only ends what would hang.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// ReconnectMax bounds the wait between attempts to reconnect to a
	// worker that went away (default 5s).
	ReconnectMax time.Duration
	// MaxMessageBytes bounds a message received or sent (default
	// DefaultMaxMessageBytes).
	MaxMessageBytes int
}

// Client is a workerapi.Worker on another host. It connects lazily and
// reconnects by itself; calls made while the worker cannot be reached fail
// at once with ErrWorkerUnavailable. It is safe for concurrent use.
type Client struct {
	target string
	opts   ClientOptions
	log    *slog.Logger
	conn   *grpc.ClientConn
	rpc    pb.WorkerClient

	// closed ends the event streams' goroutines (wg) on Close.
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ workerapi.Worker = (*Client)(nil)

// Dial returns a client of the worker at target ("host:port", the
// worker's advertised address, which its certificate must name). tlsConf
// is the client's mutual-TLS configuration (clusterpki.Identity.ClientTLS).
// No connection is made until the first call.
func Dial(target string, tlsConf *tls.Config, opts ClientOptions) (*Client, error) {
	if tlsConf == nil {
		return nil, fmt.Errorf("worker API client for %s: a TLS configuration is required", target)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AnswerGrace <= 0 {
		opts.AnswerGrace = 5 * time.Second
	}
	if opts.KeepaliveTime <= 0 {
		opts.KeepaliveTime = 10 * time.Second
	}
	if opts.KeepaliveTimeout <= 0 {
		opts.KeepaliveTimeout = 5 * time.Second
	}
	if opts.ReconnectMax <= 0 {
		opts.ReconnectMax = 5 * time.Second
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(confirmingCreds{credentials.NewTLS(tlsConf.Clone())}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessageBytes), grpc.MaxCallSendMsgSize(opts.MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: opts.KeepaliveTime, Timeout: opts.KeepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: opts.ReconnectMax},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("worker API client for %s: %w", target, err)
	}
	return &Client{target: target, opts: opts, log: opts.Logger.With("worker", target), conn: conn,
		rpc: pb.NewWorkerClient(conn), closed: make(chan struct{})}, nil
}

// Target is the address the client dials.
func (c *Client) Target() string { return c.target }

// Close closes the connection and ends the event streams.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.conn.Close()
		c.wg.Wait()
	})
	return err
}

// fail is the error of a failed call other than Invoke.
func (c *Client) fail(ctx context.Context, op string, err error) error {
	return c.fromStatus(ctx, call{op: op}, err)
}

// Info implements workerapi.Worker.
func (c *Client) Info(ctx context.Context) (workerapi.Info, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Info{}, err
	}
	out, err := c.rpc.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return workerapi.Info{}, c.fail(ctx, "info", err)
	}
	return infoFromWire(out), nil
}

// StartInstance implements workerapi.Worker.
func (c *Client) StartInstance(ctx context.Context, spec workerapi.InstanceSpec) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, err
	}
	out, err := c.rpc.StartInstance(ctx, instanceSpecToWire(spec))
	if err != nil {
		return workerapi.Instance{}, c.fail(ctx, "start instance", err)
	}
	return instanceFromWire(out), nil
}

// WaitInstance implements workerapi.Worker.
func (c *Client) WaitInstance(ctx context.Context, id string) (workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Instance{}, err
	}
	out, err := c.rpc.WaitInstance(ctx, &pb.InstanceRef{Id: id})
	if err != nil {
		return workerapi.Instance{}, c.fail(ctx, "wait for instance "+id, err)
	}
	return instanceFromWire(out), nil
}

// StopInstance implements workerapi.Worker.
func (c *Client) StopInstance(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := c.rpc.StopInstance(ctx, &pb.InstanceRef{Id: id}); err != nil {
		return c.fail(ctx, "stop instance "+id, err)
	}
	return nil
}

// Instances implements workerapi.Worker.
func (c *Client) Instances(ctx context.Context) ([]workerapi.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out, err := c.rpc.Instances(ctx, &pb.InstancesRequest{})
	if err != nil {
		return nil, c.fail(ctx, "list instances", err)
	}
	list := make([]workerapi.Instance, 0, len(out.GetInstances()))
	for _, in := range out.GetInstances() {
		list = append(list, instanceFromWire(in))
	}
	return list, nil
}

// Invoke implements workerapi.Worker. The caller's deadline goes to the
// worker, which enforces it (and inv.Deadline); the client itself waits
// AnswerGrace longer for the answer, so that a timeout arrives as the
// worker's *Failure rather than as a lost call. Cancelling ctx cancels
// the call at once.
func (c *Client) Invoke(ctx context.Context, id string, inv workerapi.Invocation) (workerapi.Result, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Result{}, err
	}
	req := invocationToWire(id, inv)
	rctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		req.CallTimeoutNs = max(int64(time.Until(dl)), 1)
		var cancel context.CancelFunc
		rctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), dl.Add(c.opts.AnswerGrace))
		defer cancel()
		stop := context.AfterFunc(ctx, func() {
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				cancel()
			}
		})
		defer stop()
	}
	var p peer.Peer
	out, err := c.rpc.Invoke(rctx, req, grpc.Peer(&p))
	if err != nil {
		var res workerapi.Result
		if st, ok := status.FromError(err); ok {
			for _, d := range st.Details() {
				if detail, ok := d.(*pb.Error); ok && detail.GetResult() != nil {
					res = resultFromWire(detail.GetResult())
				}
			}
		}
		// The call got as far as a connection to the worker exactly when
		// gRPC knows the connection's peer.
		return res, c.fromStatus(ctx, call{op: "invoke instance " + id, invoke: true, sent: p.Addr != nil}, err)
	}
	return resultFromWire(out), nil
}

// Events implements workerapi.Worker. The stream is open when Events
// returns (a refusal is its error); the channel closes when ctx ends, the
// worker ends the stream or the connection breaks: the caller resumes with
// Events(ctx, last Seq seen).
func (c *Client) Events(ctx context.Context, after uint64) (<-chan workerapi.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.rpc.Events(sctx, &pb.EventsRequest{After: after})
	if err != nil {
		cancel()
		return nil, c.fail(ctx, "events", err)
	}
	if md, _ := stream.Header(); len(md.Get(headerStreamOpen)) == 0 {
		// The stream ended before it opened: its status says why.
		_, err := stream.Recv()
		cancel()
		if err == nil || errors.Is(err, io.EOF) {
			err = status.Error(codes.Internal, "the event stream ended before it opened")
		}
		return nil, c.fail(ctx, "events", err)
	}
	ch := make(chan workerapi.Event)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(ch)
		defer cancel()
		for {
			ev, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					c.log.Debug("worker event stream broke", "err", err)
				}
				return
			}
			select {
			case ch <- eventFromWire(ev):
			case <-ctx.Done():
				return
			case <-c.closed:
				return
			}
		}
	}()
	return ch, nil
}

// Images implements workerapi.Worker.
func (c *Client) Images(ctx context.Context) ([]workerapi.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out, err := c.rpc.Images(ctx, &pb.ImagesRequest{})
	if err != nil {
		return nil, c.fail(ctx, "list images", err)
	}
	list := make([]workerapi.Image, 0, len(out.GetImages()))
	for _, img := range out.GetImages() {
		list = append(list, imageFromWire(img))
	}
	return list, nil
}

// CheckImage implements workerapi.Worker.
func (c *Client) CheckImage(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := c.rpc.CheckImage(ctx, &pb.ImageRef{Name: name}); err != nil {
		return c.fail(ctx, "check image "+name, err)
	}
	return nil
}

// ImportImage implements workerapi.Worker: the archive goes to the worker
// in chunks of ImportChunkBytes as it is read, at the pace the worker
// stores it.
func (c *Client) ImportImage(ctx context.Context, name string, archive io.Reader) (workerapi.Image, error) {
	if err := ctx.Err(); err != nil {
		return workerapi.Image{}, err
	}
	op := "import image " + name
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.ImportImage(sctx)
	if err != nil {
		return workerapi.Image{}, c.fail(ctx, op, err)
	}
	// ended is the outcome once Send failed: io.EOF means the worker
	// ended the call (an error, most likely) and its status is the answer.
	ended := func(err error) (workerapi.Image, error) {
		if errors.Is(err, io.EOF) {
			_, err = stream.CloseAndRecv()
		}
		return workerapi.Image{}, c.fail(ctx, op, err)
	}
	if err := stream.Send(&pb.ImportChunk{Name: name}); err != nil {
		return ended(err)
	}
	for {
		// A fresh buffer per chunk: gRPC may hold a sent message.
		buf := make([]byte, ImportChunkBytes)
		// What one Read gives is sent at once: an archive that arrives
		// slowly is not held back.
		n, rerr := archive.Read(buf)
		if n > 0 {
			if err := stream.Send(&pb.ImportChunk{Data: buf[:n]}); err != nil {
				return ended(err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			// cancel (deferred) aborts the call: the worker stores nothing.
			return workerapi.Image{}, fmt.Errorf("%s: read archive: %w", op, rerr)
		}
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return workerapi.Image{}, c.fail(ctx, op, err)
	}
	return imageFromWire(out), nil
}

// RemoveImage implements workerapi.Worker.
func (c *Client) RemoveImage(ctx context.Context, name string, inUse []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := c.rpc.RemoveImage(ctx, &pb.RemoveImageRequest{Name: name, InUse: inUse}); err != nil {
		return c.fail(ctx, "remove image "+name, err)
	}
	return nil
}
