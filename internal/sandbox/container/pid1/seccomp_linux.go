//go:build linux

package pid1

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp profile: everything is allowed except the system calls below,
// which fail with EPERM. Functions never need them; most of them need
// capabilities the sandbox does not have anyway, and the filter also closes
// the doors that stay open to an unprivileged process (user namespaces,
// ptrace of a sibling, bpf, userfaultfd, io_uring, keyrings, ...).
//
// The filter is built here as a classic BPF program instead of through
// libcontainer's configs.Seccomp, because libcontainer's seccomp support is
// compiled only with the `seccomp` build tag (and links libseccomp), while
// Baton is built and tested with a plain `go build`. It is installed by the
// sandbox's own code, see InstallSeccomp.
var deniedSyscalls = append([]denied{
	// Mounting and changing roots.
	{"mount", unix.SYS_MOUNT},
	{"umount2", unix.SYS_UMOUNT2},
	{"pivot_root", unix.SYS_PIVOT_ROOT},
	{"chroot", unix.SYS_CHROOT},
	{"fsopen", unix.SYS_FSOPEN},
	{"fsconfig", unix.SYS_FSCONFIG},
	{"fsmount", unix.SYS_FSMOUNT},
	{"fspick", unix.SYS_FSPICK},
	{"move_mount", unix.SYS_MOVE_MOUNT},
	{"open_tree", unix.SYS_OPEN_TREE},
	{"open_tree_attr", unix.SYS_OPEN_TREE_ATTR},
	{"mount_setattr", unix.SYS_MOUNT_SETATTR},
	// Namespaces.
	{"setns", unix.SYS_SETNS},
	{"unshare", unix.SYS_UNSHARE},
	// Looking into or controlling other processes.
	{"ptrace", unix.SYS_PTRACE},
	{"process_vm_readv", unix.SYS_PROCESS_VM_READV},
	{"process_vm_writev", unix.SYS_PROCESS_VM_WRITEV},
	{"process_madvise", unix.SYS_PROCESS_MADVISE},
	{"pidfd_getfd", unix.SYS_PIDFD_GETFD},
	{"kcmp", unix.SYS_KCMP},
	// Kernel modules and kexec.
	{"init_module", unix.SYS_INIT_MODULE},
	{"finit_module", unix.SYS_FINIT_MODULE},
	{"delete_module", unix.SYS_DELETE_MODULE},
	{"kexec_load", unix.SYS_KEXEC_LOAD},
	{"kexec_file_load", unix.SYS_KEXEC_FILE_LOAD},
	// Keyrings.
	{"keyctl", unix.SYS_KEYCTL},
	{"add_key", unix.SYS_ADD_KEY},
	{"request_key", unix.SYS_REQUEST_KEY},
	// Kernel attack surface functions do not need.
	{"bpf", unix.SYS_BPF},
	{"perf_event_open", unix.SYS_PERF_EVENT_OPEN},
	{"userfaultfd", unix.SYS_USERFAULTFD},
	{"io_uring_setup", unix.SYS_IO_URING_SETUP},
	{"io_uring_enter", unix.SYS_IO_URING_ENTER},
	{"io_uring_register", unix.SYS_IO_URING_REGISTER},
	{"lookup_dcookie", unix.SYS_LOOKUP_DCOOKIE},
	{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT},
	{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT},
	// Host administration.
	{"reboot", unix.SYS_REBOOT},
	{"swapon", unix.SYS_SWAPON},
	{"swapoff", unix.SYS_SWAPOFF},
	{"acct", unix.SYS_ACCT},
	{"quotactl", unix.SYS_QUOTACTL},
	{"quotactl_fd", unix.SYS_QUOTACTL_FD},
	{"nfsservctl", unix.SYS_NFSSERVCTL},
	{"vhangup", unix.SYS_VHANGUP},
	{"syslog", unix.SYS_SYSLOG},
	{"sethostname", unix.SYS_SETHOSTNAME},
	{"setdomainname", unix.SYS_SETDOMAINNAME},
	// Clocks.
	{"settimeofday", unix.SYS_SETTIMEOFDAY},
	{"clock_settime", unix.SYS_CLOCK_SETTIME},
	{"clock_adjtime", unix.SYS_CLOCK_ADJTIME},
	{"adjtimex", unix.SYS_ADJTIMEX},
}, archDeniedSyscalls...)

