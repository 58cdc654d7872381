// Package transfer moves large intermediate data between functions
// directly from the worker that produced it to the worker that needs it
// (XDT): the producer's worker keeps the bytes (Store) and passes on a
// signed Ref instead; the receiver's worker verifies the Ref and pulls the
// bytes, checking their size and digest (Receive). The Ref travels in
// workflow state as a Marker, a small JSON object that nothing but Baton
// looks inside.
package transfer

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
)

// KeySize is the length of the cluster's shared HMAC key.
const KeySize = 32

// MarkerKey is the only key of a marker object.
const MarkerKey = "$baton.transfer"

// Ref names a buffer kept by a worker. Every field is covered by MAC.
type Ref struct {
	// Worker is the id of the worker that keeps the bytes, Addr its
	// worker API address ("" when the cluster is one process).
	Worker string `json:"worker"`
	Addr   string `json:"addr,omitempty"`
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	// Digest is the hex SHA-256 of the bytes.
	Digest string `json:"sha256"`
	// Expires is in Unix milliseconds (exact in a JSON number, which a
	// decoded workflow state holds as a float64).
	Expires int64 `json:"expires"`
	// App is the application whose functions may use the bytes.
	App string `json:"app"`
	// Pulls is how many pulls of the buffer this reference allows in all.
	Pulls int `json:"pulls"`
	// MAC is the hex HMAC-SHA256 of the fields above.
	MAC string `json:"mac"`
}

// Errors of references and pulls, classified for the API.
var (
	ErrForged      = errdefs.New(errdefs.Invalid, "transfer_ref_forged", "transfer reference is forged or altered")
	ErrExpired     = errdefs.New(errdefs.Invalid, "transfer_ref_expired", "transfer reference expired")
	ErrReplayed    = errdefs.New(errdefs.Conflict, "transfer_ref_replayed", "transfer reference was used more often than it allows")
	ErrWrongApp    = errdefs.New(errdefs.Invalid, "transfer_ref_wrong_app", "transfer reference belongs to another application")
	ErrSourceLost  = errdefs.New(errdefs.Unavailable, "transfer-source-lost", "the worker that kept the transferred data is gone, or no longer has it")
	ErrCorrupt     = errdefs.New(errdefs.Internal, "transfer_corrupt", "transferred data does not match its reference's size or digest")
	ErrFull        = errdefs.New(errdefs.Overloaded, "transfer_store_full", "the worker's transfer store is full")
	ErrNoTransfers = errdefs.New(errdefs.NotImplemented, "transfer_disabled", "this worker keeps no transfers")
)

// Signer signs and verifies references with the cluster's key.
type Signer struct{ key []byte }

// NewSigner returns a signer of key (KeySize bytes or more).
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < KeySize {
		return nil, fmt.Errorf("transfer key: %d bytes, need at least %d", len(key), KeySize)
	}
	return &Signer{key: bytes.Clone(key)}, nil
}

// mac is the HMAC of every field but MAC, each length-prefixed so that
// no two different references encode alike.
func (s *Signer) mac(r Ref) []byte {
	h := hmac.New(sha256.New, s.key)
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	num := func(v int64) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(v))
		field(b[:])
	}
	field([]byte("baton-transfer-v1"))
	field([]byte(r.Worker))
	field([]byte(r.Addr))
	field([]byte(r.ID))
	num(r.Size)
	field([]byte(r.Digest))
	num(r.Expires)
	field([]byte(r.App))
	num(int64(r.Pulls))
	return h.Sum(nil)
}

// Sign returns r with its MAC set.
func (s *Signer) Sign(r Ref) Ref {
	r.MAC = hex.EncodeToString(s.mac(r))
	return r
}

