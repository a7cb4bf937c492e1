/**
 * The TypeScript client of Token Orchestrator, the lease server for pools of
 * API keys. It depends on nothing but fetch (Node 20 and browsers).
 */
export { Client, MAX_IMPORT, MAX_WAIT_MS, newIdempotencyKey } from "./client.js";
export type {
  ClaimOptions, ClaimKeyOptions, ClientOptions, Cooldown, DeletedKey, Key, LabelFilter, Labels, LeasedKey, NewKey,
  PoolStatus, ReleaseKeyOptions, RetryPolicy, Stats,
} from "./client.js";
export { ApiError, LeaseLostError } from "./errors.js";
export type { ErrorCode, Problem } from "./errors.js";
export { Lease, leaseDurationMs } from "./lease.js";
export type { components, paths } from "./schema.js";
