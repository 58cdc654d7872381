package trace

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The shipped mini trace is what the generator writes, so it can be
// regenerated after a change instead of being edited by hand.
func TestMiniTraceRegenerates(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the generator")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	dir := t.TempDir()
	if out, err := exec.Command(goTool, "run", "./testdata/gen", "-out", dir).CombinedOutput(); err != nil {
		t.Fatalf("generator: %v\n%s", err, out)
	}
	for _, name := range []string{invName, durName, memName} {
		want, err := os.ReadFile(filepath.Join(miniDir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output: run go generate ./internal/bench/trace", name)
		}
	}
}
