package controller

import (
	"bytes"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/transfer"
)

// Sharing a reference among receivers signs it again with more pulls;
// a reference that does not verify (forged, altered) is never signed
// again, so the engine cannot launder one.
func TestShareSignsOnlyGenuineReferences(t *testing.T) {
	signer, err := transfer.NewSigner(bytes.Repeat([]byte{5}, transfer.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	wt := WorkflowTransfers{Signer: signer}
	genuine := signer.Sign(transfer.Ref{Worker: "w", ID: "a", Size: 1, Digest: "d", App: "app", Pulls: 1,
		Expires: time.Now().Add(time.Minute).UnixMilli()})
	forged := genuine
	forged.ID, forged.Pulls = "b", 50
	item := func(r transfer.Ref) any { return map[string]any{"blob": transfer.MarkerValue(r)} }
	out := wt.Share([]any{item(genuine), item(genuine), item(forged)}, 2)
	pulls := func(v any) transfer.Ref {
		r, ok := transfer.RefOf(v.(map[string]any)["blob"])
		if !ok {
			t.Fatalf("no reference in %v", v)
		}
		return r
	}
	for i := range 2 {
		r := pulls(out[i])
		if r.Pulls != 4 {
			t.Fatalf("receiver %d: %d pulls, want 2 receivers × 2 attempts", i, r.Pulls)
		}
		if err := signer.Verify(r, "app", time.Now()); err != nil {
			t.Fatalf("receiver %d: the shared reference does not verify: %v", i, err)
		}
	}
	if r := pulls(out[2]); r != forged {
		t.Fatalf("the forged reference was changed: %+v", r)
	}
	if err := signer.Verify(pulls(out[2]), "app", time.Now()); err == nil {
		t.Fatal("the forged reference verifies after sharing")
	}
}
