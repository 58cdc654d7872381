package httpapi

import (
	"fmt"

	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/router"
	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/workerapi"
)

// The API shows internal values only through the wire types of api/v1;
// these functions are the conversions.

func specToWire(s function.Spec) apiv1.FunctionSpec { return apiv1.FunctionSpec(s) }

func specFromWire(s apiv1.FunctionSpec) function.Spec { return function.Spec(s) }

func statusToWire(st router.Status) apiv1.FunctionStatus {
	out := apiv1.FunctionStatus{Starting: st.Starting, Stopping: st.Stopping, Queued: st.Queued,
		Instances: make([]apiv1.InstanceStatus, 0, len(st.Instances))}
	for _, in := range st.Instances {
		out.Instances = append(out.Instances, apiv1.InstanceStatus(in))
	}
	return out
}

func functionToWire(fn function.Function, isolation string, st router.Status) apiv1.Function {
	return apiv1.Function{
		Name: fn.Name, Version: fn.Version, Spec: specToWire(fn.Spec), CodeDigest: fn.CodeDigest, CodeSize: fn.CodeSize,
		CreatedAt: fn.CreatedAt, UpdatedAt: fn.UpdatedAt, Isolation: isolation, Status: statusToWire(st),
	}
}

// workingSetToWire sums up what the hosts recorded of a version's
// working set.
func workingSetToWire(on bool, hosts []controller.HostWorkingSet) *apiv1.WorkingSet {
	if !on {
		return &apiv1.WorkingSet{Summary: "off (prefetch: false)"}
	}
	out := &apiv1.WorkingSet{Summary: "not recorded"}
	for _, h := range hosts {
		out.Recorded = true
		out.Workers = append(out.Workers, h.Worker)
		out.Prefetches += h.Prefetches
		if h.Bytes > out.Bytes {
			out.Bytes, out.Ranges, out.Files = h.Bytes, h.Ranges, h.Files
		}
		if out.RecordedAt == nil || h.Recorded.After(*out.RecordedAt) {
			at := h.Recorded
			out.RecordedAt = &at
		}
	}
	if out.Recorded {
		out.Summary = fmt.Sprintf("recorded, %d KiB in %d ranges", out.Bytes>>10, out.Ranges)
	}
	return out
}

func functionErrorToWire(fe *workerapi.FunctionError) *apiv1.FunctionError {
	if fe == nil {
		return nil
	}
	return &apiv1.FunctionError{Message: fe.Message, Type: fe.Type, StackTrace: fe.StackTrace}
}

func recordToWire(r records.Record) apiv1.Invocation {
	return apiv1.Invocation{
		ID: r.ID, Function: r.Function, Version: r.Version, Start: r.Start, End: r.End,
		DurationMs: r.DurationMs, WaitMs: r.WaitMs, InitMs: r.InitMs, ExecMs: r.ExecMs, Cold: r.Cold,
		Status: r.Status, Error: functionErrorToWire(r.Error), Instance: r.Instance, Logs: r.Logs,
		LogsTruncated: r.LogsTruncated, ResponseBytes: r.ResponseBytes, RequestBytes: r.RequestBytes,
		Attempt: r.Attempt,
	}
}

func imageToWire(img workerapi.Image) apiv1.Image {
	return apiv1.Image{
		Name: img.Name, ID: img.ID, Layers: img.Layers, Env: img.Env, Entrypoint: img.Entrypoint, Cmd: img.Cmd,
		WorkingDir: img.WorkingDir, User: img.User, Created: img.Created, Size: img.Size, Source: img.Source,
	}
}
