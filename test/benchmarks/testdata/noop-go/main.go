// Command noop-go is a no-op function for runtime provided, written with
// aws-lambda-go; BenchmarkWarmInvoke uses it to separate Baton's own path
// from the Python runtime client's cost.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(context.Context, json.RawMessage) (map[string]bool, error) {
		return map[string]bool{"ok": true}, nil
	})
}
