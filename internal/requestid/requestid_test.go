package requestid

import "testing"

func TestNewIsValidAndFresh(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := New()
		if !Valid(id) || seen[id] {
			t.Fatalf("id %q: valid %v, seen before %v", id, Valid(id), seen[id])
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "x", "../../etc/passwd", "0000000-0000-4000-8000-000000000000", "ABCDEF00-0000-4000-8000-000000000000", "00000000_0000-4000-8000-000000000000"} {
		if Valid(bad) {
			t.Errorf("%q passed as an id", bad)
		}
	}
}
