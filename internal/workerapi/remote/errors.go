package remote

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/baton-faas/baton/internal/clusterpki"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	pb "github.com/baton-faas/baton/internal/workerapi/remote/wirepb"
)

// How errors cross the wire. The server sends every error as a gRPC status
// with a pb.Error detail: the error's class and code (errdefs.Classify),
// its text, the names of the well-known errors it wraps, and the
// *workerapi.Failure or *workerapi.InitError it carries. The client turns
// that back into an error for which Classify, errors.Is (for the errors
// below) and errors.As (for the two types) answer as they did on the
// server. A status without that detail did not come from the worker API
// but from the transport: the client makes it an ErrWorkerUnavailable.

// wellKnown are the errors whose identity crosses the wire, by name. A
// sentinel of another package crosses as its class and code only.
var wellKnown = []struct {
	name string
	err  error
}{
	{"instance_not_found", workerapi.ErrUnknownInstance},
	{"no_image_store", workerapi.ErrNoImageStore},
	{"image_not_found", workerapi.ErrImageNotFound},
	{"image_in_use", workerapi.ErrImageInUse},
	{"worker_unavailable", workerapi.ErrWorkerUnavailable},
	{"unauthenticated_node", clusterpki.ErrUnauthenticated},
	{"permission_denied", ErrPermissionDenied},
	{"context_canceled", context.Canceled},
	{"context_deadline_exceeded", context.DeadlineExceeded},
	{"transfer_ref_forged", transfer.ErrForged},
	{"transfer_ref_expired", transfer.ErrExpired},
	{"transfer_ref_replayed", transfer.ErrReplayed},
	{"transfer_ref_wrong_app", transfer.ErrWrongApp},
	{"transfer-source-lost", transfer.ErrSourceLost},
	{"transfer_corrupt", transfer.ErrCorrupt},
	{"transfer_disabled", transfer.ErrNoTransfers},
}

// ErrPermissionDenied: the peer is a node of the cluster but its role may
// not call the worker API (a worker calling another worker).
var ErrPermissionDenied = errdefs.New(errdefs.Unauthenticated, "permission_denied", "this node's role may not call the worker API")

// toStatus is the status a server answers for err.
func toStatus(err error) error { return statusOf(errorDetail(err), err) }

// statusOf is the status of err with its detail.
func statusOf(detail *pb.Error, err error) error {
	st := status.New(grpcCode(errdefs.Class(detail.GetClass()), err), err.Error())
	if withDetail, derr := st.WithDetails(detail); derr == nil {
		st = withDetail
	}
	return st.Err()
}

// errorDetail describes err for the client.
func errorDetail(err error) *pb.Error {
	class, code := errdefs.Classify(err)
	detail := &pb.Error{Class: string(class), Code: code, Message: err.Error()}
	for _, k := range wellKnown {
		if errors.Is(err, k.err) {
			detail.Is = append(detail.Is, k.name)
			if err == k.err {
				detail.Bare = true
			}
		}
	}
	var f *workerapi.Failure
	if errors.As(err, &f) {
		detail.Failure = failureToWire(f)
		_, detail.Bare = err.(*workerapi.Failure)
	}
	var ie *workerapi.InitError
	if errors.As(err, &ie) {
		detail.InitError = initErrorToWire(ie)
		_, detail.Bare = err.(*workerapi.InitError)
	}
	return detail
}

// grpcCode is the status code for an error of class: only for people
// reading the status, the client classifies by the detail.
func grpcCode(class errdefs.Class, err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, ErrPermissionDenied):
		return codes.PermissionDenied
	}
	switch class {
	case errdefs.Invalid:
		return codes.InvalidArgument
	case errdefs.Unauthenticated:
		return codes.Unauthenticated
	case errdefs.NotFound:
		return codes.NotFound
	case errdefs.Conflict:
		return codes.FailedPrecondition
	case errdefs.TooLarge, errdefs.Overloaded:
		return codes.ResourceExhausted
	case errdefs.Unavailable:
		return codes.Unavailable
	case errdefs.Timeout:
		return codes.DeadlineExceeded
	case errdefs.FunctionFailed:
		return codes.Aborted
	case errdefs.NotImplemented:
		return codes.Unimplemented
	}
	return codes.Internal
}

