package assemble

import (
	"strings"
	"testing"
)

// --no-auth is for loopback only: every address other hosts may reach is
// refused unless the override is given; with a token anything goes.
func TestCheckNoAuthListen(t *testing.T) {
	cases := []struct {
		listen   string
		loopback bool
	}{
		{"127.0.0.1:0", true},
		{"127.9.9.9:8080", true},
		{"[::1]:80", true},
		{"localhost:8080", true},
		{":8080", false},
		{"0.0.0.0:1", false},
		{"[::]:80", false},
		{"10.1.2.3:80", false},
		{"192.168.0.7:8080", false},
		{"api.example.org:443", false},
	}
	for _, tc := range cases {
		t.Run(tc.listen, func(t *testing.T) {
			got, err := IsLoopbackListen(tc.listen)
			if err != nil || got != tc.loopback {
				t.Fatalf("IsLoopbackListen(%q) = %v, %v; want %v", tc.listen, got, err, tc.loopback)
			}
			if err := CheckNoAuthListen(tc.listen, false, false); err != nil {
				t.Errorf("with a token: %v", err)
			}
			err = CheckNoAuthListen(tc.listen, true, false)
			switch {
			case tc.loopback && err != nil:
				t.Errorf("--no-auth on loopback: %v", err)
			case !tc.loopback && (err == nil || !strings.Contains(err.Error(), "--no-auth") ||
				!strings.Contains(err.Error(), tc.listen) || !strings.Contains(err.Error(), "--"+NoAuthOnNetworkFlag)):
				t.Errorf("--no-auth off loopback: %v; want a refusal naming --no-auth, the address and the override", err)
			}
			if err := CheckNoAuthListen(tc.listen, true, true); err != nil {
				t.Errorf("--no-auth with the override: %v", err)
			}
		})
	}
	for _, bad := range []string{"8080", "", "127.0.0.1"} {
		if err := CheckNoAuthListen(bad, true, false); err == nil || !strings.Contains(err.Error(), "--listen") {
			t.Errorf("CheckNoAuthListen(%q): %v; want an error naming --listen", bad, err)
		}
	}
}
