// Package wirepb holds the worker API's wire messages and gRPC service,
// generated from worker.proto. Regenerating needs protoc (3.21.12 was
// used) and the plugins at the versions the generated files name:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	go generate ./internal/workerapi/remote/wirepb
//
// The generated files are committed: building Baton needs no protoc.
package wirepb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative worker.proto
