package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/test/harness"
)

const workingSetDir = "testdata/workingset"

// workingSetOf returns the function's working set as GET shows it.
func workingSetOf(t *testing.T, srv *harness.Server, name string) apiv1.WorkingSet {
	t.Helper()
	v := status(t, srv, name)
	if v.WorkingSet == nil {
		t.Fatalf("GET %s has no workingSet", name)
	}
	return *v.WorkingSet
}

// waitRecordedAfter waits until name's current version has a working set
// recorded after since (recording ends after the start, off its path).
func waitRecordedAfter(t *testing.T, srv *harness.Server, name string, since time.Time) apiv1.WorkingSet {
	t.Helper()
	var ws apiv1.WorkingSet
	waitFor(t, 30*time.Second, name+"'s working set recorded", func() (bool, string) {
		ws = workingSetOf(t, srv, name)
		return ws.Recorded && ws.RecordedAt != nil && ws.RecordedAt.After(since), ws.Summary
	})
	return ws
}

// coldAgain stops name's instances and waits until none is left, so that
// the next invocation is a cold start.
func coldAgain(t *testing.T, srv *harness.Server, name string) {
	t.Helper()
	res := do(t, http.MethodDelete, srv.URL+"/v1/functions/"+name+"/instances", nil, srv.AuthHeader())
	if res.Status != http.StatusOK {
		t.Fatalf("recycle %s: HTTP %d %s", name, res.Status, res.Body)
	}
	waitFor(t, 30*time.Second, name+" has no instances", func() (bool, string) {
		v := status(t, srv, name)
		return len(v.Status.Instances) == 0 && v.Status.Starting == 0 && v.Status.Stopping == 0, describeStatus(v)
	})
}

// recordFile finds the record of name's version on the server's host.
func recordFile(t *testing.T, srv *harness.Server, name string, version int) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(srv.DataDir, "worker", "workingsets", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		var rec struct {
			Function string
			Version  int
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if json.Unmarshal(data, &rec) == nil && rec.Function == name && rec.Version == version {
			return p
		}
	}
	t.Fatalf("no working-set record of %s version %d among %v", name, version, paths)
	return ""
}

// recordRoots lists the roots a record names.
func recordRoots(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Roots []string }
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	slices.Sort(rec.Roots)
	return rec.Roots
}

