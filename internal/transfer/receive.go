package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Source streams the bytes of a buffer kept by another worker (the worker
// API's Pull). app is the application of the receiver.
type Source interface {
	Pull(ctx context.Context, r Ref, app string) (io.ReadCloser, error)
}

// ReadVerified reads exactly r.Size bytes from rd and checks their
// digest, hashing as the bytes arrive (so that hashing overlaps the wait
// for the next chunk).
func ReadVerified(r Ref, rd io.Reader) ([]byte, error) {
	if r.Size < 0 {
		return nil, fmt.Errorf("buffer %s: negative size: %w", r.ID, ErrCorrupt)
	}
	data := make([]byte, r.Size)
	h := sha256.New()
	n := 0
	for n < len(data) {
		m, err := rd.Read(data[n:])
		h.Write(data[n : n+m])
		n += m
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			if n < len(data) {
				return nil, fmt.Errorf("buffer %s: the stream ended after %d of %d bytes: %w", r.ID, n, r.Size, ErrCorrupt)
			}
			break
		}
		return nil, fmt.Errorf("buffer %s: %w", r.ID, err)
	}
	var one [1]byte
	if m, _ := rd.Read(one[:]); m > 0 {
		return nil, fmt.Errorf("buffer %s: more than %d bytes received: %w", r.ID, r.Size, ErrCorrupt)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != r.Digest {
		return nil, fmt.Errorf("buffer %s: received bytes whose sha256 is %s, the reference says %s: %w", r.ID, got, r.Digest, ErrCorrupt)
	}
	return data, nil
}
