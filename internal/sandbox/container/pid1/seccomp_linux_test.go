//go:build linux

package pid1

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSeccompProgram(t *testing.T) {
	prog, err := seccompProgram()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]string{}
	for _, d := range deniedSyscalls {
		if prev, ok := seen[d.nr]; ok {
			t.Errorf("%s and %s share number %d", prev, d.name, d.nr)
		}
		seen[d.nr] = d.name
	}
	// Run the program on a few system calls with a tiny interpreter of
	// the instructions it uses.
	for _, tc := range []struct {
		nr   uint32
		arch uint32
		arg0 uint32
		want uint32
	}{
		{unix.SYS_MOUNT, archAudit, 0, unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{unix.SYS_PTRACE, archAudit, 0, unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{unix.SYS_READ, archAudit, 0, unix.SECCOMP_RET_ALLOW},
		{unix.SYS_READ, 0x40000003, 0, unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)}, // i386
		{unix.SYS_CLONE, archAudit, uint32(unix.SIGCHLD), unix.SECCOMP_RET_ALLOW},
		{unix.SYS_CLONE, archAudit, unix.CLONE_NEWUSER | uint32(unix.SIGCHLD), unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{unix.SYS_CLONE3, archAudit, 0, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
	} {
		if got := runBPF(t, prog, tc.nr, tc.arch, tc.arg0); got != tc.want {
			t.Errorf("syscall %d arch %#x arg0 %#x: %#x, want %#x", tc.nr, tc.arch, tc.arg0, got, tc.want)
		}
	}
}

func runBPF(t *testing.T, prog []unix.SockFilter, nr, arch, arg0 uint32) uint32 {
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = map[uint32]uint32{offNr: nr, offArch: arch, offArg0: arg0}[in.K]
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			var cond bool
			switch in.Code &^ (unix.BPF_JMP | unix.BPF_K) {
			case unix.BPF_JEQ:
				cond = acc == in.K
			case unix.BPF_JGE:
				cond = acc >= in.K
			case unix.BPF_JSET:
				cond = acc&in.K != 0
			}
			if cond {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		default:
			t.Fatalf("unexpected instruction %#x", in.Code)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}
