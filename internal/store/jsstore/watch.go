package jsstore

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// WatchFunctions sends the name of every function that exists when it is
// called and of every function put or deleted after that, in the bucket's
// order, until ctx ends or the watch breaks (the channel then closes).
// Receivers read the function's current definition for each name, so that
// whatever they apply last is what the store holds last.
func (s *Store) WatchFunctions(ctx context.Context) (<-chan string, error) {
	w, err := s.fns.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("watch functions: %w", err)
	}
	out := make(chan string, 64)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // the end of the initial values
					continue
				}
				select {
				case out <- e.Key():
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
