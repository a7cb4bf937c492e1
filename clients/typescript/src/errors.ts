import type { components } from "./schema.js";

/** The server's stable, machine-readable error codes (openapi.yaml, Problem). */
export type ErrorCode = components["schemas"]["Problem"]["code"];

/** An RFC 9457 problem details body as the server sends it. */
export type Problem = components["schemas"]["Problem"];

/** The answers of 409 that say nothing about a lease. */
const OTHER_CONFLICTS: ReadonlySet<ErrorCode | undefined> = new Set<ErrorCode>([
  "idempotency_key_reused", "duplicate_secret", "duplicate_name", "pool_not_empty",
]);

/**
 * An error answer of the server. `code` is the server's stable error code;
 * it is undefined when the answer had no problem body (answers to HEAD, or
 * a proxy in front of the server).
 */
export class ApiError extends Error {
  override readonly name = "ApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The server's error code, e.g. "no_free_key". */
  readonly code: ErrorCode | undefined;
  readonly title: string;
  readonly detail: string;
  /** Identifies the request in the server's logs. */
  readonly requestId: string | undefined;
  /** The server's Retry-After in milliseconds; 0 when it sent none. */
  readonly retryAfterMs: number;

  constructor(status: number, problem: Partial<Problem>, retryAfterMs = 0) {
    const title = problem.title ?? `HTTP ${status}`;
    const detail = problem.detail ?? "";
    super(`${title}${detail ? `: ${detail}` : ""} (${status}${problem.code ? ` ${problem.code}` : ""})`);
    this.status = status;
    this.code = problem.code;
    this.title = title;
    this.detail = detail;
    this.requestId = problem.requestId;
    this.retryAfterMs = retryAfterMs;
  }

  /** Every key of the pool is held or cooling; one may be free later (404 no_free_key). */
  get isNoKeyAvailable(): boolean {
    return this.code === "no_free_key";
  }

  /**
   * The pool has neither keys nor a policy: no key comes by waiting, check
   * its name (404 unknown_pool). claim() never waits on it.
   */
  get isUnknownPool(): boolean {
    return this.code === "unknown_pool";
  }

  /** No live key has this id or name: deleted, or its life ran out (404). */
  get isNotFound(): boolean {
    return this.status === 404 && this.code !== "no_free_key" && this.code !== "unknown_pool";
  }

  /**
   * The lease token is not the key's current lease any more: the key may
   * be someone else's now (409 lease_mismatch).
   */
  get isLeaseLost(): boolean {
    return this.status === 409 && !OTHER_CONFLICTS.has(this.code);
  }

  /**
   * The key's pool requires the lease token for releases and keep-alives,
   * and none was given; nothing was changed (428 lease_token_required).
   */
  get isLeaseTokenRequired(): boolean {
    return this.code === "lease_token_required";
  }

  /**
   * A key of the pool already carries a secret of the import, or the import
   * lists one twice; nothing was created (409 duplicate_secret).
   */
  get isDuplicateSecret(): boolean {
    return this.code === "duplicate_secret";
  }

  /**
   * A key of the pool already has a name of the import, or the import lists
   * one twice; nothing was created (409 duplicate_name).
   */
  get isDuplicateName(): boolean {
    return this.code === "duplicate_name";
  }

  /**
   * The pool still has keys, and deletePool was not asked to delete them;
   * nothing was changed (409 pool_not_empty).
   */
  get isPoolNotEmpty(): boolean {
    return this.code === "pool_not_empty";
  }

  /**
   * The server has no encryption key, so it takes no secrets; nothing was
   * created (400 secrets_not_configured).
   */
  get isSecretsNotConfigured(): boolean {
    return this.code === "secrets_not_configured";
  }

  /**
   * A key was claimed under this idempotency key and that lease has ended;
   * nothing was claimed (409 idempotency_key_reused).
   */
  get isIdempotencyKeyReused(): boolean {
    return this.code === "idempotency_key_reused";
  }

  /** The server changed nothing and asks to be retried later (503). */
  get isUnavailable(): boolean {
    return this.status === 503;
  }
}

/**
 * Why a lease was lost without release: the server said the key or the lease
 * is gone (`cause` is the ApiError), or no keep-alive got through before the
 * lease ran out (`cause` is the last failure).
 */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
  readonly keyId: string;
  readonly leaseToken: string;

  constructor(message: string, keyId: string, leaseToken: string, cause: unknown) {
    super(message, { cause });
    this.keyId = keyId;
    this.leaseToken = leaseToken;
  }
}
