package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

const codeLayerDir = "testdata/codelayer"

// codeResult is what testdata/codelayer's handler reports.
type codeResult struct {
	TaskRoot string
	Version  string
	Pidns    string
	Listing  []string
	Writes   map[string]string
	Mount    string
}

// hostMount is one line of the test's /proc/self/mountinfo.
type hostMount struct{ point, dev, fstype, source string }

// hostMountsUnder lists the mounts at or below dir.
func hostMountsUnder(t *testing.T, dir string) []hostMount {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []hostMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		left, right, _ := strings.Cut(sc.Text(), " - ")
		l, r := strings.Fields(left), strings.Fields(right)
		if len(l) < 5 || len(r) < 2 {
			continue
		}
		if l[4] == dir || strings.HasPrefix(l[4], dir+"/") {
			out = append(out, hostMount{point: l[4], dev: l[2], fstype: r[0], source: r[1]})
		}
	}
	return out
}

// TestCodeLayers: with container sandboxes a version's code is an EROFS
// layer built once per host, mounted once and shown read-only at
// /var/task/<hex> in every sandbox that runs it; a version deployed while a
// sandbox runs appears in it; nothing stays mounted after the server; the
// layers survive a restart and are not built again.
func TestCodeLayers(t *testing.T) {
	t.Parallel()
	srv := startContainerServer(t)
	v1 := copyDir(t, codeLayerDir, nil)
	v2 := copyDir(t, codeLayerDir, map[string]string{"VERSION": "2\n"})
	spec := func(app string) function.Spec {
		s := pySpec("code")
		s.App, s.IdleTimeoutSeconds = app, 600
		return s
	}
	deploy(t, srv, "cl-a", spec("cl-one"), v1)
	deploy(t, srv, "cl-keep", spec("cl-one"), v1)
	deploy(t, srv, "cl-b", spec("cl-two"), v1)
	var a1, keep, b1 codeResult
	mustInvoke(t, srv, "cl-a", nil, &a1)
	mustInvoke(t, srv, "cl-keep", nil, &keep)
	mustInvoke(t, srv, "cl-b", nil, &b1)
	t.Logf("cl-a: %+v", a1)

	hex1 := path.Base(a1.TaskRoot)
	if a1.Version != "1" || b1.Version != "1" || path.Dir(a1.TaskRoot) != "/var/task" || b1.TaskRoot != a1.TaskRoot {
		t.Fatalf("same code in two apps: cl-a %+v, cl-b %+v; want version 1 at one /var/task/<hex>", a1, b1)
	}
	if a1.Pidns == b1.Pidns || a1.Pidns != keep.Pidns {
		t.Fatalf("sandboxes: cl-a %s, cl-keep %s, cl-b %s; want one per app", a1.Pidns, keep.Pidns, b1.Pidns)
	}
	for _, r := range []codeResult{a1, b1} {
		if !slices.Equal(r.Listing, []string{hex1}) {
			t.Errorf("/var/task lists %v, want only %s", r.Listing, hex1)
		}
		for p, res := range r.Writes {
			if res != "EROFS" {
				t.Errorf("writing %s in the sandbox: %s, want EROFS", p, res)
			}
		}
		if !strings.HasPrefix(r.Mount, "erofs ") || !slices.Contains(strings.Split(strings.Fields(r.Mount)[1], ","), "ro") {
			t.Errorf("the code is mounted %q in the sandbox, want a read-only erofs mount", r.Mount)
		}
	}

	// On the host: the layer file is mounted once (one file system), and
	// each sandbox's task view binds that mount.
	views := filepath.Join(srv.DataDir, "images", "views")
	var binds []hostMount
	for _, m := range hostMountsUnder(t, views) {
		if filepath.Base(m.point) == hex1 {
			binds = append(binds, m)
		}
	}
	if len(binds) != 2 {
		t.Fatalf("binds of the code layer in the sandboxes' views: %+v, want 2", binds)
	}
	var layerMounts []hostMount
	devs := map[string]bool{}
	for _, m := range hostMountsUnder(t, srv.DataDir) {
		if m.fstype == "erofs" && m.source == binds[0].source {
			devs[m.dev] = true
			if strings.HasPrefix(m.point, filepath.Join(srv.DataDir, "images", "mnt")+"/") {
				layerMounts = append(layerMounts, m)
			}
		}
	}
	if len(layerMounts) != 1 || len(devs) != 1 {
		t.Errorf("code layer %s: mounts %+v, %d file systems; want one mount, one file system", binds[0].source, layerMounts, len(devs))
	}
	if !strings.HasPrefix(binds[0].source, filepath.Join(srv.DataDir, "images", "layers")+"/") {
		t.Errorf("code layer file %s is not in the image store", binds[0].source)
	}

	// A new version while the sandbox runs (cl-keep holds it).
	deploy(t, srv, "cl-a", spec("cl-one"), v2)
	var a2, b2 codeResult
	mustInvoke(t, srv, "cl-a", nil, &a2)
	if a2.Version != "2" || a2.Pidns != a1.Pidns || a2.TaskRoot == a1.TaskRoot {
		t.Fatalf("after deploying version 2: %+v; want version 2 in the same sandbox (%s) at a new path", a2, a1.Pidns)
	}
	hex2 := path.Base(a2.TaskRoot)
	if want := []string{hex1, hex2}; !slices.Equal(a2.Listing, sortedStrings(want)) {
		t.Errorf("/var/task of cl-one lists %v, want %v", a2.Listing, sortedStrings(want))
	}
	mustInvoke(t, srv, "cl-b", nil, &b2)
	if !slices.Equal(b2.Listing, []string{hex1}) {
		t.Errorf("cl-two's /var/task lists %v: it sees another app's code", b2.Listing)
	}
	if !strings.Contains(srv.Logs(), "code layer built") {
		t.Fatalf("the server log says nothing about building code layers; the restart check below would prove nothing")
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	checkNothingMounted(t, srv.DataDir)

	// The layers survive a restart: the code is not fetched or built again.
	srv2 := harness.Start(skipUnavailable{t}, harness.Options{DataDir: srv.DataDir, Args: []string{"--sandbox", "container"}})
	var a3 codeResult
	mustInvoke(t, srv2, "cl-a", nil, &a3)
	if a3.Version != "2" || a3.TaskRoot != a2.TaskRoot {
		t.Errorf("after a restart: %+v, want version 2 at %s", a3, a2.TaskRoot)
	}
	if strings.Contains(srv2.Logs(), "code layer built") {
		t.Errorf("a code layer stored before the restart was built again")
	}
	if err := srv2.Stop(); err != nil {
		t.Fatal(err)
	}
	checkNothingMounted(t, srv.DataDir)
}

// TestCodeLayersGoWithTheSandbox: once an app's last instance is gone, its
// sandbox's code view and the layer mounts are gone too.
func TestCodeLayersGoWithTheSandbox(t *testing.T) {
	t.Parallel()
	// Without a kept zygote: the sandbox is to go with its last instance.
	srv := startContainerServer(t, "--zygote-keep=0")
	s := pySpec("code")
	s.IdleTimeoutSeconds = 1
	deploy(t, srv, "cl-idle", s, codeLayerDir)
	var r codeResult
	mustInvoke(t, srv, "cl-idle", nil, &r)
	images := filepath.Join(srv.DataDir, "images")
	if len(hostMountsUnder(t, filepath.Join(images, "views"))) == 0 {
		t.Fatal("no task view mounted while the function runs: the check below would prove nothing")
	}
	waitFor(t, settle, "the idle instance's sandbox should leave nothing mounted", func() (bool, string) {
		m := hostMountsUnder(t, images)
		return len(m) == 0, fmt.Sprintf("%+v", m)
	})
	if ents, _ := os.ReadDir(filepath.Join(images, "views")); len(ents) > 0 {
		t.Errorf("task views left after the sandbox: %v", ents)
	}
	// The next cold start attaches the stored layer again.
	mustInvoke(t, srv, "cl-idle", nil, &r)
	if r.Version != "1" {
		t.Errorf("after the sandbox was recreated: %+v", r)
	}
}

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// checkNothingMounted: after the server, nothing is mounted under its data
// directory and no task view or unpacked code is left.
func checkNothingMounted(t *testing.T, dataDir string) {
	t.Helper()
	if m := hostMountsUnder(t, dataDir); len(m) > 0 {
		t.Errorf("mounts under the data directory outlive the server: %+v", m)
	}
	for _, d := range []string{filepath.Join(dataDir, "images", "views"), filepath.Join(dataDir, "worker", "code")} {
		ents, err := os.ReadDir(d)
		if err != nil && !os.IsNotExist(err) {
			t.Error(err)
		}
		if len(ents) > 0 {
			t.Errorf("%s is not empty after the server: %v", d, ents)
		}
	}
}
