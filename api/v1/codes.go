package v1

// Error codes of the API's error body. Clients may rely on them; messages
// are for people and may change.
const (
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeUnauthorized       = "unauthorized"
	CodeInvalidName        = "invalid_name"
	CodeInvalidSpec        = "invalid_spec"
	CodeMalformedJSON      = "malformed_json"
	CodeDuplicateKey       = "duplicate_key"
	CodeSpecTooLarge       = "spec_too_large"
	CodeBadBody            = "bad_body"
	CodeBadLimit           = "bad_limit"
	CodeConflict           = "conflict"
	CodeFunctionNotFound   = "function_not_found"
	CodeInvocationNotFound = "invocation_not_found"
	CodePayloadTooLarge    = "payload_too_large"
	CodeServerBusy         = "server_busy"
	CodeQueueFull          = "queue_full"
	CodeNoInstance         = "no_instance"
	CodeStartFailed        = "start_failed"
	CodeShuttingDown       = "shutting_down"
	CodeFunctionError      = "function_error"
	CodeInitError          = "init_error"
	// CodeBadFunctionResponse: a function URL handler returned a response
	// description that is not valid.
	CodeBadFunctionResponse = "bad_function_response"
	CodeNoImageStore        = "no_image_store"
	CodeInvalidImageName    = "invalid_image_name"
	CodeImageNotFound       = "image_not_found"
	CodeImageInUse          = "image_in_use"
	CodeImageTooLarge       = "image_too_large"
	CodeBadImage            = "bad_image"
	CodeInternal            = "internal"
	// CodeCodeTooLarge: a deploy's code unpacks beyond the server's
	// per-function limit, or far beyond its archive's size (a zip bomb).
	CodeCodeTooLarge = "code_too_large"
	// CodeCodeCacheFull: a host's code cache has no room for the
	// function's code while other code is in use.
	CodeCodeCacheFull = "code_cache_full"
	// CodeNoCapacity: no worker has room for another instance.
	CodeNoCapacity = "no_capacity"
	// CodeWorkerUnavailable: the worker that should run the call cannot
	// be reached.
	CodeWorkerUnavailable = "worker_unavailable"
	CodeImageCorrupt      = "image_corrupt"
	CodeImageStoreClosed  = "image_store_closed"
	CodeInstanceNotFound  = "instance_not_found"
	CodeWorkerExists      = "worker_exists"
	CodeUnknownPlacement  = "unknown_placement_policy"
	// CodeNoMembership: this server does not track cluster nodes.
	CodeNoMembership = "no_membership"
	// CodeMembershipUnavailable: the cluster's membership cannot be read
	// now (NATS is unreachable).
	CodeMembershipUnavailable = "membership_unavailable"
	// CodeNodeIDInUse: another running process registered the same node
	// id.
	CodeNodeIDInUse = "node_id_in_use"
)

// Codes of invocations the function did not answer; they are the worker's
// failure kinds.
const (
	CodeTimeout          = "timeout"
	CodeCrash            = "crash"
	CodeOutOfMemory      = "out-of-memory"
	CodeResponseTooLarge = "response-too-large"
	CodeInstanceGone     = "instance-gone"
	// CodeNotDelivered: the instance died before it received the event;
	// Baton retries such events elsewhere, so clients see it only when
	// every attempt failed that way.
	CodeNotDelivered  = "not-delivered"
	CodeWorkerFailure = "worker"
	// CodeWorkerLost: the worker running the invocation died or was cut
	// off; the function may have run. Functions marked idempotent are run
	// again elsewhere instead.
	CodeWorkerLost = "worker-lost"
)

// Codes of cluster mode, where each function is served by the controller
// replica that owns it.
const (
	// CodeNoOwner: no controller took the function over in time (its
	// owner died and the next one has yet to take over); retry.
	CodeNoOwner = "no_owner"
	// CodeOwnershipMoved: the function moved to another controller while
	// the request waited; it did not run.
	CodeOwnershipMoved = "ownership_moved"
	// CodeOwnerUnreachable: the controller owning the function could not
	// be reached; the request did not run there.
	CodeOwnerUnreachable = "owner_unreachable"
	// CodeOwnerLost: the controller owning the function was lost while it
	// ran the request; the function may have run.
	CodeOwnerLost = "owner_lost"
	// CodeStoreUnavailable: the cluster's store (NATS JetStream) did not
	// answer, as while its servers elect new leaders; retry.
	CodeStoreUnavailable = "store_unavailable"
)

// Codes of asynchronous invocations.
const (
	CodeBadInvocationType     = "bad_invocation_type"
	CodeBadIdempotencyKey     = "bad_idempotency_key"
	CodeAsyncUnavailable      = "async_unavailable"
	CodeDeadLetterNotFound    = "dead_letter_not_found"
	CodeInvalidDeadLetterName = "invalid_dlq_name"
)

// Codes of direct transfers: a workflow step's large output stays on its
// worker and travels as a signed reference, which only Baton produces.
const (
	// CodeTransferRefForged: a reference that is not Baton's, or was altered.
	CodeTransferRefForged = "transfer_ref_forged"
	// CodeTransferRefExpired: a reference past its expiry.
	CodeTransferRefExpired = "transfer_ref_expired"
	// CodeTransferRefReplayed: a reference used more often than it allows.
	CodeTransferRefReplayed = "transfer_ref_replayed"
	// CodeTransferRefWrongApp: a reference to another application's data.
	CodeTransferRefWrongApp = "transfer_ref_wrong_app"
	// CodeTransferSourceLost: the worker that kept the data is gone, or no
	// longer has it.
	CodeTransferSourceLost = "transfer-source-lost"
	// CodeTransferCorrupt: the data did not match its reference's digest.
	CodeTransferCorrupt = "transfer_corrupt"
	// CodeTransferStoreFull: a worker had no room to keep the data.
	CodeTransferStoreFull = "transfer_store_full"
	// CodeTransferDisabled: the worker keeps no transferred data.
	CodeTransferDisabled = "transfer_disabled"
)
