// Command goecho is a Go function for Baton's end-to-end tests, built with
// aws-lambda-go as runtime provided: it echoes its event and fails when the
// event asks it to.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Fail string         `json:"fail"`
	Data map[string]any `json:"data"`
}

type result struct {
	Data      map[string]any `json:"data"`
	RequestID string         `json:"requestId"`
	Version   string         `json:"version"`
	Pid       int            `json:"pid"`
	// Pidns is the PID namespace Pid is counted in (a container sandbox
	// has its own); tests map the pair to the host's pid.
	Pidns string `json:"pidns"`
}

func handle(ctx context.Context, ev event) (result, error) {
	if ev.Fail != "" {
		fmt.Fprintln(os.Stderr, "failing on request")
		return result{}, errors.New(ev.Fail)
	}
	lc, _ := lambdacontext.FromContext(ctx)
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	return result{Data: ev.Data, RequestID: lc.AwsRequestID, Version: lambdacontext.FunctionVersion, Pid: os.Getpid(), Pidns: pidns}, nil
}

func main() {
	lambda.Start(handle)
}
