/**
 * The TypeScript client of Token Orchestrator, the lease server for pools of
 * API keys. It depends on nothing but fetch (Node 20 and browsers).
 */
export { Client, MAX_IMPORT, MAX_WAIT_MS, newIdempotencyKey } from "./client.js";
export type {
  ClaimOptions, ClaimKeyOptions, ClientOptions, Cooldown, DeletedKey, DeletedPool, DeletePoolOptions, Duration,
  EffectivePolicy, GetKeyByNameOptions, ImportOptions, ImportResult, Key, KeyPage, LabelFilter, Labels, LeasedKey,
  ListKeysOptions, NewKey, Policy, PolicyInput, Pool, PoolStatus, ReleaseKeyOptions, RetryPolicy, SkippedKey, Stats,
} from "./client.js";
export { ApiError, LeaseLostError } from "./errors.js";
export type { ErrorCode, Problem } from "./errors.js";
export { Lease, leaseDurationMs } from "./lease.js";
export type { components, paths } from "./schema.js";
