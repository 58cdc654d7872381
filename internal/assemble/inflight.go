package assemble

import (
	"net/http"
	"sync"
)

// inflight counts the HTTP handlers that are running, so that shutdown can
// wait for every one of them before it closes the stores they use:
// http.Server.Close closes connections but does not wait for handlers.
type inflight struct {
	wg sync.WaitGroup
}

func (f *inflight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.wg.Add(1)
		defer f.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// drained returns a channel closed when no handler runs. Call it once the
// server accepts no more connections, so that no handler can start after
// the count reached zero.
func (f *inflight) drained() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	return done
}
