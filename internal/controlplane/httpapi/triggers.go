package httpapi

import (
	"fmt"
	"net/http"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/triggers"
)

var errNoTriggers = errdefs.New(errdefs.NotImplemented, "triggers_unavailable", "triggers are not available on this server")

// triggerToWire shows a trigger and its state; an external NATS source's
// credentials are named, never shown.
func triggerToWire(t triggers.Trigger, st triggers.State) apiv1.Trigger {
	out := apiv1.Trigger{ID: t.ID, Function: t.Function, Kind: t.Kind, Schedule: t.Schedule, Event: t.Event,
		NATSSubject: t.NATSSubject, Created: t.Created, LastTick: st.LastTick, Fired: st.Fired, Missed: st.Missed,
		LastMissed: st.LastMissed, LastError: st.LastError}
	if t.NATS != nil {
		out.NATS = &apiv1.ExternalNATSView{URL: t.NATS.URL, User: t.NATS.User, Auth: t.NATS.Auth(),
			Stream: t.Stream(), StreamOwned: t.NATS.Stream == "", Consumer: t.Consumer()}
	}
	for _, r := range st.MissedTicks {
		out.MissedTicks = append(out.MissedTicks, apiv1.MissedTicks{First: r.First, Last: r.Last, Count: r.Count, Noticed: r.Noticed})
	}
	return out
}

func (s *Server) addTrigger(w http.ResponseWriter, r *http.Request) {
	if s.opts.Triggers == nil {
		s.writeErr(w, errNoTriggers)
		return
	}
	var req apiv1.TriggerRequest
	if err := s.decodeBody(w, r, 1<<20, "trigger", &req); err != nil {
		s.writeErr(w, err)
		return
	}
	if !s.c.Lookup(r.Context(), req.Function) {
		s.writeErr(w, apiError(errdefs.NotFound, apiv1.CodeFunctionNotFound, fmt.Sprintf("function %q not found", req.Function)))
		return
	}
	in := triggers.Trigger{Function: req.Function, Schedule: req.Schedule, Event: req.Event, NATSSubject: req.NATSSubject}
	if n := req.NATS; n != nil {
		in.NATS = &triggers.External{URL: n.URL, User: n.User, Password: n.Password, Creds: n.Creds, Stream: n.Stream}
	}
	t, err := s.opts.Triggers.Add(r.Context(), in)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, triggerToWire(t, triggers.State{LastTick: t.Created}))
}

func (s *Server) listTriggers(w http.ResponseWriter, r *http.Request) {
	if s.opts.Triggers == nil {
		s.writeErr(w, errNoTriggers)
		return
	}
	ts, states, err := s.opts.Triggers.List(r.Context(), r.URL.Query().Get("function"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := apiv1.TriggerList{Triggers: make([]apiv1.Trigger, 0, len(ts))}
	for i, t := range ts {
		out.Triggers = append(out.Triggers, triggerToWire(t, states[i]))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) removeTrigger(w http.ResponseWriter, r *http.Request) {
	if s.opts.Triggers == nil {
		s.writeErr(w, errNoTriggers)
		return
	}
	if err := s.opts.Triggers.Remove(r.Context(), r.PathValue("id")); err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.Deleted{Deleted: r.PathValue("id")})
}
