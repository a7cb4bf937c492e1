import { ApiError, type Problem } from "./errors.js";
import { Lease } from "./lease.js";
import type { components } from "./schema.js";

type Schemas = components["schemas"];
/** A key as the server describes it. */
export type Key = Schemas["Key"];
/** A key just claimed, with the token of its new lease. */
export type LeasedKey = Schemas["LeasedKey"];
/** A key as it was when deleted. */
export type DeletedKey = Schemas["DeletedKey"];
/** The live counts of every pool, and their sum. */
export type Stats = Schemas["Stats"];
/** A key to create with importKeys: an optional secret and labels. */
export type NewKey = Schemas["NewKey"];
/** Labels of a key, name to value. */
export type Labels = Schemas["Labels"];
/** A page of a pool's keys, in id order. */
export type KeyPage = Schemas["KeyPage"];
/**
 * A pool: its policy (only what it sets), what applies (the server's
 * settings where the policy sets nothing) and its counts.
 */
export type Pool = Schemas["Pool"];
/** A pool's policy as the server shows it: only the fields it sets. */
export type Policy = Schemas["Policy"];
/** What applies to a pool. keyTTL null: keys stay until deleted. */
export type EffectivePolicy = Schemas["EffectivePolicy"];
/** A pool as it was when deleted. */
export type DeletedPool = Schemas["DeletedPool"];
/** A key of an import left out by skipExisting: its index in the list, and why. */
export type SkippedKey = NonNullable<Schemas["KeyBatch"]["skipped"]>[number];

/** The most keys one importKeys call creates. */
export const MAX_IMPORT = 10_000;

/** The availability of a pool, from HEAD /keys. */
export interface PoolStatus {
  pool: string;
  keys: number;
  free: number;
  /** Keys held under a lease (the X-Pool-Blocked header keeps its name). */
  blocked: number;
  /** Whether a key could be claimed right now. */
  available: boolean;
}

/** The longest the server waits for a free key in one call. */
export const MAX_WAIT_MS = 60_000;

/**
 * How answers of 503 are retried: after minBackoffMs, then twice as long each
 * time up to maxBackoffMs, at most `attempts` tries in all. Each wait is
 * jittered over [d/2, d) and never shorter than the server's Retry-After
 * (up to maxBackoffMs).
 */
export interface RetryPolicy {
  attempts: number;
  minBackoffMs: number;
  maxBackoffMs: number;
}

export interface ClientOptions {
  /** Sent as `Authorization: Bearer <token>` with every request. */
  token?: string | undefined;
  /** Default: 5 tries from 100 ms to 5 s. `attempts: 1` disables retries. */
  retry?: Partial<RetryPolicy>;
  /** The fetch to use; default the global one (Node 20, browsers). */
  fetch?: typeof fetch;
}

/**
 * Labels a claimed key must carry, every one: as an object ({ tier: "paid" })
 * or as "name=value" strings. The server walks the first label's keys and
 * checks the others on each, so name the most selective one first (an
 * array keeps that order whatever the names).
 */
export type LabelFilter = Labels | readonly string[];

