package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/baton-faas/baton/internal/errdefs"
)

// DefaultThreshold is the result size above which a worker keeps the
// bytes and passes a reference on.
const DefaultThreshold = 256 << 10

// ExchangeConfig configures a worker's Exchange.
type ExchangeConfig struct {
	// Worker and Addr identify this worker in its references.
	Worker, Addr string
	// Threshold: results larger than this are kept (0: never).
	Threshold int64
	Signer    *Signer
	Store     *Store
	// Peers pulls buffers that other workers keep (nil: a reference to
	// another worker is refused as lost).
	Peers  Source
	Logger *slog.Logger
	Now    func() time.Time
}

// Exchange is a worker's side of direct transfers: it keeps large results
// (Keep), serves its buffers to other workers (Serve), and turns the
// references an invocation carries back into bytes (Fetch, Resolve).
type Exchange struct {
	cfg ExchangeConfig
	log *slog.Logger
}

// NewExchange returns an exchange; Signer and Store are required.
func NewExchange(cfg ExchangeConfig) (*Exchange, error) {
	if cfg.Signer == nil || cfg.Store == nil {
		return nil, errors.New("transfer exchange: a signer and a store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Exchange{cfg: cfg, log: cfg.Logger}, nil
}

// Signer is the exchange's signer.
func (x *Exchange) Signer() *Signer { return x.cfg.Signer }

// Store is the exchange's store.
func (x *Exchange) Store() *Store { return x.cfg.Store }

// Keep keeps data for app when it is larger than the threshold and
// returns its reference (one pull allowed). ok is false when data stays
// inline: small enough, transfers disabled, or no room (logged).
func (x *Exchange) Keep(app string, data []byte) (Ref, bool) {
	if x.cfg.Threshold <= 0 || int64(len(data)) <= x.cfg.Threshold {
		return Ref{}, false
	}
	k, err := x.cfg.Store.Put(app, data)
	if err != nil {
		x.log.Warn("result passed inline: the transfer store has no room", "app", app, "size", len(data), "err", err)
		return Ref{}, false
	}
	r := Ref{Worker: x.cfg.Worker, Addr: x.cfg.Addr, ID: k.ID, Size: k.Size, Digest: k.Digest,
		Expires: k.Expires.UnixMilli(), App: app, Pulls: 1}
	return x.cfg.Signer.Sign(r), true
}

// verify checks r for app, logging a refusal.
func (x *Exchange) verify(r Ref, app, who string) error {
	if err := x.cfg.Signer.Verify(r, app, x.cfg.Now()); err != nil {
		_, code := errdefs.Classify(err)
		x.log.Warn("transfer reference refused", "code", code, "buffer", r.ID, "source", r.Worker, "app", app, "by", who, "err", err)
		return err
	}
	return nil
}

// Serve is one pull of a buffer of this worker, for a receiver of app
// (the worker API's Pull and the local hand-off both come here).
func (x *Exchange) Serve(r Ref, app string) (*Pull, error) {
	if err := x.verify(r, app, "serve"); err != nil {
		return nil, err
	}
	if r.Worker != x.cfg.Worker {
		return nil, fmt.Errorf("buffer %s is kept by worker %s, not %s: %w", r.ID, r.Worker, x.cfg.Worker, ErrSourceLost)
	}
	p, err := x.cfg.Store.Take(r)
	if err != nil {
		_, code := errdefs.Classify(err)
		x.log.Warn("transfer pull refused", "code", code, "buffer", r.ID, "app", app, "err", err)
		return nil, err
	}
	return p, nil
}

// Fetch returns the bytes r names for a receiver of app: a hand-off of
// this worker's own buffer, or a pull from the worker that keeps it,
// checked against r's size and digest (see the hand-off for memory).
func (x *Exchange) Fetch(ctx context.Context, r Ref, app string) ([]byte, error) {
	if err := x.verify(r, app, "fetch"); err != nil {
		return nil, err
	}
	if r.Worker == x.cfg.Worker {
		p, err := x.Serve(r, app)
		if err != nil {
			return nil, err
		}
		defer p.Close()
		if b := p.Bytes(); b != nil {
			// The very bytes this process hashed when it kept them, never
			// out of its memory: only their size is checked. Bytes that
			// crossed a boundary (a spilled file, the network) are hashed
			// again on receipt.
			if int64(len(b)) != r.Size {
				return nil, fmt.Errorf("buffer %s: %d bytes kept, the reference says %d: %w", r.ID, len(b), r.Size, ErrCorrupt)
			}
			return b, nil
		}
		rc, err := p.Open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return ReadVerified(r, rc)
	}
	if x.cfg.Peers == nil {
		return nil, fmt.Errorf("buffer %s is kept by worker %s, which this worker cannot reach: %w", r.ID, r.Worker, ErrSourceLost)
	}
	rc, err := x.cfg.Peers.Pull(ctx, r, app)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return ReadVerified(r, rc)
}

// Resolve turns an invocation's payload back into what the function
// must see: a payload that is one marker becomes the bytes it names; a
// JSON payload with markers inside gets each replaced by the JSON it
// names. Any other payload is returned as it is.
func (x *Exchange) Resolve(ctx context.Context, payload []byte, app string) ([]byte, error) {
	return ResolvePayload(ctx, payload, func(ctx context.Context, r Ref) ([]byte, error) {
		return x.Fetch(ctx, r, app)
	})
}

// ResolvePayload is Resolve with fetch doing the pulls.
func ResolvePayload(ctx context.Context, payload []byte, fetch func(context.Context, Ref) ([]byte, error)) ([]byte, error) {
	if !MayContain(payload) {
		return payload, nil
	}
	if r, ok := ParseMarker(payload); ok {
		return fetch(ctx, r)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return payload, nil // not JSON: nothing of Baton's inside
	}
	out, err := Replace(v, func(r Ref) (any, error) {
		b, err := fetch(ctx, r)
		if err != nil {
			return nil, err
		}
		if json.Valid(b) {
			return json.RawMessage(b), nil
		}
		return string(b), nil
	})
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("payload with transferred data: %w", err)
	}
	return b, nil
}
