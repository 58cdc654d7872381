package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
)

// Cluster mode: every function is served by the controller replica that
// owns it (its queue, instances and scaling live there only). A request
// that reaches another replica is sent on to the owner, once, as it came,
// and the owner's answer goes back as it is: status, headers and body.

// hopHeaders are connection-level headers a forwarded request and its
// answer do not carry over.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade"}

// routeOrForward decides where a request for a function is served. It
// returns true when the request was answered (sent on to the owner, or
// failed); false means: serve it here. body is the request's body, read
// already.
func (s *Server) routeOrForward(w http.ResponseWriter, r *http.Request, name string, body []byte) bool {
	forwarded := r.Header.Get(apiv1.HeaderForwardedBy) != ""
	r.Header.Del(apiv1.HeaderForwardedBy)
	for {
		addr, err := s.c.Route(r.Context(), name, forwarded)
		if err != nil {
			s.writeErr(w, err)
			return true
		}
		if addr == "" {
			return false
		}
		err = s.forward(w, r, addr, body)
		if err == nil {
			return true
		}
		if !errors.Is(err, errOwnerUnreachable) || r.Context().Err() != nil {
			s.writeErr(w, err)
			return true
		}
		// The owner is gone and the membership has yet to say so: the
		// request never reached it, so it waits for the next owner (which
		// the cluster finds sooner when it is told).
		s.log.Debug("owner unreachable, routing again", "function", name, "owner", addr, "err", err)
		s.c.OwnerUnreachable(name)
		select {
		case <-r.Context().Done():
			s.writeErr(w, err)
			return true
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// forwardToOwner sends a request about a function's live state to the
// controller that owns it, if another one does now; it does not wait for
// ownership to settle (the local view answers then). It returns true when
// the request was answered.
func (s *Server) forwardToOwner(w http.ResponseWriter, r *http.Request, name string) bool {
	if r.Header.Get(apiv1.HeaderForwardedBy) != "" {
		return false
	}
	addr, remote := s.c.OwnerAddress(name)
	if !remote {
		return false
	}
	if err := s.forward(w, r, addr, nil); err != nil {
		s.log.Debug("owner unreachable for a status request; answering here", "function", name, "owner", addr, "err", err)
		return false
	}
	return true
}

var (
	errOwnerUnreachable = errdefs.New(errdefs.Unavailable, apiv1.CodeOwnerUnreachable, "the controller owning the function is unreachable")
	errOwnerLost        = errdefs.New(errdefs.Unavailable, apiv1.CodeOwnerLost, "the controller owning the function was lost while it served the request")
)

// forward sends the request to the controller at addr and copies its
// answer. An error means nothing was written: errOwnerUnreachable when the
// request cannot have reached the owner, errOwnerLost when it may have.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, addr string, body []byte) error {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("forward to %s: %w", addr, err)
	}
	req.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	req.Header.Set(apiv1.HeaderForwardedBy, s.opts.Self)
	req.Host = r.Host
	resp, err := s.forwarder.Do(req)
	if err != nil {
		if notSent(err) {
			return fmt.Errorf("%w (%s): %w", errOwnerUnreachable, addr, err)
		}
		return fmt.Errorf("%w (%s): %w", errOwnerLost, addr, err)
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		s.log.Warn("forwarded answer cut off", "owner", addr, "err", err)
	}
	return nil
}

// notSent says whether a transport error happened before the request
// could reach the other side: the connection was never made.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	// EPIPE: the owner had closed the pooled connection before the
	// request was written (it was killed).
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EPIPE)
}

// newForwarder is the client that sends requests on to owners. Its
// connections stay open between requests: forwarding is on the
// invocation path.
func newForwarder() *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		// Redirects are the owner's answer to the client.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ownersStatus fills in the live status of functions other controllers
// own, asking each owner once for the functions it serves. An owner that
// does not answer leaves its functions' status empty (the owner is still
// named).
func (s *Server) ownersStatus(r *http.Request, fns []apiv1.Function) {
	byOwner := map[string][]int{}
	for i, f := range fns {
		if f.Status.Owner != "" && f.Status.Owner != s.opts.Self {
			byOwner[f.Status.Owner] = append(byOwner[f.Status.Owner], i)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for owner, idx := range byOwner {
		addr := s.c.AddressOf(owner)
		if addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			theirs, err := s.ownedBy(r, addr)
			if err != nil {
				s.log.Warn("status of functions from their owner", "owner", owner, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, i := range idx {
				if st, ok := theirs[fns[i].Name]; ok {
					fns[i].Status = st
				}
			}
		}()
	}
	wg.Wait()
}

// ownedBy asks the controller at addr for the status of the functions it
// owns.
func (s *Server) ownedBy(r *http.Request, addr string) (map[string]apiv1.FunctionStatus, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/functions?owned=true", nil)
	if err != nil {
		return nil, err
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set(apiv1.HeaderForwardedBy, s.opts.Self)
	resp, err := s.forwarder.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	var list apiv1.FunctionList
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	out := make(map[string]apiv1.FunctionStatus, len(list.Functions))
	for _, f := range list.Functions {
		out[f.Name] = f.Status
	}
	return out, nil
}
