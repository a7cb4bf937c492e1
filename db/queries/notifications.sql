-- Notifications. The counting trigger on keys (see the migrations) sends on
-- tokenorchestrator_keys_freed when a pool that had no free key gets one.

-- name: ListenKeysFreed :exec
LISTEN tokenorchestrator_keys_freed;
