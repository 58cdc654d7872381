package remote

import (
	"time"

	"github.com/baton-faas/baton/internal/function"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
	pb "github.com/baton-faas/baton/internal/workerapi/remote/wirepb"
)

// Conversions between workerapi's types and their wire form. Each pair
// round-trips (a test checks every field).

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func resourcesToWire(r workerapi.Resources) *pb.Resources {
	return &pb.Resources{MemoryMb: int64(r.MemoryMB), MilliCpus: int64(r.MilliCPUs)}
}

func resourcesFromWire(r *pb.Resources) workerapi.Resources {
	return workerapi.Resources{MemoryMB: int(r.GetMemoryMb()), MilliCPUs: int(r.GetMilliCpus())}
}

func infoToWire(i workerapi.Info) *pb.WorkerInfo {
	out := &pb.WorkerInfo{Id: i.ID, Isolation: i.Isolation, Capacity: resourcesToWire(i.Capacity),
		Reserved: resourcesToWire(i.Reserved), Instances: int64(i.Instances), Sandboxes: int64(i.Sandboxes)}
	for _, ws := range i.WorkingSets {
		out.WorkingSets = append(out.WorkingSets, &pb.WorkerInfo_WorkingSet{Function: ws.Function, Version: int64(ws.Version),
			Bytes: ws.Bytes, Ranges: int64(ws.Ranges), Files: int64(ws.Files), RecordedUnixNs: unixNano(ws.Recorded),
			Prefetches: ws.Prefetches})
	}
	return out
}

func infoFromWire(i *pb.WorkerInfo) workerapi.Info {
	out := workerapi.Info{ID: i.GetId(), Isolation: i.GetIsolation(), Capacity: resourcesFromWire(i.GetCapacity()),
		Reserved: resourcesFromWire(i.GetReserved()), Instances: int(i.GetInstances()), Sandboxes: int(i.GetSandboxes())}
	for _, ws := range i.GetWorkingSets() {
		out.WorkingSets = append(out.WorkingSets, workerapi.WorkingSet{Function: ws.GetFunction(), Version: int(ws.GetVersion()),
			Bytes: ws.GetBytes(), Ranges: int(ws.GetRanges()), Files: int(ws.GetFiles()), Recorded: fromUnixNano(ws.GetRecordedUnixNs()),
			Prefetches: ws.GetPrefetches()})
	}
	return out
}

func specToWire(s function.Spec) *pb.FunctionSpec {
	return &pb.FunctionSpec{Runtime: s.Runtime, Handler: s.Handler, Env: s.Env, MemoryMb: int64(s.MemoryMB),
		TimeoutSeconds: int64(s.TimeoutSeconds), Concurrency: int64(s.Concurrency), MinScale: int64(s.MinScale),
		MaxScale: int64(s.MaxScale), IdleTimeoutSeconds: int64(s.IdleTimeoutSeconds), App: s.App,
		Network: s.Network, Image: s.Image, Autoscaler: s.Autoscaler, Idempotent: s.Idempotent, Async: asyncToWire(s.Async),
		Prefetch: s.Prefetch}
}

func asyncToWire(a *function.AsyncConfig) *pb.AsyncConfig {
	if a == nil {
		return nil
	}
	out := &pb.AsyncConfig{MaxRetryAttempts: -1, MaxEventAgeSeconds: int64(a.MaxEventAgeSeconds), OnSuccess: a.OnSuccess,
		OnFailure: a.OnFailure, Concurrency: int64(a.Concurrency)}
	if a.MaxRetryAttempts != nil {
		out.MaxRetryAttempts = int64(*a.MaxRetryAttempts)
	}
	return out
}

func asyncFromWire(a *pb.AsyncConfig) *function.AsyncConfig {
	if a == nil {
		return nil
	}
	out := &function.AsyncConfig{MaxEventAgeSeconds: int(a.GetMaxEventAgeSeconds()), OnSuccess: a.GetOnSuccess(),
		OnFailure: a.GetOnFailure(), Concurrency: int(a.GetConcurrency())}
	if n := int(a.GetMaxRetryAttempts()); n >= 0 {
		out.MaxRetryAttempts = &n
	}
	return out
}

