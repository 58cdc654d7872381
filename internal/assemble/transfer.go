package assemble

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/baton-faas/baton/internal/store/jsstore"
	"github.com/baton-faas/baton/internal/transfer"
)

// transferKeyFile is where `baton server` keeps its transfer key.
const transferKeyFile = "transfer.key"

// serverTransferKey reads the data directory's transfer key, creating it
// (0600, random) on first start.
func serverTransferKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, transferKeyFile)
	key := make([]byte, transfer.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("transfer key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			_ = os.Remove(path)
			return nil, fmt.Errorf("write transfer key %s: %w", path, werr)
		}
		return key, nil
	case errors.Is(err, fs.ErrExist):
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read transfer key: %w", err)
		}
		if len(b) < transfer.KeySize {
			return nil, fmt.Errorf("transfer key %s: %d bytes, want %d (remove it to make a new one)", path, len(b), transfer.KeySize)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("create transfer key: %w", err)
	}
}

// Cluster transfer key: one value in its own KV bucket, created with
// Create so that the first node to start sets it and every other reads it.
const (
	transferKeyBucket = "baton_transfer"
	transferKeyName   = "hmac"
)

// clusterTransferKey returns the cluster's transfer key, making it if no
// node did yet.
func clusterTransferKey(ctx context.Context, nc *nats.Conn, log *slog.Logger) ([]byte, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("transfer key: %w", err)
	}
	kv, err := jsstore.EnsureKV(ctx, js, log, "transfer key", jetstream.KeyValueConfig{
		Bucket: transferKeyBucket, Description: "the key that signs direct-transfer references",
		Replicas: jsstore.ReplicasFor(nc), History: 1,
	})
	if err != nil {
		return nil, err
	}
	key := make([]byte, transfer.KeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("transfer key: %w", err)
	}
	var got []byte
	err = jsstore.Retry(ctx, js, "transfer key", func(ctx context.Context) error {
		if _, err := kv.Create(ctx, transferKeyName, key); err == nil {
			got = key
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		e, err := kv.Get(ctx, transferKeyName)
		if err != nil {
			return err
		}
		got = e.Value()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("transfer key: %w", err)
	}
	if len(got) < transfer.KeySize {
		return nil, fmt.Errorf("transfer key in bucket %s: %d bytes, want %d", transferKeyBucket, len(got), transfer.KeySize)
	}
	return got, nil
}

// newExchange builds a host's transfer exchange. A threshold of 0 keeps
// nothing, but the node still takes the references other workers' results
// became (a cluster's workers need not agree on the threshold).
func newExchange(cfg transfer.Config, dataDir, id, addr string, key []byte, peers transfer.Source, log *slog.Logger) (*transfer.Exchange, error) {
	signer, err := transfer.NewSigner(key)
	if err != nil {
		return nil, err
	}
	spill := cfg.SpillDir
	if spill == "" && cfg.SpillBytes > 0 {
		spill = filepath.Join(dataDir, "transfers")
	}
	if cfg.SpillBytes <= 0 {
		spill = ""
	}
	store, err := transfer.NewStore(transfer.StoreConfig{MemoryBytes: cfg.MemoryBytes, SpillDir: spill, SpillBytes: cfg.SpillBytes,
		TTL: cfg.TTL, Logger: log})
	if err != nil {
		return nil, err
	}
	return transfer.NewExchange(transfer.ExchangeConfig{Worker: id, Addr: addr, Threshold: cfg.Threshold, Signer: signer,
		Store: store, Peers: peers, Logger: log})
}
