// Package requestid makes and checks invocation ids: random UUIDs
// (version 4), the shape Lambda request ids have and runtime clients
// expect.
package requestid

import (
	"crypto/rand"
	"fmt"
)

// New returns a fresh id.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Valid says whether id has the shape New gives (lower-case hex in the
// 8-4-4-4-12 groups), so that it can name a key or a file safely.
func Valid(id string) bool {
	if len(id) != 36 {
		return false
	}
	for i, c := range id {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case (c < '0' || c > '9') && (c < 'a' || c > 'f'):
			return false
		}
	}
	return true
}