func specFromWire(s *pb.FunctionSpec) function.Spec {
	return function.Spec{Runtime: s.GetRuntime(), Handler: s.GetHandler(), Env: s.GetEnv(), MemoryMB: int(s.GetMemoryMb()),
		TimeoutSeconds: int(s.GetTimeoutSeconds()), Concurrency: int(s.GetConcurrency()), MinScale: int(s.GetMinScale()),
		MaxScale: int(s.GetMaxScale()), IdleTimeoutSeconds: int(s.GetIdleTimeoutSeconds()), App: s.GetApp(),
		Network: s.GetNetwork(), Image: s.GetImage(), Autoscaler: s.GetAutoscaler(), Idempotent: s.GetIdempotent(),
		Async: asyncFromWire(s.GetAsync()), Prefetch: s.Prefetch}
}

func instanceSpecToWire(s workerapi.InstanceSpec) *pb.InstanceSpec {
	return &pb.InstanceSpec{Function: s.Function, Version: int64(s.Version), App: s.App, Spec: specToWire(s.Spec), CodeDigest: s.CodeDigest}
}

func instanceSpecFromWire(s *pb.InstanceSpec) workerapi.InstanceSpec {
	return workerapi.InstanceSpec{Function: s.GetFunction(), Version: int(s.GetVersion()), App: s.GetApp(),
		Spec: specFromWire(s.GetSpec()), CodeDigest: s.GetCodeDigest()}
}

func instanceToWire(in workerapi.Instance) *pb.Instance {
	return &pb.Instance{Id: in.ID, Worker: in.Worker, Function: in.Function, Version: int64(in.Version), State: string(in.State),
		Capacity: int64(in.Capacity), InitDurationNs: int64(in.InitDuration), Forked: in.Forked}
}

func instanceFromWire(in *pb.Instance) workerapi.Instance {
	return workerapi.Instance{ID: in.GetId(), Worker: in.GetWorker(), Function: in.GetFunction(), Version: int(in.GetVersion()),
		State: workerapi.State(in.GetState()), Capacity: int(in.GetCapacity()), InitDuration: time.Duration(in.GetInitDurationNs()),
		Forked: in.GetForked()}
}

func invocationToWire(instanceID string, inv workerapi.Invocation) *pb.InvokeRequest {
	return &pb.InvokeRequest{InstanceId: instanceID, Id: inv.ID, Payload: inv.Payload, DeadlineUnixNs: unixNano(inv.Deadline), TraceId: inv.TraceID,
		ClientContext: inv.ClientContext, ByRef: inv.ByRef}
}

func invocationFromWire(req *pb.InvokeRequest) workerapi.Invocation {
	return workerapi.Invocation{ID: req.GetId(), Payload: req.GetPayload(), Deadline: fromUnixNano(req.GetDeadlineUnixNs()), TraceID: req.GetTraceId(),
		ClientContext: req.GetClientContext(), ByRef: req.GetByRef()}
}

func functionErrorToWire(fe *workerapi.FunctionError) *pb.FunctionError {
	if fe == nil {
		return nil
	}
	return &pb.FunctionError{Message: fe.Message, Type: fe.Type, StackTrace: fe.StackTrace}
}

func functionErrorFromWire(fe *pb.FunctionError) *workerapi.FunctionError {
	if fe == nil {
		return nil
	}
	return &workerapi.FunctionError{Message: fe.GetMessage(), Type: fe.GetType(), StackTrace: fe.GetStackTrace()}
}

func resultToWire(r workerapi.Result) *pb.InvokeReply {
	return &pb.InvokeReply{Payload: r.Payload, Error: functionErrorToWire(r.Error), Logs: r.Logs,
		LogsTruncated: r.LogsTruncated, DurationNs: int64(r.Duration), Ref: refToWire(r.Ref)}
}

func resultFromWire(r *pb.InvokeReply) workerapi.Result {
	return workerapi.Result{Payload: r.GetPayload(), Error: functionErrorFromWire(r.GetError()), Logs: r.GetLogs(),
		LogsTruncated: r.GetLogsTruncated(), Duration: time.Duration(r.GetDurationNs()), Ref: refFromWire(r.GetRef())}
}

