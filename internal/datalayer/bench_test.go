package datalayer

import (
	"fmt"
	"testing"

	"github.com/baton-faas/baton/internal/cluster/clustertest"
)

// Local against global puts and gets of 1 KiB and 1 MiB values (the
// latter in the object store), through Layer as functions use it:
//
//	go test -run '^$' -bench . -benchtime 200x ./internal/datalayer/
func BenchmarkLayer(b *testing.B) {
	s := clustertest.Server(b)
	nc, _ := clustertest.Connect(b, s)
	l, err := Open(clustertest.Context(b), nc, Config{LocalBytes: 1 << 30, LocalAppBytes: 1 << 30}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 1 << 20} {
		v := val(size, 'v')
		name := fmt.Sprintf("%dKiB", size>>10)
		for _, scope := range []Scope{ScopeLocal, ScopeGlobal} {
			b.Run(fmt.Sprintf("put/%s/%s", scope, name), func(b *testing.B) {
				ctx := b.Context()
				b.SetBytes(int64(size))
				i := 0
				for b.Loop() {
					// A fresh key each time, as a step's output is.
					if err := l.Put(ctx, "bench", fmt.Sprintf("put/%s/%s/%d", scope, name, i), scope, v); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(fmt.Sprintf("get/%s/%s", scope, name), func(b *testing.B) {
				ctx := b.Context()
				key := fmt.Sprintf("get/%s/%s", scope, name)
				if err := l.Put(ctx, "bench", key, scope, v); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, _, err := l.Get(ctx, "bench", key, scope); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
