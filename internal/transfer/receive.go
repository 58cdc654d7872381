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

// Check verifies that data is what r names (size and digest).
func Check(r Ref, data []byte) error {
	if int64(len(data)) != r.Size {
		return fmt.Errorf("buffer %s: received %d bytes, the reference says %d: %w", r.ID, len(data), r.Size, ErrCorrupt)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != r.Digest {
		return fmt.Errorf("buffer %s: received bytes whose sha256 is %x, the reference says %s: %w", r.ID, sum, r.Digest, ErrCorrupt)
	}
	return nil
}

// ReadVerified reads exactly r.Size bytes from rd and checks their digest.
func ReadVerified(r Ref, rd io.Reader) ([]byte, error) {
	if r.Size < 0 {
		return nil, fmt.Errorf("buffer %s: negative size: %w", r.ID, ErrCorrupt)
	}
	data := make([]byte, r.Size)
	if _, err := io.ReadFull(rd, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("buffer %s: the stream ended before %d bytes: %w", r.ID, r.Size, ErrCorrupt)
		}
		return nil, fmt.Errorf("buffer %s: %w", r.ID, err)
	}
	var one [1]byte
	if n, _ := rd.Read(one[:]); n > 0 {
		return nil, fmt.Errorf("buffer %s: more than %d bytes received: %w", r.ID, r.Size, ErrCorrupt)
	}
	if err := Check(r, data); err != nil {
		return nil, err
	}
	return data, nil
}
