// Command goescape is a runtime provided function for Baton's end-to-end
// tests, built with aws-lambda-go: before serving it tries to move itself
// out of the process group Baton made it lead, so that a signal to that
// group no longer reaches it, and it reports where it ended up.
//
// It joins its parent's (the Baton server's) process group: setpgid to a
// group of the same session is allowed, whereas setsid would fail with
// EPERM because the bootstrap leads its group. The group it leaves behind
// is then empty, and kill(-pid) finds no process at all.
//
// In a container sandbox the bootstrap leads a session of its own and its
// parent is outside its PID namespace: a session leader cannot change its
// group (EPERM), so the escape fails there, and the function reports the
// failure instead of exiting.
package main

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"golang.org/x/sys/unix"
)

type event struct {
	SleepMs int `json:"sleepMs"`
}

type result struct {
	Pid   int    `json:"pid"`
	Pidns string `json:"pidns"`
	Pgid  int    `json:"pgid"`
	Sid   int    `json:"sid"`
	// EscapeError is why leaving the process group failed; empty when it
	// worked.
	EscapeError string `json:"escapeError"`
}

var escapeErr error

func handle(ctx context.Context, ev event) (result, error) {
	time.Sleep(time.Duration(ev.SleepMs) * time.Millisecond)
	pgid, err := syscall.Getpgid(0)
	if err != nil {
		return result{}, err
	}
	sid, err := unix.Getsid(0)
	if err != nil {
		return result{}, err
	}
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	r := result{Pid: os.Getpid(), Pidns: pidns, Pgid: pgid, Sid: sid}
	if escapeErr != nil {
		r.EscapeError = escapeErr.Error()
	}
	return r, nil
}

// leaveGroup joins the parent's process group. A parent outside this PID
// namespace shows as pid 0, whose "group" is then this process's own.
func leaveGroup() error {
	parentGroup, err := syscall.Getpgid(os.Getppid())
	if err != nil {
		return err
	}
	return syscall.Setpgid(0, parentGroup)
}

func main() {
	escapeErr = leaveGroup()
	lambda.Start(handle)
}