export interface ClaimKeyOptions {
  /** "default" when omitted. */
  pool?: string;
  /** Claim only a key that carries all of these labels. */
  labels?: LabelFilter;
  /** Wait up to this long (at most MAX_WAIT_MS) for a key to become free. */
  waitMs?: number;
  /**
   * Sent as Idempotency-Key: a repeat with the same key answers the lease
   * the first call got instead of claiming another (newIdempotencyKey()).
   */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface ClaimOptions {
  pool?: string;
  /** Claim only a key that carries all of these labels. */
  labels?: LabelFilter;
  /** Give up after this long (default: keep asking until `signal` aborts). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * How long a released key stays unclaimable: milliseconds, or a duration
 * the server reads ("30s", "5m", or a number of seconds); at most 24 hours.
 */
export type Cooldown = number | string;

/** A length of time: milliseconds, or a duration the server reads ("30s", "5m", "24h"). */
export type Duration = number | string;

/**
 * A pool's policy for putPool: the whole policy, each field left out is
 * unset and the server's setting applies.
 */
export interface PolicyInput {
  /** A key's life after its creation or last keep-alive; null: keys stay until deleted. */
  keyTTL?: Duration | null;
  /** A lease's length after its claim or last keep-alive. */
  leaseTTL?: Duration;
  /** The longest a lease may last from its claim, keep-alives included. */
  maxLeaseTTL?: Duration;
  /** Releases and keep-alives without the lease token throw isLeaseTokenRequired. */
  requireLeaseToken?: boolean;
  /** The longest a claim may wait for a free key (at most 60 s). */
  maxWait?: Duration;
}

export interface ImportOptions {
  /** "default" when omitted. */
  pool?: string;
  /**
   * Leave out the keys whose secret or name a key of the pool has already
   * (listed in the answer's skipped) instead of refusing the whole import.
   */
  skipExisting?: boolean;
  /**
   * The key life of the policy that secrets give a pool without one;
   * without it that policy's keys stay until deleted.
   */
  keyTTL?: Duration;
  signal?: AbortSignal;
}

/** What an import created and left out. */
export interface ImportResult {
  /** The keys created, in the order listed, without their secrets. */
  keys: Key[];
  /** The keys left out by skipExisting. */
  skipped: SkippedKey[];
  /** Whether the import's secrets gave the pool its policy (keys that stay, or keyTTL). */
  policyCreated: boolean;
}

export interface ListKeysOptions {
  /** The nextAfter of the previous page; the first page without it. */
  after?: string;
  /** Keys a page: 1 to 500, default 50. */
  limit?: number;
  signal?: AbortSignal;
}

export interface DeletePoolOptions {
  /** Delete the pool's keys too; without it a pool with keys throws isPoolNotEmpty. */
  deleteKeys?: boolean;
  signal?: AbortSignal;
}

export interface GetKeyByNameOptions {
  /** The current lease's token: the answer then carries the key's secret. */
  leaseToken?: string;
  signal?: AbortSignal;
}

export interface ReleaseKeyOptions {
  /**
   * Ends only this lease: a token that is not the current lease's throws
   * isLeaseLost and changes nothing.
   */
  leaseToken?: string;
  /** No claim takes the key before this has passed (a rate-limited key). */
  cooldown?: Cooldown;
  signal?: AbortSignal;
}

interface Request {
  method: "GET" | "HEAD" | "POST" | "PUT" | "DELETE";
  path: string;
  /** A value that is an array is sent as that many parameters of the name. */
  query?: Record<string, string | readonly string[] | undefined>;
  body?: unknown;
  /** Sent as If-Match: "<token>". */
  leaseToken?: string | undefined;
  idempotencyKey?: string | undefined;
  accept?: string;
  signal?: AbortSignal | undefined;
  /** Overrides the client's policy (readiness is never retried). */
  attempts?: number;
}

/** The Client's method for the Lease's keep-alives, kept out of its public API. */
export const keepAliveOnce: unique symbol = Symbol("keepAliveOnce");

/**
 * A client of one Token Orchestrator server, or of a load balancer in front
 * of several replicas. Error answers are thrown as ApiError; answers of 503
 * (the server changed nothing) are retried with jittered exponential
 * backoff. A claim is repeated safely only with an idempotency key, which
 * claim() always sends.
 */
export class Client {
  readonly baseUrl: string;
  readonly retry: RetryPolicy;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  /** baseUrl: e.g. "http://127.0.0.1:8080". */
  constructor(baseUrl: string, options: ClientOptions = {}) {
    const url = new URL(baseUrl);
    if ((url.protocol !== "http:" && url.protocol !== "https:") || !url.host) {
      throw new TypeError(`server URL must be http:// or https:// with a host, got ${baseUrl}`);
    }
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    const minBackoffMs = options.retry?.minBackoffMs ?? 100;
    this.retry = {
      attempts: Math.max(1, options.retry?.attempts ?? 5),
      minBackoffMs,
      maxBackoffMs: Math.max(minBackoffMs, options.retry?.maxBackoffMs ?? 5_000),
    };
    this.#token = options.token;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Creates one free key in the pool. */
  createKey(pool?: string, signal?: AbortSignal): Promise<Key> {
    return this.#json<Key>({ method: "POST", path: "/keys", query: { pool }, signal });
  }

  /**
   * Creates `count` free keys (1 to 10000) in one call, each with `seats`
   * (1 to 1000: how many leases may hold it at once; default: the pool's
   * policy's, or 1).
   */
  async createKeys(count: number, pool?: string, signal?: AbortSignal, seats?: number): Promise<Key[]> {
    const body = seats === undefined ? { count } : { count, seats };
    const batch = await this.#json<Schemas["KeyBatch"]>({ method: "POST", path: "/keys", query: { pool }, body, signal });
    return batch.keys;
  }

  /**
   * Creates the keys, with their secrets, names and labels, in one call (at
   * most MAX_IMPORT) and answers them in the order given, without their
   * secrets. importBatch does the same with more options.
   */
  async importKeys(keys: readonly NewKey[], pool?: string, signal?: AbortSignal): Promise<Key[]> {
    const result = await this.importBatch(keys, { ...(pool === undefined ? {} : { pool }), ...(signal ? { signal } : {}) });
    return result.keys;
  }

  /**
   * Creates the keys, with their secrets, names and labels, in one call (at
   * most MAX_IMPORT). A secret or name that a key of the pool already has,
   * or one listed twice, throws isDuplicateSecret or isDuplicateName (the
   * detail names keys[i]), unless skipExisting leaves the pool's out; a
   * server without an encryption key throws isSecretsNotConfigured. Either
   * way nothing is created. Secrets imported into a pool without a policy
   * give it one whose keys stay until deleted (or live keyTTL):
   * policyCreated says so.
   */
  async importBatch(keys: readonly NewKey[], options: ImportOptions = {}): Promise<ImportResult> {
    const body = {
      keys,
      ...(options.skipExisting ? { skipExisting: true } : {}),
      ...(options.keyTTL === undefined ? {} : { keyTTL: durationParam("keyTTL", options.keyTTL) }),
    };
    const batch = await this.#json<Schemas["KeyBatch"]>({ method: "POST", path: "/keys", query: { pool: options.pool }, body, signal: options.signal });
    return { keys: batch.keys, skipped: batch.skipped ?? [], policyCreated: batch.policyCreated ?? false };
  }

  /**
   * Claims a random free key of the pool and returns it with its lease
   * token; throws an ApiError with isNoKeyAvailable when none became free
   * within waitMs, and with isUnknownPool at once when the pool has no keys
   * (a misspelt name). With labels, only a key carrying all of them is claimed.
   * The answer carries the key's secret, if it has one. The lease ends
   * unless kept alive: claim() does that.
   */
  claimKey(options: ClaimKeyOptions = {}): Promise<LeasedKey> {
    const wait = options.waitMs && options.waitMs > 0 ? `${Math.ceil(Math.min(options.waitMs, MAX_WAIT_MS))}ms` : undefined;
    return this.#json<LeasedKey>({
      method: "GET", path: "/keys", query: { pool: options.pool, wait, label: labelParams(options.labels) },
      idempotencyKey: options.idempotencyKey, signal: options.signal,
    });
  }

  /** How many keys the pool has and whether one is free, claiming nothing. */
  async poolStatus(pool?: string, signal?: AbortSignal): Promise<PoolStatus> {
    const { headers } = await this.#send({ method: "HEAD", path: "/keys", query: { pool }, signal });
    const int = (name: string) => Number.parseInt(headers.get(name) ?? "", 10);
    return {
      pool: headers.get("X-Pool") ?? "",
      keys: int("X-Pool-Keys"), free: int("X-Pool-Free"), blocked: int("X-Pool-Blocked"),
      available: headers.get("X-Pool-Available") === "true",
    };
  }

  /** The key with this id; never with its secret. */
  getKey(id: string, signal?: AbortSignal): Promise<Key> {
    return this.#json<Key>({ method: "GET", path: keyPath(id), signal });
  }

  /**
   * The key with its secret (undefined for a key without one), while
   * leaseToken is its current lease's; another token throws isLeaseLost.
   */
  getKeySecret(id: string, leaseToken: string, signal?: AbortSignal): Promise<Key> {
    return this.#json<Key>({ method: "GET", path: keyPath(id), leaseToken, signal });
  }

  /** Deletes the key for good; answers it as it was. */
  deleteKey(id: string, signal?: AbortSignal): Promise<DeletedKey> {
    return this.#json<DeletedKey>({ method: "DELETE", path: keyPath(id), signal });
  }

  /**
   * The key of the pool with this name (isNotFound when none); with the
   * current lease's token, its secret too (another token throws isLeaseLost).
   */
  getKeyByName(pool: string, name: string, options: GetKeyByNameOptions = {}): Promise<Key> {
    return this.#json<Key>({ method: "GET", path: namedKeyPath(pool, name), leaseToken: options.leaseToken, signal: options.signal });
  }

  /** Deletes the key of the pool with this name for good; answers it as it was. */
  deleteKeyByName(pool: string, name: string, signal?: AbortSignal): Promise<DeletedKey> {
    return this.#json<DeletedKey>({ method: "DELETE", path: namedKeyPath(pool, name), signal });
  }

  /**
   * A page of the pool's live keys in id order, with their names and secret
   * hints (never secrets or lease tokens); claims nothing. The next page
   * starts after the page's nextAfter (null on the last page).
   */
  listKeys(pool: string, options: ListKeysOptions = {}): Promise<KeyPage> {
    return this.#json<KeyPage>({
      method: "GET", path: `${poolPath(pool)}/keys`,
      query: { after: options.after, limit: options.limit === undefined ? undefined : String(options.limit) },
      signal: options.signal,
    });
  }

  /**
   * Creates or replaces the pool's policy: the whole policy, a field left
   * out is unset. A new keyTTL applies to the pool's keys at once
   * (keysRebased counts them); running leases keep their deadlines.
   */
  putPool(pool: string, policy: PolicyInput = {}, signal?: AbortSignal): Promise<Pool> {
    const body: Record<string, unknown> = {};
    if (policy.keyTTL !== undefined) body.keyTTL = policy.keyTTL === null ? null : durationParam("keyTTL", policy.keyTTL);
    for (const name of ["leaseTTL", "maxLeaseTTL", "maxWait"] as const) {
      const value = policy[name];
      if (value !== undefined) body[name] = durationParam(name, value);
    }
    if (policy.requireLeaseToken !== undefined) body.requireLeaseToken = policy.requireLeaseToken;
    return this.#json<Pool>({ method: "PUT", path: poolPath(pool), body, signal });
  }

  /** The pool's policy, what applies, and its counts; isUnknownPool when it has neither keys nor a policy. */
  getPool(pool: string, signal?: AbortSignal): Promise<Pool> {
    return this.#json<Pool>({ method: "GET", path: poolPath(pool), signal });
  }

  /** Every pool that has a policy or keys, in name order. */
  async listPools(signal?: AbortSignal): Promise<Pool[]> {
    const list = await this.#json<Schemas["PoolList"]>({ method: "GET", path: "/pools", signal });
    return list.pools;
  }

  /**
   * Removes the pool's policy. A pool that has keys throws isPoolNotEmpty
   * unless deleteKeys, which deletes them for good first.
   */
  deletePool(pool: string, options: DeletePoolOptions = {}): Promise<DeletedPool> {
    return this.#json<DeletedPool>({
      method: "DELETE", path: poolPath(pool), query: { deleteKeys: options.deleteKeys ? "true" : undefined }, signal: options.signal,
    });
  }

  /**
   * Frees the key at once. With a lease token only that lease is ended: a
   * token that is not the current lease's throws isLeaseLost and changes
   * nothing. With a cooldown the key is free but no claim takes it before
   * the cooldown is over (its coolingUntil). Releasing a free key succeeds.
   * The second argument is the lease token itself, or the options.
   */
  async releaseKey(id: string, options?: string | ReleaseKeyOptions, signal?: AbortSignal): Promise<Key> {
    const o: ReleaseKeyOptions = typeof options === "string" ? { leaseToken: options } : options ?? {};
    return this.#json<Key>({
      method: "PUT", path: keyPath(id), query: { cooldown: cooldownParam(o.cooldown) },
      leaseToken: o.leaseToken, signal: o.signal ?? signal,
    });
  }

  /**
   * Resets the key's life and, with the current lease's token, extends the
   * lease. A stale token throws isLeaseLost and changes nothing.
   */
  keepAlive(id: string, leaseToken?: string, signal?: AbortSignal): Promise<Key> {
    return this.#json<Key>({ method: "PUT", path: `${keyPath(id)}/keepalive`, leaseToken, signal });
  }

  /**
   * One keep-alive request, never retried: the Lease retries it itself,
   * within the lease's time.
   */
  [keepAliveOnce](id: string, leaseToken: string, signal: AbortSignal): Promise<Key> {
    return this.#json<Key>({ method: "PUT", path: `${keyPath(id)}/keepalive`, leaseToken, signal, attempts: 1 });
  }

  /** The live counts of every pool (admin token). */
  stats(signal?: AbortSignal): Promise<Stats> {
    return this.#json<Stats>({ method: "GET", path: "/stats", signal });
  }

  /** Resolves when the server runs (GET /healthz). */
  async health(signal?: AbortSignal): Promise<void> {
    await this.#send({ method: "GET", path: "/healthz", signal });
  }

  /** Resolves when the server can serve (GET /readyz); a 503 is not retried. */
  async ready(signal?: AbortSignal): Promise<void> {
    await this.#send({ method: "GET", path: "/readyz", signal, attempts: 1 });
  }

  /**
   * Claims a key of the pool (carrying every one of labels, if given),
   * waiting for one to become free until timeoutMs passes or signal aborts, and keeps the lease alive until
   * release() or until it is lost (lease.lost aborts). A pool that has no keys
   * is not waited for: that throws an ApiError with isUnknownPool at once. Every request of one
   * claim() carries the same Idempotency-Key, so a claim repeated after its
   * answer was lost gets the lease the first one got and never a second key.
   */
  async claim(options: ClaimOptions = {}): Promise<Lease> {
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    let idempotencyKey = newIdempotencyKey();
    for (;;) {
      let waitMs = MAX_WAIT_MS;
      if (deadline !== undefined) {
        // Leave the server time to answer before the deadline, so that the
        // call ends with no_free_key rather than a cut request.
        waitMs = Math.min(waitMs, ((deadline - Date.now()) * 9) / 10);
      }
      const signal = deadline === undefined ? options.signal : anySignal(options.signal, AbortSignal.timeout(Math.max(0, deadline - Date.now())));
      const sent = Date.now();
      try {
        const key = await this.claimKey({
          ...(options.pool === undefined ? {} : { pool: options.pool }),
          ...(options.labels === undefined ? {} : { labels: options.labels }),
          waitMs, idempotencyKey, ...(signal ? { signal } : {}),
        });
        return new Lease(this, key, sent);
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason;
        if (deadline !== undefined && Date.now() >= deadline) {
          throw err instanceof ApiError ? err : new ApiError(404, { code: "no_free_key", title: "No key available", detail: `no key of the pool became free within ${options.timeoutMs}ms` });
        }
        if (!(err instanceof ApiError)) throw err;
        if (err.isIdempotencyKeyReused) {
          // A key was claimed for this claim(), but its lease ended before
          // any answer got through: nobody holds it, so claim afresh.
          idempotencyKey = newIdempotencyKey();
          continue;
        }
        if (!err.isNoKeyAvailable) throw err;
        if (waitMs <= 0) await sleep(this.retry.minBackoffMs - (Date.now() - sent), options.signal);
      }
    }
  }

  async #json<T>(req: Request): Promise<T> {
    const { body } = await this.#send(req);
    try {
      return JSON.parse(body) as T;
    } catch (err) {
      throw new Error(`the answer to ${req.method} ${req.path} is not JSON`, { cause: err });
    }
  }

  /**
   * Sends the request, retrying answers of 503; throws error answers as
   * ApiError. A request with an idempotency key is also sent again when its
   * connection failed before an answer came: the server answers the repeat
   * with what it did for the first.
   */
  async #send(req: Request): Promise<{ status: number; headers: Headers; body: string }> {
    const url = new URL(this.baseUrl + req.path);
    for (const [name, value] of Object.entries(req.query ?? {})) {
      for (const v of typeof value === "string" ? [value] : value ?? []) {
        if (v !== "") url.searchParams.append(name, v);
      }
    }
    const headers: Record<string, string> = { Accept: `${req.accept ?? "application/json"}, application/problem+json` };
    let body: string | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers["Content-Type"] = "application/json";
    }
    if (req.leaseToken) headers["If-Match"] = `"${req.leaseToken}"`;
    if (req.idempotencyKey) headers["Idempotency-Key"] = req.idempotencyKey;
    if (this.#token) headers.Authorization = `Bearer ${this.#token}`;

    const attempts = req.attempts ?? this.retry.attempts;
    let backoff = this.retry.minBackoffMs;
    for (let attempt = 1; ; attempt++) {
      let resp: Response;
      let text: string;
      try {
        resp = await this.#fetch(url, { method: req.method, headers, body: body ?? null, signal: req.signal ?? null });
        text = await resp.text();
      } catch (err) {
        // fetch throws a TypeError when the connection failed; an abort or
        // a timeout of the caller's signal is not retried.
        if (!req.idempotencyKey || attempt >= attempts || req.signal?.aborted || !(err instanceof TypeError)) throw err;
        await sleep(jitter(backoff), req.signal);
        backoff = Math.min(2 * backoff, this.retry.maxBackoffMs);
        continue;
      }
      if (resp.status < 400) return { status: resp.status, headers: resp.headers, body: text };
      const error = problem(resp.status, resp.headers, text);
      if (resp.status !== 503 || attempt >= attempts) throw error;
      // The server changed nothing: the same request may be sent again.
      await sleep(Math.min(Math.max(jitter(backoff), error.retryAfterMs), this.retry.maxBackoffMs), req.signal);
      backoff = Math.min(2 * backoff, this.retry.maxBackoffMs);
    }
  }
}