// remoteError is an error that crossed the wire, or a transport failure:
// its class and code are the original's, and it wraps the well-known
// errors and typed failures the original wrapped.
type remoteError struct {
	msg   string
	class errdefs.Class
	code  string
	errs  []error
}

func (e *remoteError) Error() string                       { return e.msg }
func (e *remoteError) Unwrap() []error                     { return e.errs }
func (e *remoteError) ErrorClass() (errdefs.Class, string) { return e.class, e.code }

// call says what a failed call was, for the error the client returns.
type call struct {
	op string
	// invoke: the call was an Invoke, so a transport failure is also a
	// *workerapi.Failure that says whether the event may have reached the
	// worker.
	invoke bool
	// sent: the call reached a connection to the worker (it may have been
	// delivered); false means it certainly was not.
	sent bool
}

// fromStatus turns the error of a gRPC call into the error the client
// returns.
func (c *Client) fromStatus(ctx context.Context, k call, err error) error {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if detail, ok := d.(*pb.Error); ok {
			return fromDetail(c.target, detail)
		}
	}
	// Not an answer of the worker API: the call failed on the way.
	if st.Code() == codes.Canceled && ctx.Err() != nil {
		// The caller gave up; the worker is not at fault.
		if k.invoke && k.sent {
			// The worker kills an instance whose call was cancelled.
			f := &workerapi.Failure{Kind: workerapi.FailureInstanceGone, Message: "invocation cancelled: " + ctx.Err().Error()}
			class, code := f.ErrorClass()
			return &remoteError{msg: fmt.Sprintf("%s on worker %s: %v", k.op, c.target, f), class: class, code: code, errs: []error{f, ctx.Err()}}
		}
		return fmt.Errorf("%s on worker %s: %w", k.op, c.target, ctx.Err())
	}
	out := &remoteError{class: workerapi.ErrWorkerUnavailable.Class, code: workerapi.ErrWorkerUnavailable.Code,
		errs: []error{workerapi.ErrWorkerUnavailable}}
	out.msg = fmt.Sprintf("%s: worker %s unavailable: %s", k.op, c.target, st.Message())
	if st.Code() == codes.DeadlineExceeded {
		out.errs = append(out.errs, context.DeadlineExceeded)
	}
	if k.invoke {
		// The router retries an event that was not delivered elsewhere,
		// and counts the instance of one that may have been as lost.
		f := &workerapi.Failure{Kind: workerapi.FailureWorkerLost, Message: out.msg}
		if !k.sent {
			f.Kind = workerapi.FailureNotDelivered
		}
		out.errs = append(out.errs, f)
	}
	return out
}

// fromDetail rebuilds a worker's error.
func fromDetail(target string, d *pb.Error) error {
	failure := failureFromWire(d.GetFailure())
	initErr := initErrorFromWire(d.GetInitError())
	if d.GetBare() {
		// The worker returned the typed failure or the sentinel itself.
		switch {
		case failure != nil:
			return failure
		case initErr != nil:
			return initErr
		case len(d.GetIs()) == 1:
			if err := knownError(d.GetIs()[0]); err != nil {
				return err
			}
		}
	}
	out := &remoteError{msg: fmt.Sprintf("worker %s: %s", target, d.GetMessage()), class: errdefs.Class(d.GetClass()), code: d.GetCode()}
	if out.class == "" {
		out.class, out.code = errdefs.Internal, "internal"
	}
	if failure != nil {
		out.errs = append(out.errs, failure)
	}
	if initErr != nil {
		out.errs = append(out.errs, initErr)
	}
	for _, name := range d.GetIs() {
		if err := knownError(name); err != nil {
			out.errs = append(out.errs, err)
		}
	}
	return out
}

func knownError(name string) error {
	for _, k := range wellKnown {
		if k.name == name {
			return k.err
		}
	}
	return nil
}