// Verify checks r's MAC, expiry and application (app "" skips the
// application check: the caller checks it elsewhere).
func (s *Signer) Verify(r Ref, app string, now time.Time) error {
	got, err := hex.DecodeString(r.MAC)
	if err != nil || !hmac.Equal(got, s.mac(r)) {
		return fmt.Errorf("reference %s from worker %s: %w", r.ID, r.Worker, ErrForged)
	}
	if now.UnixMilli() >= r.Expires {
		return fmt.Errorf("reference %s expired at %s: %w", r.ID, time.UnixMilli(r.Expires).UTC().Format(time.RFC3339), ErrExpired)
	}
	if app != "" && r.App != app {
		return fmt.Errorf("reference %s of app %q presented by app %q: %w", r.ID, r.App, app, ErrWrongApp)
	}
	if r.Pulls < 1 {
		return fmt.Errorf("reference %s allows no pull: %w", r.ID, ErrReplayed)
	}
	return nil
}

// WithPulls returns r allowing n pulls in all, signed again: how the
// workflow engine lets several receivers (fan-out) or several attempts
// (Retry) pull one buffer.
func (s *Signer) WithPulls(r Ref, n int) Ref {
	r.Pulls = n
	return s.Sign(r)
}

// Marker is r as the JSON value that stands for the data in workflow
// state: {"$baton.transfer": {...}}.
func Marker(r Ref) []byte {
	b, _ := json.Marshal(map[string]Ref{MarkerKey: r})
	return b
}

var markerPrefix = []byte(`{"` + MarkerKey + `":`)

// MayContain is a cheap test that b (JSON) may hold a marker somewhere.
func MayContain(b []byte) bool { return bytes.Contains(b, []byte(`"`+MarkerKey+`"`)) }

// ParseMarker reads b as one marker (the whole of b).
func ParseMarker(b []byte) (Ref, bool) {
	b = bytes.TrimSpace(b)
	if !bytes.HasPrefix(b, markerPrefix) {
		return Ref{}, false
	}
	var m map[string]Ref
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 {
		return Ref{}, false
	}
	r, ok := m[MarkerKey]
	return r, ok
}

// RefOf reads a decoded JSON value as a marker.
func RefOf(v any) (Ref, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return Ref{}, false
	}
	inner, ok := m[MarkerKey]
	if !ok {
		return Ref{}, false
	}
	b, err := json.Marshal(inner)
	if err != nil {
		return Ref{}, false
	}
	var r Ref
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return Ref{}, false
	}
	return r, true
}

// MarkerValue is r as a decoded JSON value (what RefOf reads).
func MarkerValue(r Ref) any {
	var v any
	_ = json.Unmarshal(Marker(r), &v)
	return v
}

// Contains reports whether v (decoded JSON) holds a marker anywhere.
func Contains(v any) bool {
	found := false
	Walk(v, func(Ref) bool { found = true; return false })
	return found
}

// Walk calls fn with each marker's reference in v, without copying v,
// until fn returns false.
func Walk(v any, fn func(Ref) bool) {
	walk(v, fn)
}

func walk(v any, fn func(Ref) bool) bool {
	if r, ok := RefOf(v); ok {
		return fn(r)
	}
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			if !walk(e, fn) {
				return false
			}
		}
	case []any:
		for _, e := range x {
			if !walk(e, fn) {
				return false
			}
		}
	}
	return true
}

// Replace returns v with every marker replaced by what fn returns for its
// reference; v is not modified.
func Replace(v any, fn func(Ref) (any, error)) (any, error) {
	if r, ok := RefOf(v); ok {
		return fn(r)
	}
	switch x := v.(type) {
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			ne, err := Replace(e, fn)
			if err != nil {
				return nil, err
			}
			if out == nil {
				out = make(map[string]any, len(x))
			}
			out[k] = ne
		}
		if out == nil {
			return x, nil
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			ne, err := Replace(e, fn)
			if err != nil {
				return nil, err
			}
			out[i] = ne
		}
		return out, nil
	}
	return v, nil
}

// Decode is how a buffer's bytes appear as a JSON value once resolved:
// the JSON they hold, or a string when they are not JSON (as the workflow
// engine reads a function's result).
func Decode(b []byte) any {
	var v any
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	return v
}
