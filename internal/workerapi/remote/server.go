package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	pb "github.com/baton-faas/baton/internal/workerapi/remote/wirepb"
)

// ErrBadRequest: a call whose message is malformed (a client of another
// version, or not Baton's).
var ErrBadRequest = errdefs.New(errdefs.Invalid, "bad_worker_request", "malformed worker API request")

// DefaultMaxMessageBytes bounds one message either way: an invocation's
// payload or result with its logs (the API and the node cap both at
// 32 MiB by default) fits.
const DefaultMaxMessageBytes = 64 << 20

// headerStreamOpen is the header an Events stream sends once it is open.
const headerStreamOpen = "baton-events-open"

// ServerOptions configure a Server.
type ServerOptions struct {
	Logger *slog.Logger
	// ClientRoles are the roles whose certificates may call the worker
	// API (default: controllers only).
	ClientRoles []clusterpki.Role
	// MaxMessageBytes bounds a message received or sent (default
	// DefaultMaxMessageBytes).
	MaxMessageBytes int
}

// Server serves a workerapi.Worker (in practice the node) to controllers
// on other hosts, over gRPC with mutual TLS. Every call must come with a
// certificate of the cluster's CA whose role ServerOptions allows.
type Server struct {
	w    workerapi.Worker
	log  *slog.Logger
	opts ServerOptions
	rpc  *grpc.Server
	// stopping is cancelled by Stop: it ends event streams and waits, which
	// would otherwise hold a graceful stop forever.
	stopping context.Context
	stop     context.CancelFunc
}

// NewServer returns a server of w. tlsConf must require and verify client
// certificates (clusterpki.Identity.ServerTLS does): a server that would
// accept unauthenticated calls is refused.
func NewServer(w workerapi.Worker, tlsConf *tls.Config, opts ServerOptions) (*Server, error) {
	if tlsConf == nil || tlsConf.ClientAuth != tls.RequireAndVerifyClientCert || tlsConf.ClientCAs == nil {
		return nil, errors.New("worker API server: the TLS configuration must require client certificates of the cluster's CA")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.ClientRoles) == 0 {
		opts.ClientRoles = []clusterpki.Role{clusterpki.Controller}
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	s := &Server{w: w, log: opts.Logger, opts: opts}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.rpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf.Clone())),
		grpc.MaxRecvMsgSize(opts.MaxMessageBytes),
		grpc.MaxSendMsgSize(opts.MaxMessageBytes),
		// Controllers probe idle connections to notice a dead host; let
		// them, but not more often than this.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.ChainUnaryInterceptor(s.authorizeUnary),
		grpc.ChainStreamInterceptor(s.authorizeStream),
	)
	pb.RegisterWorkerServer(s.rpc, handlers{s: s})
	return s, nil
}

// Serve accepts connections on lis until Stop; it returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.rpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("worker API server: %w", err)
	}
	return nil
}

// Stop stops accepting calls, ends event streams and waits, lets the
// calls in flight (invocations) finish until ctx ends, then closes every
// connection.
func (s *Server) Stop(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() {
		s.rpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.rpc.Stop()
		<-done
		return fmt.Errorf("worker API server: calls still running were cut off: %w", ctx.Err())
	}
}

// authorize admits a call from a node of the cluster with an allowed role.
func (s *Server) authorize(ctx context.Context, method string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return toStatus(fmt.Errorf("%s: %w", method, clusterpki.ErrUnauthenticated))
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return toStatus(fmt.Errorf("%s: %w: not a TLS connection", method, clusterpki.ErrUnauthenticated))
	}
	id, role, err := clusterpki.PeerNode(info.State)
	if err != nil {
		return toStatus(fmt.Errorf("%s: %w", method, err))
	}
	// Workers pull transferred data from each other (package transfer).
	pullByWorker := method == pb.Worker_Pull_FullMethodName && role == clusterpki.Worker
	if !slices.Contains(s.opts.ClientRoles, role) && !pullByWorker {
		s.log.Warn("worker API call refused", "node", id, "role", role, "method", method, "remote", p.Addr)
		return toStatus(fmt.Errorf("%s: node %s (%s): %w", method, id, role, ErrPermissionDenied))
	}
	return nil
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// untilStop is ctx, also cancelled when the server stops; for calls that
// wait without bound (WaitInstance, Events).
func (s *Server) untilStop(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	unlink := context.AfterFunc(s.stopping, cancel)
	return ctx, func() {
		unlink()
		cancel()
	}
}

// handlers implements the generated service on the worker.
type handlers struct {
	pb.UnimplementedWorkerServer
	s *Server
}

var _ pb.WorkerServer = handlers{}

// result returns out, or err as a status.
func result[T any](out T, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, toStatus(err)
	}
	return out, nil
}

func (h handlers) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.WorkerInfo, error) {
	info, err := h.s.w.Info(ctx)
	return result(infoToWire(info), err)
}

func (h handlers) StartInstance(ctx context.Context, spec *pb.InstanceSpec) (*pb.Instance, error) {
	if spec.GetSpec() == nil {
		return nil, toStatus(fmt.Errorf("start instance: %w: no function spec", ErrBadRequest))
	}
	in, err := h.s.w.StartInstance(ctx, instanceSpecFromWire(spec))
	return result(instanceToWire(in), err)
}

