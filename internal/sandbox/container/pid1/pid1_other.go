//go:build !linux

package pid1

// Run plays no role outside Linux: there are no container sandboxes.
func Run([]string) (code int, ok bool) { return 0, false }
