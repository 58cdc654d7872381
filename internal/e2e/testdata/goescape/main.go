// Command goescape is a runtime provided function for Baton's end-to-end
// tests, built with aws-lambda-go: before serving it moves itself out of
// the process group Baton made it lead, so that a signal to that group
// no longer reaches it.
//
// It joins its parent's (the Baton server's) process group: setpgid to a
// group of the same session is allowed, whereas setsid would fail with
// EPERM because the bootstrap leads its group. The group it leaves behind
// is then empty, and kill(-pid) finds no process at all.
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	SleepMs int `json:"sleepMs"`
}

type result struct {
	Pid  int `json:"pid"`
	Pgid int `json:"pgid"`
}

func handle(ctx context.Context, ev event) (result, error) {
	time.Sleep(time.Duration(ev.SleepMs) * time.Millisecond)
	pgid, err := syscall.Getpgid(0)
	if err != nil {
		return result{}, err
	}
	return result{Pid: os.Getpid(), Pgid: pgid}, nil
}

func main() {
	parentGroup, err := syscall.Getpgid(os.Getppid())
	if err == nil {
		err = syscall.Setpgid(0, parentGroup)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goescape: leave the process group:", err)
		os.Exit(1)
	}
	lambda.Start(handle)
}