func (h handlers) WaitInstance(ctx context.Context, ref *pb.InstanceRef) (*pb.Instance, error) {
	ctx, cancel := h.s.untilStop(ctx)
	defer cancel()
	in, err := h.s.w.WaitInstance(ctx, ref.GetId())
	if err != nil && h.s.stopping.Err() != nil && errors.Is(err, context.Canceled) {
		err = fmt.Errorf("wait for instance %s: the worker API server is stopping: %w", ref.GetId(), workerapi.ErrWorkerUnavailable)
	}
	return result(instanceToWire(in), err)
}

func (h handlers) StopInstance(ctx context.Context, ref *pb.InstanceRef) (*pb.Empty, error) {
	return result(&pb.Empty{}, h.s.w.StopInstance(ctx, ref.GetId()))
}

func (h handlers) Instances(ctx context.Context, _ *pb.InstancesRequest) (*pb.InstanceList, error) {
	list, err := h.s.w.Instances(ctx)
	out := &pb.InstanceList{Instances: make([]*pb.Instance, 0, len(list))}
	for _, in := range list {
		out.Instances = append(out.Instances, instanceToWire(in))
	}
	return result(out, err)
}

func (h handlers) Invoke(ctx context.Context, req *pb.InvokeRequest) (*pb.InvokeReply, error) {
	if d := req.GetCallTimeoutNs(); d > 0 {
		// The client's own deadline; gRPC's is later, so that this
		// call's answer (a timeout, say) still reaches the client.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(d))
		defer cancel()
	}
	res, err := h.s.w.Invoke(ctx, req.GetInstanceId(), invocationFromWire(req))
	if err != nil {
		// A failed invocation still says how long it ran.
		detail := errorDetail(err)
		detail.Result = resultToWire(res)
		return nil, statusOf(detail, err)
	}
	return resultToWire(res), nil
}

func (h handlers) Events(req *pb.EventsRequest, stream pb.Worker_EventsServer) error {
	ctx, cancel := h.s.untilStop(stream.Context())
	defer cancel()
	ch, err := h.s.w.Events(ctx, req.GetAfter())
	if err != nil {
		return toStatus(err)
	}
	if err := stream.SendHeader(metadata.Pairs(headerStreamOpen, "1")); err != nil {
		return err
	}
	for ev := range ch {
		if err := stream.Send(eventToWire(ev)); err != nil {
			return err
		}
	}
	if err := stream.Context().Err(); err != nil {
		return toStatus(err)
	}
	// The worker closed its log or the server stops: the stream ends
	// cleanly and the caller resumes after the last Seq it saw.
	return nil
}

func (h handlers) Images(ctx context.Context, _ *pb.ImagesRequest) (*pb.ImageList, error) {
	list, err := h.s.w.Images(ctx)
	out := &pb.ImageList{Images: make([]*pb.Image, 0, len(list))}
	for _, img := range list {
		out.Images = append(out.Images, imageToWire(img))
	}
	return result(out, err)
}

func (h handlers) CheckImage(ctx context.Context, ref *pb.ImageRef) (*pb.Empty, error) {
	return result(&pb.Empty{}, h.s.w.CheckImage(ctx, ref.GetName()))
}

// PullChunkBytes is the size of a Pull's chunks.
const PullChunkBytes = 1 << 20

func (h handlers) Pull(req *pb.PullRequest, stream pb.Worker_PullServer) error {
	src, ok := h.s.w.(transfer.Source)
	if !ok {
		return toStatus(fmt.Errorf("pull: %w", transfer.ErrNoTransfers))
	}
	r := refFromWire(req.GetRef())
	if r == nil {
		return toStatus(fmt.Errorf("pull: %w: no reference", ErrBadRequest))
	}
	rc, err := src.Pull(stream.Context(), *r, req.GetApp())
	if err != nil {
		return toStatus(err)
	}
	defer rc.Close()
	for {
		// A fresh buffer per chunk: gRPC may hold a sent message.
		buf := make([]byte, PullChunkBytes)
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			if err := stream.Send(&pb.PullChunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return nil
		}
		if rerr != nil {
			return toStatus(fmt.Errorf("pull %s: read the buffer: %w", r.ID, rerr))
		}
	}
}

func (h handlers) ImportImage(stream pb.Worker_ImportImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return toStatus(fmt.Errorf("import image: %w: the stream ended before naming the image", ErrBadRequest))
		}
		return err
	}
	if first.GetName() == "" {
		return toStatus(fmt.Errorf("import image: %w: the first message names no image", ErrBadRequest))
	}
	img, err := h.s.w.ImportImage(stream.Context(), first.GetName(), &chunkReader{stream: stream, buf: first.GetData()})
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(imageToWire(img))
}

func (h handlers) RemoveImage(ctx context.Context, req *pb.RemoveImageRequest) (*pb.Empty, error) {
	return result(&pb.Empty{}, h.s.w.RemoveImage(ctx, req.GetName(), req.GetInUse()))
}

// chunkReader reads an archive from the chunks of an ImportImage stream
// as the worker asks for them: one chunk in memory at a time.
type chunkReader struct {
	stream pb.Worker_ImportImageServer
	buf    []byte
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		msg, err := r.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("receive image archive: %w", err)
			}
			r.err = err
			continue
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