func failureToWire(f *workerapi.Failure) *pb.Failure {
	if f == nil {
		return nil
	}
	return &pb.Failure{Kind: string(f.Kind), Message: f.Message, InstanceAlive: f.InstanceAlive, Logs: f.Logs, LogsTruncated: f.LogsTruncated}
}

func failureFromWire(f *pb.Failure) *workerapi.Failure {
	if f == nil {
		return nil
	}
	return &workerapi.Failure{Kind: workerapi.FailureKind(f.GetKind()), Message: f.GetMessage(), InstanceAlive: f.GetInstanceAlive(),
		Logs: f.GetLogs(), LogsTruncated: f.GetLogsTruncated()}
}

func initErrorToWire(e *workerapi.InitError) *pb.InitError {
	if e == nil {
		return nil
	}
	return &pb.InitError{Error: functionErrorToWire(&e.Err), Logs: e.Logs}
}

func initErrorFromWire(e *pb.InitError) *workerapi.InitError {
	if e == nil {
		return nil
	}
	out := &workerapi.InitError{Logs: e.GetLogs()}
	if fe := functionErrorFromWire(e.GetError()); fe != nil {
		out.Err = *fe
	}
	return out
}

func eventToWire(ev workerapi.Event) *pb.Event {
	out := &pb.Event{Seq: ev.Seq, Kind: string(ev.Kind), Worker: ev.Worker, Instance: ev.Instance, Function: ev.Function,
		Version: int64(ev.Version), Reason: ev.Reason, InitError: initErrorToWire(ev.InitErr)}
	if ev.Ready != nil {
		out.Ready = instanceToWire(*ev.Ready)
	}
	return out
}

func eventFromWire(ev *pb.Event) workerapi.Event {
	out := workerapi.Event{Seq: ev.GetSeq(), Kind: workerapi.EventKind(ev.GetKind()), Worker: ev.GetWorker(),
		Instance: ev.GetInstance(), Function: ev.GetFunction(), Version: int(ev.GetVersion()), Reason: ev.GetReason(),
		InitErr: initErrorFromWire(ev.GetInitError())}
	if ev.GetReady() != nil {
		ready := instanceFromWire(ev.GetReady())
		out.Ready = &ready
	}
	return out
}

func imageToWire(img workerapi.Image) *pb.Image {
	return &pb.Image{Name: img.Name, Id: img.ID, Layers: img.Layers, Env: img.Env, Entrypoint: img.Entrypoint, Cmd: img.Cmd,
		WorkingDir: img.WorkingDir, User: img.User, CreatedUnixNs: unixNano(img.Created), Size: img.Size, Source: img.Source}
}

func imageFromWire(img *pb.Image) workerapi.Image {
	return workerapi.Image{Name: img.GetName(), ID: img.GetId(), Layers: img.GetLayers(), Env: img.GetEnv(),
		Entrypoint: img.GetEntrypoint(), Cmd: img.GetCmd(), WorkingDir: img.GetWorkingDir(), User: img.GetUser(),
		Created: fromUnixNano(img.GetCreatedUnixNs()), Size: img.GetSize(), Source: img.GetSource()}
}

func refToWire(r *transfer.Ref) *pb.TransferRef {
	if r == nil {
		return nil
	}
	return &pb.TransferRef{Worker: r.Worker, Addr: r.Addr, Id: r.ID, Size: r.Size, Sha256: r.Digest,
		ExpiresUnixMs: r.Expires, App: r.App, Pulls: int64(r.Pulls), Mac: r.MAC}
}

func refFromWire(r *pb.TransferRef) *transfer.Ref {
	if r == nil {
		return nil
	}
	return &transfer.Ref{Worker: r.GetWorker(), Addr: r.GetAddr(), ID: r.GetId(), Size: r.GetSize(), Digest: r.GetSha256(),
		Expires: r.GetExpiresUnixMs(), App: r.GetApp(), Pulls: int(r.GetPulls()), MAC: r.GetMac()}
}
