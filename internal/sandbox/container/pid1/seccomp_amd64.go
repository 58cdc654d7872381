//go:build linux

package pid1

import "golang.org/x/sys/unix"

const (
	archAudit  = unix.AUDIT_ARCH_X86_64
	archX32Bit = 0x40000000 // __X32_SYSCALL_BIT
)

// System calls that exist only on this architecture.
var archDeniedSyscalls = []denied{
	{"iopl", unix.SYS_IOPL},
	{"ioperm", unix.SYS_IOPERM},
	{"create_module", unix.SYS_CREATE_MODULE},
	{"get_kernel_syms", unix.SYS_GET_KERNEL_SYMS},
	{"query_module", unix.SYS_QUERY_MODULE},
	{"uselib", unix.SYS_USELIB},
	{"_sysctl", unix.SYS__SYSCTL},
}