// editRecord rewrites the first file entry of a record.
func editRecord(t *testing.T, path string, edit func(file map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	files, _ := rec["files"].([]any)
	if len(files) == 0 {
		t.Fatalf("record %s names no file", path)
	}
	edit(files[0].(map[string]any))
	if data, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWorkingSet: the first cold start of a version records its working
// set once; later cold starts prefetch it (the counter shows it) without
// recording again; a new version (new code, another image) records its
// own; a record
// that names a file that is gone or changed is ignored safely (the start
// succeeds) and made again; prefetch: false turns it all off.
func TestWorkingSet(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	spec := pySpec("handler")
	spec.IdleTimeoutSeconds = 600
	v1 := copyDir(t, workingSetDir, nil)
	deploy(t, srv, "ws-a", spec, v1)
	if ws := workingSetOf(t, srv, "ws-a"); ws.Recorded || ws.Summary != "not recorded" {
		t.Fatalf("before any start: %+v, want not recorded", ws)
	}

	began := time.Now().Add(-time.Second) // the server's clock is this host's
	var out struct{ Version string }
	mustInvoke(t, srv, "ws-a", nil, &out)
	first := waitRecordedAfter(t, srv, "ws-a", began)
	t.Logf("recorded: %+v", first)
	if first.Bytes == 0 || first.Ranges == 0 || first.Files == 0 || first.Prefetches != 0 ||
		!strings.HasPrefix(first.Summary, "recorded, ") || !strings.HasSuffix(first.Summary, " ranges") {
		t.Fatalf("first record %+v", first)
	}
	stdout, stderr, code := cli(t, srv, "get", "ws-a", "--server", srv.URL)
	if code != 0 || !strings.Contains(stderr, "working set: "+first.Summary) || !json.Valid([]byte(stdout)) {
		t.Fatalf("baton get: exit %d, stderr %q, stdout valid JSON %v", code, stderr, json.Valid([]byte(stdout)))
	}

	// Cold again: prefetched, not recorded again.
	for i := 1; i <= 2; i++ {
		coldAgain(t, srv, "ws-a")
		res := mustInvoke(t, srv, "ws-a", nil, &out)
		if !res.Cold {
			t.Fatalf("invocation %d after the recycle was warm", i)
		}
		ws := workingSetOf(t, srv, "ws-a")
		if ws.Prefetches != int64(i) || !ws.RecordedAt.Equal(*first.RecordedAt) {
			t.Fatalf("cold start %d after the recording: %+v, want %d prefetches of the record made at %s", i, ws, i, first.RecordedAt)
		}
	}

	// New code, new version: a record of its own, made at its first
	// cold start.
	v2 := copyDir(t, workingSetDir, map[string]string{"VERSION": "2\n"})
	deploy(t, srv, "ws-a", spec, v2)
	if ws := workingSetOf(t, srv, "ws-a"); ws.Recorded {
		t.Fatalf("version 2 before its first start: %+v, want not recorded", ws)
	}
	began = time.Now().Add(-time.Second)
	waitFor(t, 30*time.Second, "version 2 serves", func() (bool, string) {
		mustInvoke(t, srv, "ws-a", nil, &out)
		return out.Version == "2", out.Version
	})
	second := waitRecordedAfter(t, srv, "ws-a", began)
	if second.Prefetches != 0 {
		t.Fatalf("version 2's record: %+v, want no prefetch yet", second)
	}

	// A file the record names is gone, then one changed: each cold start
	// still succeeds, skips the prefetch and records again.
	for _, c := range []struct {
		what string
		edit func(map[string]any)
	}{
		{"gone", func(f map[string]any) { f["path"] = f["path"].(string) + ".gone" }},
		{"changed", func(f map[string]any) { f["size"] = f["size"].(float64) + 1 }},
	} {
		editRecord(t, recordFile(t, srv, "ws-a", 2), c.edit)
		coldAgain(t, srv, "ws-a")
		began = time.Now().Add(-time.Second)
		mustInvoke(t, srv, "ws-a", nil, &out)
		if out.Version != "2" {
			t.Fatalf("file %s: served version %s", c.what, out.Version)
		}
		again := waitRecordedAfter(t, srv, "ws-a", began)
		if again.Prefetches != 0 || !again.RecordedAt.After(*second.RecordedAt) {
			t.Fatalf("file %s: %+v, want a new record without prefetches", c.what, again)
		}
		second = again
	}
	if !strings.Contains(srv.Logs(), "working set no longer matches") {
		t.Fatal("the server did not log why it recorded again")
	}

	// Another image (the Python base image alone instead of the host's
	// runtimes): a new version whose record names other layers.
	imaged := spec
	imaged.Image = "baton/python3"
	deploy(t, srv, "ws-a", imaged, v2)
	began = time.Now().Add(-time.Second)
	waitFor(t, 30*time.Second, "version 3 serves", func() (bool, string) {
		res := mustInvoke(t, srv, "ws-a", nil, &out)
		return res.Version == 3, strconv.Itoa(res.Version)
	})
	third := waitRecordedAfter(t, srv, "ws-a", began)
	if third.Prefetches != 0 {
		t.Fatalf("version 3's record: %+v, want no prefetch yet", third)
	}
	if r2, r3 := recordRoots(t, recordFile(t, srv, "ws-a", 2)), recordRoots(t, recordFile(t, srv, "ws-a", 3)); slices.Equal(r2, r3) {
		t.Fatalf("the record of the version on another image names the same roots %v", r3)
	}

	// prefetch: false: neither recorded nor prefetched.
	off := spec
	no := false
	off.Prefetch = &no
	deploy(t, srv, "ws-off", off, v1)
	mustInvoke(t, srv, "ws-off", nil, &out)
	coldAgain(t, srv, "ws-off")
	mustInvoke(t, srv, "ws-off", nil, &out)
	if ws := workingSetOf(t, srv, "ws-off"); ws.Recorded || ws.Summary != "off (prefetch: false)" {
		t.Fatalf("prefetch false: %+v", ws)
	}
	paths, _ := filepath.Glob(filepath.Join(srv.DataDir, "worker", "workingsets", "*.json"))
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		if strings.Contains(string(data), `"function":"ws-off"`) {
			t.Fatalf("a record of ws-off exists: %s", p)
		}
	}
}

// TestWorkingSetProcessSandboxes: without isolation a start reads the
// host's own, shared files, so nothing is recorded nor prefetched, and
// the function's view says so.
func TestWorkingSetProcessSandboxes(t *testing.T) {
	t.Parallel()
	requirePython(t)
	srv := startServer(t, "--sandbox", "process")
	spec := pySpec("handler")
	deploy(t, srv, "ws-proc", spec, copyDir(t, workingSetDir, nil))
	var out struct{ Version string }
	mustInvoke(t, srv, "ws-proc", nil, &out)
	coldAgain(t, srv, "ws-proc")
	mustInvoke(t, srv, "ws-proc", nil, &out)
	if ws := workingSetOf(t, srv, "ws-proc"); ws.Recorded || ws.Prefetches != 0 {
		t.Fatalf("process sandboxes: %+v, want nothing recorded or prefetched", ws)
	}
	if paths, _ := filepath.Glob(filepath.Join(srv.DataDir, "worker", "workingsets", "*.json")); len(paths) != 0 {
		t.Fatalf("process sandboxes stored working-set records: %v", paths)
	}
}

// TestWorkingSetServerOff: --prefetch=false on the server records nothing.
func TestWorkingSetServerOff(t *testing.T) {
	t.Parallel()
	requirePython(t)
	if os.Geteuid() != 0 {
		t.Skipf("container sandboxes need root (euid %d)", os.Geteuid())
	}
	srv := harness.Start(skipUnavailable{t}, harness.Options{Args: []string{"--sandbox", "container", "--prefetch=false"}})
	spec := pySpec("handler")
	deploy(t, srv, "ws-srv-off", spec, copyDir(t, workingSetDir, nil))
	var out struct{ Version string }
	mustInvoke(t, srv, "ws-srv-off", nil, &out)
	coldAgain(t, srv, "ws-srv-off")
	mustInvoke(t, srv, "ws-srv-off", nil, &out)
	if ws := workingSetOf(t, srv, "ws-srv-off"); ws.Recorded {
		t.Fatalf("server --prefetch=false: %+v, want not recorded", ws)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "worker", "workingsets")); !os.IsNotExist(err) {
		t.Fatalf("server --prefetch=false made its record directory (%v)", err)
	}
}

