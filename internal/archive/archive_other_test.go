//go:build !unix

package archive

import "errors"

func mkfifo(string) error { return errors.New("fifos are not supported on this platform") }
