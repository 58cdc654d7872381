//go:build linux && !amd64 && !arm64

package pid1

// The filter knows the system call numbers of amd64 and arm64 only; on
// other architectures New reports containers as unavailable.
const (
	archAudit  = 0
	archX32Bit = 0
)

var archDeniedSyscalls []denied