/** A random idempotency key: 128 random bits in hex. */
export function newIdempotencyKey(): string {
  const raw = new Uint8Array(16);
  globalThis.crypto.getRandomValues(raw);
  return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads an error answer; a body that is not problem details still gives the status. */
function problem(status: number, headers: Headers, body: string): ApiError {
  let p: Partial<Problem> = {};
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === "object") p = parsed as Partial<Problem>;
  } catch {
    // Not JSON: a proxy's page, or no body (HEAD).
  }
  return new ApiError(status, p, retryAfterMs(headers.get("Retry-After")));
}

/** Retry-After as seconds or an HTTP date, in milliseconds. */
function retryAfterMs(value: string | null): number {
  if (!value) return 0;
  if (/^\d+$/.test(value.trim())) return Number.parseInt(value, 10) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? 0 : Math.max(0, at - Date.now());
}

/** Spreads the retries of many clients over [d/2, d). */
export function jitter(ms: number): number {
  return ms <= 1 ? ms : ms / 2 + Math.random() * (ms / 2);
}

/** Waits ms, or throws the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    if (ms <= 0) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A signal that aborts when any of the given ones does. */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal {
  return AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined));
}

/** The label query parameters, "name=value" each, in the caller's order. */
function labelParams(labels: LabelFilter | undefined): readonly string[] | undefined {
  if (labels === undefined) return undefined;
  if (isStringArray(labels)) return labels;
  return Object.entries(labels).map(([name, value]) => `${name}=${value}`);
}

function isStringArray(labels: LabelFilter): labels is readonly string[] {
  return Array.isArray(labels);
}

/** A cooldown in milliseconds as a duration the server reads; strings as given. */
function cooldownParam(cooldown: Cooldown | undefined): string | undefined {
  if (cooldown === undefined) return undefined;
  return durationParam("cooldown", cooldown);
}

/** Milliseconds as a duration the server reads; strings as given. */
function durationParam(name: string, value: Duration): string {
  if (typeof value === "string") return value;
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a number of milliseconds from 0, got ${value}`);
  return `${Math.ceil(value)}ms`;
}

/** The id stays one path segment, whatever the caller passes. */
function keyPath(id: string): string {
  return `/keys/${encodeURIComponent(id)}`;
}

function poolPath(pool: string): string {
  return `/pools/${encodeURIComponent(pool)}`;
}

function namedKeyPath(pool: string, name: string): string {
  return `${poolPath(pool)}/keys/${encodeURIComponent(name)}`;
}
