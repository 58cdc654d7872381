package assemble

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/archive"
	"github.com/baton-faas/baton/internal/async"
	"github.com/baton-faas/baton/internal/cluster/membership"
	"github.com/baton-faas/baton/internal/controlplane/records"
	"github.com/baton-faas/baton/internal/controlplane/registry"
	"github.com/baton-faas/baton/internal/datalayer"
	"github.com/baton-faas/baton/internal/image"
	"github.com/baton-faas/baton/internal/image/baseimage"
	"github.com/baton-faas/baton/internal/node"
	"github.com/baton-faas/baton/internal/store"
	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/transfer"
	"github.com/baton-faas/baton/internal/workerapi"
)

// hostConfig is what a host's node needs, in `baton server` and in
// `baton worker` alike.
type hostConfig struct {
	// ID names the node; empty means the host name.
	ID               string
	DataDir          string
	Sandbox          string
	FakeStartLatency time.Duration
	// NoMemoryReclaim turns off the container sandboxes' memory reclaim
	// (container.Options.NoMemoryReclaim).
	NoMemoryReclaim bool
	MaxPayloadBytes int64
	CodeLimits      archive.Limits
	CodeCacheBytes  int64
	// Prefetch records and prefetches cold starts' working sets.
	Prefetch bool
	// ZygoteKeep: node.Options.ZygoteKeep.
	ZygoteKeep time.Duration
	// Invoker runs invocations the node's functions ask for (nil: the
	// route answers 501).
	Invoker node.Invoker
	// Data sizes the host's data layers; NATS, when set, carries their
	// global layer (nil: local only).
	Data datalayer.Config
	NATS *nats.Conn
	// Transfer configures direct transfers, signed with TransferKey;
	// Advertise is the worker API address other workers pull from ("" in
	// `baton server`) and Peers how this node pulls from them (nil: it
	// has none).
	Transfer    transfer.Config
	TransferKey []byte
	Advertise   string
	Peers       transfer.Source
}

// newHostNode opens the host's image store, picks its sandboxes, opens its
// data layers and creates its node; the caller calls its Prepare once it
// serves. The returned function stops every instance and every base image
// build and closes the image store.
func newHostNode(ctx context.Context, cfg hostConfig, code workerapi.CodeStore, log *slog.Logger) (*node.Worker, func(), error) {
	images, err := image.Open(filepath.Join(cfg.DataDir, "images"), log)
	if err != nil {
		return nil, nil, fmt.Errorf("image store: %w", err)
	}
	bases := baseimage.NewCache(images, log)
	closeImages := func() {
		bases.Close() // before the store: a build writes into it
		images.Close()
	}
	sandboxes, rootFS, err := chooseSandboxes(cfg, images, bases, log)
	if err != nil {
		closeImages()
		return nil, nil, err
	}
	id := cfg.ID
	if id == "" {
		id, _ = os.Hostname()
	}
	data, err := datalayer.Open(ctx, cfg.NATS, cfg.Data, log.With("component", "datalayer"))
	if err != nil {
		closeImages()
		return nil, nil, fmt.Errorf("data layer: %w", err)
	}
	xfer, err := newExchange(cfg.Transfer, cfg.DataDir, id, cfg.Advertise, cfg.TransferKey, cfg.Peers, log.With("component", "transfer"))
	if err != nil {
		closeImages()
		return nil, nil, fmt.Errorf("direct transfers: %w", err)
	}
	wk, err := node.New(node.Options{
		ID: id, DataDir: filepath.Join(cfg.DataDir, "worker"), Sandboxes: sandboxes,
		Code: code, Logger: log.With("component", "worker"), MaxResponseBytes: cfg.MaxPayloadBytes,
		RootFS: rootFS, Layers: images, Images: images, BaseImages: bases,
		ArchiveLimits: cfg.CodeLimits, CodeCacheBytes: cfg.CodeCacheBytes, Data: data, Transfer: xfer,
		Prefetch: cfg.Prefetch, Invoker: cfg.Invoker, ZygoteKeep: cfg.ZygoteKeep,
	})
	if err != nil {
		closeImages()
		return nil, nil, err
	}
	return wk, func() {
		// Builds first: a start waiting for a base image fails at once
		// instead of holding up the worker's shutdown.
		bases.Close()
		closeCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := wk.Close(closeCtx); err != nil {
			log.Warn("worker shutdown", "err", err)
		}
		images.Close()
	}, nil
}

// blobCode reads function code by digest from the code store, for a
// worker that is not beside a registry.
type blobCode struct{ blobs store.Blobs }

func (b blobCode) Code(ctx context.Context, digest string) (io.ReadCloser, error) {
	return b.blobs.GetBlob(ctx, digest)
}

// joinMembers opens the membership (creating it with three heartbeats of
// TTL when heartbeat is set) and joins it, heartbeating at a third of the
// bucket's TTL, whoever set it.
func joinMembers(ctx context.Context, nc *nats.Conn, heartbeat time.Duration, self membership.Self) (*membership.Members, *membership.Member, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, fmt.Errorf("membership: %w", err)
	}
	// Replicated like the stores: a NATS server lost must not lose who
	// is in the cluster.
	members, err := membership.Open(ctx, js, membership.Config{TTL: 3 * heartbeat, Replicas: jsstore.ReplicasFor(nc)})
	if err != nil {
		return nil, nil, err
	}
	self.Interval = members.TTL() / 3
	me, err := members.Join(ctx, self)
	if err != nil {
		return nil, nil, err
	}
	return members, me, nil
}

// leaveMembers removes this node's entry at once, so that peers need not
// wait for it to expire.
func leaveMembers(me *membership.Member, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := me.Leave(ctx); err != nil {
		log.Warn("leave the membership", "err", err)
	}
}

// recordStoreOptions bounds the record stream the same way in every
// process that opens it (0: the default of --max-records).
func recordStoreOptions(maxRecords int) jsstore.Options {
	return jsstore.Options{MaxRecords: int64(max(maxRecords, 5000)), MaxRecordBytes: 512 << 20}
}

func codeLimitsFor(maxCodeBytes int64) archive.Limits {
	return archive.Limits{MaxTotalBytes: maxCodeBytes, MaxFileBytes: maxCodeBytes}
}

// openControlState opens what a control plane keeps on the cluster's
// stores: the function registry and the invocation records.
func openControlState(ctx context.Context, nc *nats.Conn, maxRecords int, maxCodeBytes int64, asyncOpts async.Options, log *slog.Logger) (controlState, error) {
	st, err := jsstore.Open(ctx, nc, recordStoreOptions(maxRecords))
	if err != nil {
		return controlState{}, err
	}
	asyncOpts.Logger = log.With("component", "async")
	queue, err := async.Open(ctx, nc, asyncOpts)
	if err != nil {
		return controlState{}, err
	}
	reg := registry.New(st, st, codeLimitsFor(maxCodeBytes), log)
	recs, err := records.Open(ctx, records.Options{Max: maxRecords, Store: st, Logger: log})
	if err != nil {
		return controlState{}, err
	}
	return controlState{store: st, registry: reg, records: recs, queue: queue}, nil
}

// controlState is what a controller keeps in JetStream.
type controlState struct {
	store    *jsstore.Store
	registry *registry.Registry
	records  *records.Log
	queue    *async.Queue
}
