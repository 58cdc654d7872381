package assemble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// AdminAddrFlag is the flag of every long-running role that opens the
// admin listener.
const AdminAddrFlag = "admin-addr"

// adminMux serves Go's profiling handlers on a mux of their own: the API's
// handler never routes to them, whatever net/http/pprof registers on the
// default mux when imported.
func adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also the named profiles: heap, goroutine, …
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// startAdmin opens the admin listener on addr (empty: none, the default)
// and serves /debug/pprof/ there until the returned stop is called. It has
// no authentication, so it listens on loopback only; ready, if set, gets
// the bound address.
func startAdmin(addr string, log *slog.Logger, ready func(addr string)) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	loopback, err := IsLoopbackListen(addr)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: %w", AdminAddrFlag, addr, err)
	}
	if !loopback {
		return nil, fmt.Errorf("--%s %s: the admin listener serves profiles without authentication, so it listens on loopback only (127.0.0.1:PORT; forward the port to reach it from elsewhere)", AdminAddrFlag, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: listen on %s: %w", AdminAddrFlag, addr, err)
	}
	// No write timeout: a CPU profile or trace answers after its seconds.
	srv := &http.Server{Handler: adminMux(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("admin listener stopped", "err", err)
		}
	}()
	log.Info("admin listener (profiling) ready", "listen", ln.Addr().String(), "pprof", "http://"+ln.Addr().String()+"/debug/pprof/")
	if ready != nil {
		ready(ln.Addr().String())
	}
	return func() {
		// A profile being taken is cut short: the process is going away.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}, nil
}
