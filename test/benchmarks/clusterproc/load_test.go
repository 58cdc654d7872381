package clusterproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/baton-faas/baton/internal/bench/loadgen"
)

// result is what one request of the open loop saw.
type result struct {
	fn         string
	sent       time.Time // intended send time
	done       time.Time
	ok         bool
	what       string // error class when !ok: "HTTP 503 worker-lost", "dial", "timeout", ...
	failedOver bool   // the first controller refused the connection and the other one answered
}

// openLoop sends requests at a fixed rate, round-robin over fns and over
// the controllers' URLs, each on its own goroutine, until stop is closed.
// Like the client package, a request whose connection is refused is sent
// to the next URL at once (a dead controller refuses connections).
type openLoop struct {
	urls    []string
	fns     []string
	rate    float64
	timeout time.Duration
	hc      *http.Client

	mu      sync.Mutex
	results []result
}

func newOpenLoop(urls, fns []string, rate float64) *openLoop {
	return &openLoop{urls: urls, fns: fns, rate: rate, timeout: 10 * time.Second,
		hc: &http.Client{Transport: loadgen.NewTransport(512)}}
}

// run sends until ctx ends and returns when every request sent has
// finished.
func (l *openLoop) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	gap := time.Duration(float64(time.Second) / l.rate)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * gap)
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		} else if ctx.Err() != nil {
			return
		}
		fn := l.fns[i%len(l.fns)]
		// Alternate controllers independently of the function, so each
		// function is sent to every controller.
		first := (i / len(l.fns)) % len(l.urls)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := l.send(fn, first, at)
			l.mu.Lock()
			l.results = append(l.results, r)
			l.mu.Unlock()
		}()
	}
}

func (l *openLoop) send(fn string, first int, at time.Time) result {
	r := result{fn: fn, sent: at}
	for k := range l.urls {
		u := l.urls[(first+k)%len(l.urls)]
		ok, what, refused := l.once(u, fn)
		r.ok, r.what = ok, what
		if !refused {
			r.failedOver = k > 0
			break
		}
	}
	r.done = time.Now()
	return r
}

// once sends one invocation; refused reports a connection that could not
// be made (the next URL should be tried).
func (l *openLoop) once(base, fn string) (ok bool, what string, refused bool) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/functions/"+url.PathEscape(fn)+"/invoke",
		bytes.NewReader([]byte(`{"n":1}`)))
	if err != nil {
		return false, err.Error(), false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.hc.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return false, "connection refused", true
		case errors.Is(err, context.DeadlineExceeded):
			return false, "client timeout", false
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return false, "connection reset", false
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return false, "dial: " + op.Err.Error(), true
		}
		return false, err.Error(), false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && string(body) == `{"n":1}` {
		return true, "", false
	}
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &e)
	return false, fmt.Sprintf("HTTP %d %s", resp.StatusCode, e.Code), false
}

// taken returns the results so far, sorted by intended send time.
func (l *openLoop) taken() []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]result(nil), l.results...)
	sort.Slice(out, func(i, j int) bool { return out[i].sent.Before(out[j].sent) })
	return out
}

// recovery is what a failure did to the functions it hit.
type recovery struct {
	// gap per function: from the event to the end of the first successful
	// request sent at or after it; a function with no success has none.
	gap map[string]time.Duration
	// failures after the event, by class.
	failures map[string]int
	failed   int
	// lastFailure is from the event to the end of the last failed request.
	lastFailure time.Duration
	// before counts failures of requests sent before the event (should be
	// none: the cluster was steady).
	before     int
	failedOver int
	// slowest successful request sent at or after the event, and how many
	// took over a second (held while the function changed hands).
	slowest time.Duration
	slow    int
}

// recoveryOf reads results around an event at t for the functions fns.
func recoveryOf(results []result, t time.Time, fns []string) recovery {
	rc := recovery{gap: map[string]time.Duration{}, failures: map[string]int{}}
	want := map[string]bool{}
	for _, f := range fns {
		want[f] = true
	}
	for _, r := range results {
		if r.failedOver {
			rc.failedOver++
		}
		if r.sent.Before(t) {
			// In flight at the event: counts as a failure of the event
			// when it failed after it.
			if !r.ok && r.done.After(t) {
				rc.failed++
				rc.failures[r.what]++
				rc.lastFailure = max(rc.lastFailure, r.done.Sub(t))
			} else if !r.ok {
				rc.before++
			}
			continue
		}
		if !r.ok {
			rc.failed++
			rc.failures[r.what]++
			rc.lastFailure = max(rc.lastFailure, r.done.Sub(t))
			continue
		}
		lat := r.done.Sub(r.sent)
		rc.slowest = max(rc.slowest, lat)
		if lat > time.Second {
			rc.slow++
		}
		if want[r.fn] {
			if _, seen := rc.gap[r.fn]; !seen {
				rc.gap[r.fn] = r.done.Sub(t)
			}
		}
	}
	return rc
}

// pct is the q-quantile (nearest rank) of ds.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
