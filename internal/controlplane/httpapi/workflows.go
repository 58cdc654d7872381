package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workflow/journal"
	"github.com/baton-faas/baton/internal/workflow/registry"
)

var errNoWorkflows = errdefs.New(errdefs.NotImplemented, "workflows_unavailable", "workflows are not available on this server")

// maxDefinitionBytes bounds a workflow definition.
const maxDefinitionBytes = 1 << 20

func workflowToWire(w registry.Workflow) apiv1.Workflow {
	return apiv1.Workflow{Name: w.Name, Version: w.Version, Definition: w.Definition, Created: w.Created, Updated: w.Updated}
}

func executionToWire(x journal.Execution) apiv1.Execution {
	out := apiv1.Execution{ID: x.ID, Workflow: x.Workflow, Version: x.Version, Status: x.Status, Input: x.Input,
		Output: x.Output, Error: x.Error, Cause: x.Cause, Started: x.Started, Stopped: x.Stopped, Steps: x.Steps,
		Runner: x.Holder, Epoch: x.Epoch}
	if !x.Final() {
		out.ResumeAt = x.ResumeAt
	}
	return out
}

// workflowName reads and checks the {name} of a workflow route.
func (s *Server) workflowName(w http.ResponseWriter, r *http.Request) (string, bool) {
	if s.opts.Workflows == nil {
		s.writeErr(w, errNoWorkflows)
		return "", false
	}
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeInvalidName, "workflow name: "+err.Error()))
		return "", false
	}
	return name, true
}

func (s *Server) putWorkflow(w http.ResponseWriter, r *http.Request) {
	name, ok := s.workflowName(w, r)
	if !ok {
		return
	}
	src, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDefinitionBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeErr(w, apiError(errdefs.TooLarge, apiv1.CodeSpecTooLarge, fmt.Sprintf("a workflow definition is at most %d bytes", maxDefinitionBytes)))
			return
		}
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeBadBody, "could not read the definition: "+err.Error()))
		return
	}
	wf, err := s.opts.Workflows.Registry().Put(r.Context(), name, src)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	status := http.StatusOK
	if wf.Version == 1 {
		status = http.StatusCreated
	}
	writeJSON(w, status, workflowToWire(wf))
}

func (s *Server) getWorkflow(w http.ResponseWriter, r *http.Request) {
	name, ok := s.workflowName(w, r)
	if !ok {
		return
	}
	wf, _, err := s.opts.Workflows.Registry().Get(r.Context(), name)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, workflowToWire(wf))
}

func (s *Server) listWorkflows(w http.ResponseWriter, r *http.Request) {
	if s.opts.Workflows == nil {
		s.writeErr(w, errNoWorkflows)
		return
	}
	wfs, err := s.opts.Workflows.Registry().List(r.Context())
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := apiv1.WorkflowList{Workflows: make([]apiv1.Workflow, 0, len(wfs))}
	for _, wf := range wfs {
		out.Workflows = append(out.Workflows, workflowToWire(wf))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteWorkflow(w http.ResponseWriter, r *http.Request) {
	name, ok := s.workflowName(w, r)
	if !ok {
		return
	}
	if err := s.opts.Workflows.Registry().Delete(r.Context(), name); err != nil {
		s.writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// startExecution starts an execution: 202 with its id, or with ?sync=true
// 200 once it ended (its output or error in the body).
func (s *Server) startExecution(w http.ResponseWriter, r *http.Request) {
	name, ok := s.workflowName(w, r)
	if !ok {
		return
	}
	sync := false
	if v := r.URL.Query().Get("sync"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeBadBody, fmt.Sprintf("sync=%q: want true or false", v)))
			return
		}
		sync = b
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	input, release, ok := s.readHeld(w, r)
	if !ok {
		return
	}
	defer release()
	x, err := s.start(r.Context(), name, input, key, sync)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if !sync {
		writeJSON(w, http.StatusAccepted, x)
		return
	}
	writeJSON(w, http.StatusOK, x)
}

func (s *Server) start(ctx context.Context, name string, input []byte, key string, sync bool) (apiv1.Execution, error) {
	x, created, err := s.opts.Workflows.Start(ctx, name, input, key)
	if err != nil {
		return apiv1.Execution{}, err
	}
	if sync && !x.Final() {
		if x, err = s.opts.Workflows.Wait(ctx, x.ID); err != nil {
			return apiv1.Execution{}, err
		}
	}
	out := executionToWire(x)
	out.Existing = !created
	return out, nil
}

// workflowURL runs a workflow as a function URL (/wf/{name}): the body
// is the input, the answer its output (200) or its error (502, as a
// function URL answers a function's error).
func (s *Server) workflowURL(w http.ResponseWriter, r *http.Request) {
	name, ok := s.workflowName(w, r)
	if !ok {
		return
	}
	input, release, ok := s.readHeld(w, r)
	if !ok {
		return
	}
	defer release()
	if len(input) > 0 && !json.Valid(input) {
		// A function URL carries any body: a non-JSON one is the input
		// as a string.
		input, _ = json.Marshal(string(input))
	}
	x, err := s.start(r.Context(), name, input, "", true)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Baton-Execution-Id", x.ID)
	switch x.Status {
	case apiv1.ExecutionSucceeded:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(x.Output)
	case apiv1.ExecutionFailed:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": x.Error, "cause": x.Cause, "execution": x.ID})
	default:
		// The client went away first; the execution goes on.
		writeJSON(w, http.StatusAccepted, x)
	}
}

func (s *Server) listExecutions(w http.ResponseWriter, r *http.Request) {
	name, ok := s.workflowName(w, r)
	if !ok {
		return
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeBadLimit, fmt.Sprintf("limit %q must be an integer between 1 and 10000", l)))
			return
		}
		limit = n
	}
	xs, err := s.opts.Workflows.List(r.Context(), name, limit)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := apiv1.ExecutionList{Executions: make([]apiv1.Execution, 0, len(xs))}
	for _, x := range xs {
		out.Executions = append(out.Executions, executionToWire(x))
	}
	writeJSON(w, http.StatusOK, out)
}

// describeExecution returns an execution with its history (?history=false
// leaves it out).
func (s *Server) describeExecution(w http.ResponseWriter, r *http.Request) {
	if s.opts.Workflows == nil {
		s.writeErr(w, errNoWorkflows)
		return
	}
	id := r.PathValue("id")
	x, err := s.opts.Workflows.Get(r.Context(), id)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := executionToWire(x)
	if r.URL.Query().Get("history") != "false" {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		evs, err := s.opts.Workflows.History(ctx, id, 0)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		for _, ev := range evs {
			out.History = append(out.History, apiv1.ExecutionEvent{Kind: ev.Kind, State: ev.State, Path: ev.Path, Time: ev.Time,
				Attempt: ev.Attempt, Millis: ev.Millis, Host: ev.Host, Bus: ev.Bus, Error: ev.Error, Cause: ev.Cause, Runner: ev.Runner})
		}
	}
	writeJSON(w, http.StatusOK, out)
}
