package assemble

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func TestAdminListenerOffByDefaultAndLoopbackOnly(t *testing.T) {
	called := false
	stop, err := startAdmin("", slog.New(slog.DiscardHandler), func(string) { called = true })
	if err != nil || called {
		t.Fatalf("no --admin-addr: err %v, listener opened %v", err, called)
	}
	stop()
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "6060"} {
		if _, err := startAdmin(addr, slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "--"+AdminAddrFlag) {
			t.Errorf("--admin-addr %s: %v; want a refusal naming the flag", addr, err)
		}
	}
}

// A whole server (fake sandboxes): with --admin-addr the profiles are
// served on the admin listener; the API's listener never serves them,
// with or without it.
func TestAdminListenerServesPprofAndTheAPIDoesNot(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		name := "disabled"
		if enabled {
			name = "enabled"
		}
		t.Run(name, func(t *testing.T) {
			apiAddr, adminAddr := make(chan string, 1), make(chan string, 1)
			cfg := Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Sandbox: "fake", NoAuth: true,
				Logger: slog.New(slog.DiscardHandler), ShutdownGrace: time.Second,
				Ready: func(a string) { apiAddr <- a }, AdminReady: func(a string) { adminAddr <- a }}
			if enabled {
				cfg.AdminListen = "127.0.0.1:0"
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("server: %v", err)
				}
			}()
			var api string
			select {
			case api = <-apiAddr:
			case err := <-done:
				done <- err
				t.Fatalf("server ended before serving: %v", err)
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
				if code, _ := get(t, "http://"+api+path); code != http.StatusNotFound {
					t.Errorf("API listener answered %s with %d, want 404", path, code)
				}
			}
			if !enabled {
				select {
				case a := <-adminAddr:
					t.Fatalf("an admin listener opened at %s without --admin-addr", a)
				default: // Ready was called after the admin listener would have opened
				}
				return
			}
			admin := <-adminAddr
			code, body := get(t, "http://"+admin+"/debug/pprof/")
			if code != http.StatusOK || !strings.Contains(body, "goroutine") {
				t.Fatalf("admin /debug/pprof/: %d %.200s", code, body)
			}
			code, body = get(t, "http://"+admin+"/debug/pprof/goroutine?debug=1")
			if code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
				t.Fatalf("admin goroutine profile: %d %.200s", code, body)
			}
			// The admin listener serves profiles and nothing of the API.
			if code, _ := get(t, "http://"+admin+"/v1/functions"); code != http.StatusNotFound {
				t.Fatalf("admin listener answered the API's /v1/functions with %d", code)
			}
		})
	}
}
