//go:build linux

package pid1

import "golang.org/x/sys/unix"

const (
	archAudit  = unix.AUDIT_ARCH_AARCH64
	archX32Bit = 0
)

var archDeniedSyscalls []denied
