//go:build linux

package pid1

import (
	"reflect"
	"testing"
)

func TestExecSpecRoundTrip(t *testing.T) {
	in := ExecSpec{Args: []string{"/bin/sh", "-c", "echo $X", ""}, Env: []string{"X=a=b", "EMPTY="}, Dir: "/var/task", UID: 1000, GID: 1001}
	b, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := UnmarshalExecSpec(b)
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v %v, want %+v", out, err, in)
	}
	for _, bad := range []ExecSpec{{Args: []string{"a\x00b"}}, {Args: []string{"a"}, Dir: "/x\x00"}, {Args: []string{"a"}, Env: []string{"A=\x00"}}} {
		if _, err := bad.Marshal(); err == nil {
			t.Errorf("%+v: a NUL byte was accepted", bad)
		}
	}
	for _, b := range [][]byte{nil, []byte("1000\x001000\x00/\x00"), []byte("1000\x001000\x00/\x005\x00a\x00")} {
		if _, err := UnmarshalExecSpec(b); err == nil {
			t.Errorf("%q: decoded", b)
		}
	}
}

func TestPrepareEnv(t *testing.T) {
	got, err := prepareEnv([]string{"A=1", "HOME=", "A=2", "B=x"}, 65534)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=2", "B=x", "HOME=" + userHome(65534)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("env %q, want %q", got, want)
	}
	if _, err := prepareEnv([]string{"NOEQUALS"}, 0); err == nil {
		t.Error("a variable without '=' was accepted")
	}
}
