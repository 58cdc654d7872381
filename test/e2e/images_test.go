package e2e

import (
	"bytes"
	"errors"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/baton-faas/baton/client"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/test/harness"
)

// TestImages imports a docker-save archive, lists it next to the base
// images, refuses to delete it while a function names it, and deletes it
// afterwards.
func TestImages(t *testing.T) {
	requirePython(t)
	t.Parallel()
	srv := harness.Start(t, harness.Options{})

	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag("example.test/tools:1")
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := tarball.Write(ref, img, &archive); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tools.tar")
	if err := os.WriteFile(path, archive.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(harness.Binary(t), "image", "import", path, "--name", "tools:1", "--server", srv.URL, "--token", srv.Token).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "imported image tools:1 (2 layers") {
		t.Fatalf("image import: %v\n%s", err, out)
	}
	out, err = exec.Command(harness.Binary(t), "image", "ls", "--server", srv.URL, "--token", srv.Token).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "tools:1") || !strings.Contains(string(out), "baton/python3") {
		t.Fatalf("image ls: %v\n%s", err, out)
	}

	// A function may name the image; an unknown image is refused.
	spec := function.Spec{Runtime: function.RuntimePython, Handler: "app.echo", Image: "tools:1"}
	deploy(t, srv, "uses-tools", spec, pyDir)
	spec.Image = "missing:1"
	_, err = srv.Client.Deploy(ctx(t), "uses-missing", client.DeployRequest{FunctionSpec: apiv1.FunctionSpec(spec), Code: zipDir(t, pyDir)})
	assertAPIError(t, err, http.StatusBadRequest, `image "missing:1" not found`)

	err = srv.Client.RemoveImage(ctx(t), "tools:1")
	assertAPIError(t, err, http.StatusConflict, "uses-tools")
	if err := srv.Client.Delete(ctx(t), "uses-tools"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client.RemoveImage(ctx(t), "tools:1"); err != nil {
		t.Fatalf("remove unused image: %v", err)
	}
	assertAPIError(t, srv.Client.RemoveImage(ctx(t), "tools:1"), http.StatusNotFound, "tools:1")

	// Bad archives and names are 400s.
	_, err = srv.Client.ImportImage(ctx(t), "junk:1", strings.NewReader("this is not a tar"))
	assertAPIError(t, err, http.StatusBadRequest, "junk:1")
	_, err = srv.Client.ImportImage(ctx(t), "Bad_Name", bytes.NewReader(archive.Bytes()))
	assertAPIError(t, err, http.StatusBadRequest, "Bad_Name")
}

// assertAPIError checks that err is an API error with the status and a
// message mentioning want.
func assertAPIError(t *testing.T, err error, status int, want string) {
	t.Helper()
	var apiErr *client.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want HTTP %d", err, status)
	}
	if apiErr.Status != status || !strings.Contains(apiErr.Body.Message, want) {
		t.Fatalf("HTTP %d %q, want HTTP %d mentioning %q", apiErr.Status, apiErr.Body.Message, status, want)
	}
}
