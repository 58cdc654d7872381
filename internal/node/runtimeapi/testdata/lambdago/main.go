// Command lambdago is a Lambda function built with aws-lambda-go, used by
// the runtimeapi conformance test to check that unmodified Lambda Go
// programs work against the endpoint.
package main

import (
	"context"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// FunctionFailure gives the error path a predictable errorType:
// aws-lambda-go reports the Go type name of the returned error.
type FunctionFailure struct{ Msg string }

func (e *FunctionFailure) Error() string { return e.Msg }

func handle(ctx context.Context, ev map[string]any) (map[string]any, error) {
	if msg, ok := ev["fail"].(string); ok {
		return nil, &FunctionFailure{Msg: msg}
	}
	if ms, ok := ev["sleepMs"].(float64); ok {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if _, ok := ev["panic"]; ok {
		panic("asked to panic")
	}

	out := map[string]any{"echo": ev}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		out["awsRequestId"] = lc.AwsRequestID
		out["invokedFunctionArn"] = lc.InvokedFunctionArn
		out["clientContextCustom"] = lc.ClientContext.Custom
		out["cognitoIdentityId"] = lc.Identity.CognitoIdentityID
	}
	if d, ok := ctx.Deadline(); ok {
		out["deadlineMs"] = d.UnixMilli()
	}
	out["traceId"] = ctx.Value("x-amzn-trace-id")
	return out, nil
}

func main() {
	lambda.Start(handle)
}
