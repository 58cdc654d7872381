package client

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// deadURL is an address nothing listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// Requests go to the next server when one cannot be reached, bodies
// included, and stay with the server that answered.
func TestFailoverToAnotherServer(t *testing.T) {
	var hits atomic.Int32
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.HasSuffix(r.URL.Path, "/invoke"):
			w.Write(body) // echo the event
		default:
			w.Write([]byte(`{"name":"f","version":1}`))
		}
	}))
	defer live.Close()
	dead := deadURL(t)
	c, err := New(dead+", "+live.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if f, err := c.Get(ctx, "f"); err != nil || f.Name != "f" {
		t.Fatalf("get through the second server: %+v, %v", f, err)
	}
	resp, err := c.Invoke(ctx, "f", []byte(`{"n":42}`))
	if err != nil || string(resp.Body) != `{"n":42}` {
		t.Fatalf("invoke through the second server: %q, %v", resp.Body, err)
	}
	if c.base() != live.URL {
		t.Fatalf("client stays on %s, want the server that answered", c.base())
	}
	if hits.Load() != 2 {
		t.Fatalf("live server saw %d requests, want 2", hits.Load())
	}

	// No server reachable: the error names them all.
	none, err := New(dead+","+deadURL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.Get(ctx, "f"); err == nil || !strings.Contains(err.Error(), dead) {
		t.Fatalf("no server reachable: %v", err)
	}
	if _, err := New("http://a:1,ftp://b", nil); err == nil {
		t.Fatal("a list with a bad URL was accepted")
	}
}
