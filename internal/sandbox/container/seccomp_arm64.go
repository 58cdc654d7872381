//go:build linux && cgo

package container

import "golang.org/x/sys/unix"

const (
	archAudit  = unix.AUDIT_ARCH_AARCH64
	archX32Bit = 0
)

var archDeniedSyscalls []denied
