package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LatestGet reads a key's newest value from its bucket's stream leader.
//
// A KV bucket's Get is a direct get, which any replica answers: right
// after a write acknowledged by a quorum, a follower that has not
// applied it yet answers with the previous value (or none). Reads that
// must see a write acknowledged just before — a workflow started right
// after its deploy, a function read back to be updated — ask the leader
// instead (a leader change can still answer stale; JetStream offers no
// more without read-after-write support in the client).
func LatestGet(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	bucket := kv.Bucket()
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	reqCtx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		reqCtx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	msg, err := js.Conn().RequestWithContext(reqCtx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, fmt.Errorf("read %s from the leader of bucket %s: %w", key, bucket, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq  uint64    `json:"seq"`
			Hdrs []byte    `json:"hdrs"`
			Data []byte    `json:"data"`
			Time time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("read %s from the leader of bucket %s: %w", key, bucket, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, fmt.Errorf("read %s from the leader of bucket %s: %s (%d)", key, bucket, resp.Error.Description, resp.Error.ErrCode)
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("read %s from the leader of bucket %s: %w", key, bucket, errors.New("an empty answer"))
	}
	op := jetstream.KeyValuePut
	if len(resp.Message.Hdrs) > 0 {
		hdr, err := nats.DecodeHeadersMsg(resp.Message.Hdrs)
		if err != nil {
			return nil, fmt.Errorf("read %s from the leader of bucket %s: headers: %w", key, bucket, err)
		}
		switch hdr.Get("KV-Operation") {
		case "DEL", "PURGE":
			op = jetstream.KeyValueDelete
		}
	}
	if op != jetstream.KeyValuePut {
		return nil, jetstream.ErrKeyNotFound
	}
	return latestEntry{bucket: bucket, key: key, value: resp.Message.Data, rev: resp.Message.Seq, created: resp.Message.Time}, nil
}

// latestEntry is a KV entry read by LatestGet.
type latestEntry struct {
	bucket, key string
	value       []byte
	rev         uint64
	created     time.Time
}

func (e latestEntry) Bucket() string                  { return e.bucket }
func (e latestEntry) Key() string                     { return e.key }
func (e latestEntry) Value() []byte                   { return e.value }
func (e latestEntry) Revision() uint64                { return e.rev }
func (e latestEntry) Created() time.Time              { return e.created }
func (e latestEntry) Delta() uint64                   { return 0 }
func (e latestEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

var _ jetstream.KeyValueEntry = latestEntry{}
