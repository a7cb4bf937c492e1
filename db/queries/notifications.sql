-- Notifications. Every statement that frees keys of a pool sends on
-- tokenorchestrator_keys_freed while some replica has clients waiting for a
-- key of that pool (announce_freed, migration 00005).

-- name: ListenKeysFreed :exec
LISTEN tokenorchestrator_keys_freed;