type denied struct {
	name string
	nr   uint32
}

// cloneNamespaceFlags are the clone(2) flags that create namespaces; clone
// with any of them fails with EPERM (like unshare). clone3 passes its flags
// in memory a filter cannot read, so it fails with ENOSYS and libc falls
// back to clone, as in Docker's profile.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP |
	unix.CLONE_NEWTIME

// Offsets into struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits on little-endian machines
)

// seccompProgram assembles the filter.
func seccompProgram() ([]unix.SockFilter, error) {
	if archAudit == 0 {
		return nil, fmt.Errorf("seccomp filter: architecture %s is not supported", runtime.GOARCH)
	}
	const (
		retAllow  = unix.SECCOMP_RET_ALLOW
		retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	var a asm
	// Other ABIs (32-bit x86 on amd64, arm32 on arm64) have other syscall
	// numbers; the filter does not know them, so they are refused whole.
	a.load(offArch)
	a.jumpIf(unix.BPF_JEQ, archAudit, "", "eperm")
	a.load(offNr)
	if archX32Bit != 0 {
		// x32 system calls use the amd64 ABI with this bit set.
		a.jumpIf(unix.BPF_JGE, archX32Bit, "eperm", "")
	}
	for _, d := range deniedSyscalls {
		a.jumpIf(unix.BPF_JEQ, d.nr, "eperm", "")
	}
	a.jumpIf(unix.BPF_JEQ, unix.SYS_CLONE3, "enosys", "")
	a.jumpIf(unix.BPF_JEQ, unix.SYS_CLONE, "", "allow")
	a.load(offArg0)
	a.jumpIf(unix.BPF_JSET, cloneNamespaceFlags, "eperm", "")
	a.label("allow")
	a.ret(retAllow)
	a.label("eperm")
	a.ret(retEPERM)
	a.label("enosys")
	a.ret(retENOSYS)
	return a.assemble()
}

// InstallSeccomp applies the filter to every thread of the calling process
// (TSYNC); it survives execve and is inherited by every child. The caller
// must have set no_new_privs or hold CAP_SYS_ADMIN.
func InstallSeccomp() error {
	prog, err := seccompProgram()
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}

// SeccompAvailable tells whether the kernel supports seccomp filters.
func SeccompAvailable() error {
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp is not available in this kernel: %w", err)
	}
	if _, err := seccompProgram(); err != nil {
		return err
	}
	return nil
}

// asm is a tiny classic-BPF assembler with forward labels.
type asm struct {
	insns  []unix.SockFilter
	jumps  []jumpRef
	labels map[string]int
}

type jumpRef struct {
	at         int
	trueLabel  string
	falseLabel string
}

func (a *asm) load(off uint32) {
	a.insns = append(a.insns, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off})
}

func (a *asm) ret(v uint32) {
	a.insns = append(a.insns, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: v})
}

// jumpIf compares the accumulator with k; an empty label means "the next
// instruction".
func (a *asm) jumpIf(op uint16, k uint32, ifTrue, ifFalse string) {
	a.jumps = append(a.jumps, jumpRef{at: len(a.insns), trueLabel: ifTrue, falseLabel: ifFalse})
	a.insns = append(a.insns, unix.SockFilter{Code: unix.BPF_JMP | op | unix.BPF_K, K: k})
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.insns)
}

func (a *asm) assemble() ([]unix.SockFilter, error) {
	offset := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := a.labels[label]
		if !ok {
			return 0, fmt.Errorf("seccomp filter: unknown label %q", label)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, errors.New("seccomp filter: jump out of range")
		}
		return uint8(d), nil
	}
	for _, j := range a.jumps {
		jt, err := offset(j.at, j.trueLabel)
		if err != nil {
			return nil, err
		}
		jf, err := offset(j.at, j.falseLabel)
		if err != nil {
			return nil, err
		}
		a.insns[j.at].Jt, a.insns[j.at].Jf = jt, jf
	}
	return a.insns, nil
}
