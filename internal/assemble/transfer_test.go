package assemble

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/baton-faas/baton/internal/store/natsd"
	"github.com/baton-faas/baton/internal/transfer"
)

// The server's key is made once, private to its owner, and read back on
// the next start.
func TestServerTransferKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := serverTransferKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, transferKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := serverTransferKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != transfer.KeySize || !bytes.Equal(k1, k2) {
		t.Fatal("the second start read another key")
	}
	if err := os.WriteFile(filepath.Join(dir, transferKeyFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := serverTransferKey(dir); err == nil {
		t.Fatal("a truncated key file was accepted")
	}
}

// Nodes that start at once agree on one cluster key.
func TestClusterTransferKeyAgrees(t *testing.T) {
	ns, err := natsd.Start(context.Background(), natsd.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	keys := make([][]byte, 4)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			nc, err := ns.Connect()
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			if keys[i], err = clusterTransferKey(context.Background(), nc, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range keys {
		if len(keys[i]) != transfer.KeySize || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("node %d has another key than node 0", i)
		}
	}
}
