package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	"github.com/baton-faas/baton/internal/workflow/engine"
	"github.com/baton-faas/baton/internal/workflow/execution"
)

// Buses a workflow step's event can take (see WorkflowSteps).
const (
	BusLocal  = "local"
	BusGlobal = "global"
)

// WorkflowSteps runs workflow steps (engine.Steps) for the executions this
// controller drives. A step whose function this controller serves goes
// over the local bus: handed to the router in this process, which puts
// it on an instance through normal placement, no store or network on the
// way. Any other step (its function served by another controller) goes
// over the global bus: a step event on the async queue in JetStream, run
// by the function's owner, its outcome read back from the invocation's
// state; it survives the loss of either controller. ForceGlobal sends
// every step over the global bus (to compare the two).
type WorkflowSteps struct {
	C           *Controller
	ForceGlobal bool
	// Transfers lets workers keep a large output of a step and pass a
	// reference on, on either bus (direct transfers; the engine needs
	// WorkflowTransfers then).
	Transfers bool
}

// ErrorResultTooLarge names a step's output that was too large to pass on
// (a workflow's Retry and Catch can name it).
const ErrorResultTooLarge = "Baton.ResultTooLarge"

// stepLost is a step cut short by the platform: the engine runs it again.
type stepLost struct{ err error }

func (e stepLost) Error() string     { return e.err.Error() }
func (e stepLost) Unwrap() error     { return e.err }
func (e stepLost) Interrupted() bool { return true }

var _ engine.Interrupted = stepLost{}

// Step implements engine.Steps.
func (s WorkflowSteps) Step(ctx context.Context, execID, callID string, call execution.Call) (engine.Step, error) {
	c := s.C
	custom := map[string]string{"baton-execution": execID, "baton-state": call.State}
	cc := clientContext(call.Attempt, custom)
	if !s.ForceGlobal || c.queue == nil {
		if _, exists := c.knownFunction(call.Function); !exists && !c.Lookup(ctx, call.Function) {
			return engine.Step{}, &execution.FunctionError{Type: "Baton.FunctionNotFound", Message: fmt.Sprintf("function %q does not exist", call.Function)}
		}
	}
	input, err := c.stepInput(ctx, call.Function, call.Input)
	if err != nil {
		return engine.Step{}, stepError(err)
	}
	call.Input = input
	if !s.ForceGlobal || c.queue == nil {
		if c.owns(call.Function) {
			inv, err := c.InvokeWith(ctx, call.Function, "", call.Input, InvokeOptions{ClientContext: cc, Attempt: call.Attempt, ByRef: s.Transfers})
			if err == nil {
				payload := inv.Payload
				if inv.Ref != nil {
					// The worker kept the output: the next step pulls it.
					payload = transfer.Marker(*inv.Ref)
				}
				return stepOutcome(engine.Step{Host: inv.Worker, Bus: BusLocal}, payload, inv.FunctionError, inv.Err)
			}
			if !errors.Is(err, router.ErrReleased) && !errors.Is(err, router.ErrUnknownFunction) {
				return engine.Step{Bus: BusLocal}, stepError(err)
			}
			// Handed over meanwhile: the owner runs it, over the global bus.
		}
		if c.queue == nil {
			return engine.Step{}, stepLost{fmt.Errorf("function %s is served by another controller and there is no global bus", call.Function)}
		}
	}
	key := "wf/" + execID + "/" + callID
	acc, err := c.queue.EnqueueStep(ctx, call.Function, call.Input, key, async.Step{Attempt: call.Attempt, Custom: custom, ByRef: s.Transfers})
	if err != nil {
		return engine.Step{Bus: BusGlobal}, stepLost{fmt.Errorf("put the step on the global bus: %w", err)}
	}
	inv, err := c.queue.Await(ctx, acc.ID)
	if err != nil {
		if ctx.Err() == nil {
			// The store did not answer: the step's event is stored under
			// its key, so running the step again waits for the same one.
			return engine.Step{Bus: BusGlobal}, stepLost{fmt.Errorf("await the step on the global bus: %w", err)}
		}
		return engine.Step{Bus: BusGlobal}, err
	}
	return globalOutcome(inv)
}

// stepOutcome turns an invocation's end into a step's.
func stepOutcome(st engine.Step, payload []byte, fe *workerapi.FunctionError, err error) (engine.Step, error) {
	if fe != nil {
		return st, &execution.FunctionError{Type: fe.Type, Message: fe.Message}
	}
	if err != nil {
		return st, stepError(err)
	}
	st.Output = payload
	return st, nil
}

// stepError says how a platform error ends a step's attempt: a lost
// instance or worker is run again; a timeout or crash of the function is
// the function's error (Sandbox.Timedout etc., as Step Functions names
// Lambda's); an overloaded function is Baton.TooManyRequests, which a
// workflow's Retry can name.
func stepError(err error) error {
	var f *workerapi.Failure
	if errors.As(err, &f) {
		switch f.Kind {
		case workerapi.FailureInstanceGone, workerapi.FailureWorkerLost, workerapi.FailureNotDelivered, workerapi.FailureWorkerFailure:
			return stepLost{err}
		case workerapi.FailureTimeout:
			return &execution.FunctionError{Type: "Sandbox.Timedout", Message: f.Message}
		default:
			return &execution.FunctionError{Type: "Baton." + string(f.Kind), Message: f.Message}
		}
	}
	if name := transferName(err); name != "" {
		return &execution.FunctionError{Type: name, Message: err.Error()}
	}
	switch {
	case errors.Is(err, router.ErrQueueFull):
		return &execution.FunctionError{Type: "Baton.TooManyRequests", Message: err.Error()}
	case errors.Is(err, router.ErrUnknownFunction):
		return &execution.FunctionError{Type: "Baton.FunctionNotFound", Message: err.Error()}
	case errors.Is(err, router.ErrShuttingDown), errors.Is(err, router.ErrReleased), errors.Is(err, ErrNoOwner):
		return stepLost{err}
	}
	return err
}

// lostCodes are the error codes of an attempt the platform cut short.
var lostCodes = map[string]bool{
	string(workerapi.FailureInstanceGone): true, string(workerapi.FailureWorkerLost): true,
	string(workerapi.FailureWorkerFailure): true, string(workerapi.FailureNotDelivered): true,
	"worker_unavailable": true, "ownership_moved": true, "shutting_down": true,
}

// globalOutcome reads a step's end from its async state.
func globalOutcome(inv async.Invocation) (engine.Step, error) {
	st := engine.Step{Bus: BusGlobal}
	var last async.Attempt
	for _, a := range inv.Attempts {
		if !a.Interrupted {
			last = a
		}
	}
	st.Host = last.Worker
	if inv.State == async.StateSucceeded {
		st.Output = inv.Result
		return st, nil
	}
	switch {
	case last.Number == 0:
		return st, stepLost{fmt.Errorf("the step did not run: %s", inv.Reason)}
	case last.Error == "":
		// It ran and its output could not go on (larger than the bus
		// carries without direct transfers).
		return st, &execution.FunctionError{Type: ErrorResultTooLarge, Message: inv.Reason}
	case !last.Platform:
		return st, &execution.FunctionError{Type: last.ErrorType, Message: last.Error}
	case last.ErrorType == "timeout":
		return st, &execution.FunctionError{Type: "Sandbox.Timedout", Message: last.Error}
	case lostCodes[last.ErrorType]:
		return st, stepLost{fmt.Errorf("%s", last.Error)}
	}
	return st, &execution.FunctionError{Type: "Baton." + last.ErrorType, Message: last.Error}
}
