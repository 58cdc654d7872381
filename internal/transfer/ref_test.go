package transfer

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
)

func testSigner(t *testing.T, fill byte) *Signer {
	t.Helper()
	s, err := NewSigner(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func sampleRef(s *Signer) Ref {
	return s.Sign(Ref{Worker: "w1", Addr: "10.0.0.1:7070", ID: "abc", Size: 1 << 20, Digest: "00ff",
		Expires: t0.Add(time.Minute).UnixMilli(), App: "shop", Pulls: 1})
}

func TestNewSignerRefusesShortKey(t *testing.T) {
	if _, err := NewSigner(make([]byte, KeySize-1)); err == nil {
		t.Fatal("a 31-byte key was accepted")
	}
}

func TestVerifyAcceptsSigned(t *testing.T) {
	s := testSigner(t, 1)
	if err := s.Verify(sampleRef(s), "shop", t0); err != nil {
		t.Fatalf("a reference just signed does not verify: %v", err)
	}
}

func TestVerifyRefusesForgery(t *testing.T) {
	s := testSigner(t, 1)
	other := testSigner(t, 2)
	forged := sampleRef(other) // signed with another key
	if err := s.Verify(forged, "shop", t0); !errors.Is(err, ErrForged) {
		t.Fatalf("reference signed with another key: %v, want ErrForged", err)
	}
	garbage := sampleRef(s)
	garbage.MAC = "not hex"
	if err := s.Verify(garbage, "shop", t0); !errors.Is(err, ErrForged) {
		t.Fatalf("reference with a MAC that is not hex: %v, want ErrForged", err)
	}
	none := sampleRef(s)
	none.MAC = ""
	if err := s.Verify(none, "shop", t0); !errors.Is(err, ErrForged) {
		t.Fatalf("reference without MAC: %v, want ErrForged", err)
	}
}

func TestVerifyRefusesEachAlteredField(t *testing.T) {
	s := testSigner(t, 1)
	alter := map[string]func(*Ref){
		"worker":  func(r *Ref) { r.Worker = "w2" },
		"addr":    func(r *Ref) { r.Addr = "10.0.0.2:7070" },
		"id":      func(r *Ref) { r.ID = "abd" },
		"size":    func(r *Ref) { r.Size++ },
		"digest":  func(r *Ref) { r.Digest = "00fe" },
		"expires": func(r *Ref) { r.Expires += time.Hour.Milliseconds() },
		"app":     func(r *Ref) { r.App = "other" },
		"pulls":   func(r *Ref) { r.Pulls = 100 },
		// Moving bytes between adjacent fields must not verify either.
		"boundary": func(r *Ref) { r.Worker, r.Addr = "w110.0.0.1", ":7070" },
	}
	for name, f := range alter {
		t.Run(name, func(t *testing.T) {
			r := sampleRef(s)
			f(&r)
			err := s.Verify(r, "", t0)
			if !errors.Is(err, ErrForged) {
				t.Fatalf("altered %s: %v, want ErrForged", name, err)
			}
			if c, code := errdefs.Classify(err); c != errdefs.Invalid || code != "transfer_ref_forged" {
				t.Fatalf("altered %s classified %s/%s", name, c, code)
			}
		})
	}
}

func TestVerifyRefusesExpired(t *testing.T) {
	s := testSigner(t, 1)
	r := sampleRef(s)
	if err := s.Verify(r, "shop", t0.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("at its expiry: %v, want ErrExpired", err)
	}
	if err := s.Verify(r, "shop", t0.Add(time.Minute-time.Millisecond)); err != nil {
		t.Fatalf("just before its expiry: %v", err)
	}
}

func TestVerifyRefusesOtherApp(t *testing.T) {
	s := testSigner(t, 1)
	err := s.Verify(sampleRef(s), "intruder", t0)
	if !errors.Is(err, ErrWrongApp) {
		t.Fatalf("presented by another app: %v, want ErrWrongApp", err)
	}
}

func TestWithPullsSignsAgain(t *testing.T) {
	s := testSigner(t, 1)
	r := s.WithPulls(sampleRef(s), 3)
	if r.Pulls != 3 {
		t.Fatalf("pulls %d", r.Pulls)
	}
	if err := s.Verify(r, "shop", t0); err != nil {
		t.Fatalf("a reference shared for 3 pulls does not verify: %v", err)
	}
}

func TestMarkerRoundTrips(t *testing.T) {
	s := testSigner(t, 1)
	r := sampleRef(s)
	m := Marker(r)
	got, ok := ParseMarker(m)
	if !ok || got != r {
		t.Fatalf("ParseMarker(Marker(r)) = %+v, %v", got, ok)
	}
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		t.Fatal(err)
	}
	if got, ok := RefOf(v); !ok || got != r {
		t.Fatalf("RefOf(decoded marker) = %+v, %v", got, ok)
	}
	if _, ok := ParseMarker([]byte(`{"$baton.transfer":{"id":"x"},"other":1}`)); ok {
		t.Fatal("an object with a second key was read as a marker")
	}
	if _, ok := ParseMarker([]byte(`{"a":1}`)); ok {
		t.Fatal("a plain object was read as a marker")
	}
	nested := map[string]any{"items": []any{1.0, 2.0}, "blob": MarkerValue(r)}
	if !Contains(nested) || Contains(map[string]any{"x": 1.0}) {
		t.Fatal("Contains does not find the nested marker, or finds one in plain data")
	}
	out, err := Replace(nested, func(Ref) (any, error) { return "data", nil })
	if err != nil {
		t.Fatal(err)
	}
	if out.(map[string]any)["blob"] != "data" || !Contains(nested) {
		t.Fatalf("Replace: %v (and the input must be unchanged)", out)
	}
}

// A marker in a workflow's state is decoded JSON (numbers as float64): a
// reference read back from it must still verify.
func TestMarkerSurvivesDecodedState(t *testing.T) {
	s := testSigner(t, 1)
	r := s.Sign(Ref{Worker: "w1", ID: "id", Size: 123456789, Digest: "ab", Expires: t0.Add(time.Minute + 7*time.Millisecond).UnixMilli(), App: "a", Pulls: 7})
	var state any
	if err := json.Unmarshal([]byte(`{"x":`+string(Marker(r))+`}`), &state); err != nil {
		t.Fatal(err)
	}
	got, ok := RefOf(state.(map[string]any)["x"])
	if !ok {
		t.Fatal("marker not found in decoded state")
	}
	if err := s.Verify(got, "a", t0); err != nil {
		t.Fatalf("reference read from decoded state: %v", err)
	}
}
