package assemble

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/controlplane/placement"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/errdefs"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
)

// Every code a classified error can carry to the API's error body is a
// constant of api/v1, where clients find them.
func TestErrorCodesArePublished(t *testing.T) {
	published := map[string]bool{}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("..", "..", "api", "v1", "codes.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if v, err := strconv.Unquote(lit.Value); err == nil {
				published[v] = true
			}
		}
		return true
	})
	sentinels := []error{
		archive.ErrInvalid, archive.ErrTooLarge, function.ErrInvalid,
		placement.ErrNoCapacity, placement.ErrUnknownPolicy,
		router.ErrUnknownFunction, router.ErrQueueFull, router.ErrQueueTimeout, router.ErrShuttingDown,
		router.ErrFunctionRemoved, router.ErrStartFailed, router.ErrWorkerExists,
		image.ErrNotFound, image.ErrInUse, image.ErrCorrupt, image.ErrInvalidName, image.ErrClosed,
		node.ErrCodeCacheFull, store.ErrNotFound, store.ErrConflict,
		workerapi.ErrUnknownInstance, workerapi.ErrNoImageStore, workerapi.ErrImageNotFound,
		workerapi.ErrImageInUse, workerapi.ErrWorkerUnavailable,
		transfer.ErrForged, transfer.ErrExpired, transfer.ErrReplayed, transfer.ErrWrongApp, transfer.ErrSourceLost,
		transfer.ErrCorrupt, transfer.ErrFull, transfer.ErrNoTransfers,
	}
	for _, err := range sentinels {
		if _, code := errdefs.Classify(err); !published[code] {
			t.Errorf("code %q (of %q) is not a constant in api/v1/codes.go", code, err)
		}
	}
	for _, kind := range []workerapi.FailureKind{workerapi.FailureTimeout, workerapi.FailureCrash, workerapi.FailureOutOfMemory,
		workerapi.FailureTooLarge, workerapi.FailureInstanceGone, workerapi.FailureNotDelivered, workerapi.FailureWorkerFailure, workerapi.FailureWorkerLost} {
		if !published[string(kind)] {
			t.Errorf("failure kind %q is not a constant in api/v1/codes.go", kind)
		}
	}
}
