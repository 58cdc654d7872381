package assemble

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// A handler still running after http.Server.Close keeps drained open until
// it returns.
func TestInflightWaitsForHandlersAfterClose(t *testing.T) {
	var handlers inflight
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := &http.Server{Handler: handlers.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release // ignores the request's context, as a handler stuck in a store call would
	}))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	drained := handlers.drained()
	select {
	case <-drained:
		t.Fatal("drained while a handler still runs")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-drained:
	case <-time.After(time.Minute):
		t.Fatal("not drained after the handler returned")
	}
}
