// Command hello-go is a Baton function written with aws-lambda-go: built
// as an executable named bootstrap, it runs unmodified as runtime provided.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type request struct {
	Name string `json:"name"`
}

type response struct {
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
	Pid       int    `json:"pid"`
}

func handle(ctx context.Context, req request) (response, error) {
	if req.Name == "" {
		req.Name = "world"
	}
	lc, _ := lambdacontext.FromContext(ctx)
	fmt.Printf("greeting %s\n", req.Name)
	return response{Message: fmt.Sprintf("Hello, %s!", req.Name), RequestID: lc.AwsRequestID, Pid: os.Getpid()}, nil
}

func main() {
	lambda.Start(handle)
}