// TestWorkingSetSpecValidation: prefetch must be a boolean.
func TestWorkingSetSpecValidation(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--sandbox", "fake")
	body := []byte(`{"runtime":"python","handler":"app.handler","prefetch":"no","code":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}`)
	res := do(t, http.MethodPut, srv.URL+"/v1/functions/ws-bad", body, srv.AuthHeader())
	e := errorBody(t, res.Status, res.Body)
	if res.Status != http.StatusBadRequest || !strings.Contains(e.Message, "prefetch") {
		t.Fatalf("prefetch \"no\": HTTP %d %+v, want 400 naming prefetch", res.Status, e)
	}
	_, stderr, code := cli(t, srv, "deploy", "ws-bad", "--server", srv.URL, "--runtime", "python", "--handler", "app.handler",
		"--code", workingSetDir, "--prefetch=maybe")
	if code == 0 || !strings.Contains(stderr, "prefetch") {
		t.Fatalf("baton deploy --prefetch=maybe: exit %d, stderr %q", code, stderr)
	}
	// A valid false is kept and shown.
	spec := pySpec("handler")
	no := false
	spec.Prefetch = &no
	v := deploy(t, srv, "ws-good", spec, copyDir(t, workingSetDir, nil))
	if v.Spec.Prefetch == nil || *v.Spec.Prefetch {
		t.Fatalf("deployed spec prefetch %v, want false", v.Spec.Prefetch)
	}
}
