import type { Client, Cooldown, Key, LeasedKey } from "./client.js";
import { anySignal, keepAliveOnce, sleep } from "./client.js";
import { ApiError, LeaseLostError } from "./errors.js";

/** Keeps a lease with a very short life from becoming a busy loop. */
const MIN_KEEP_ALIVE_INTERVAL_MS = 5;
/** A keep-alive gets at least this long to be answered. */
const MIN_KEEP_ALIVE_TRY_MS = 100;

/**
 * A key held by this client, from Client.claim(). It keeps itself alive in
 * the background at a third of the lease's remaining time, until release()
 * or until the lease is lost: then `lost` aborts, with the LeaseLostError as
 * its reason. From that moment the key may be someone else's: stop using it.
 */
export class Lease {
  /** The key as it was claimed, with its lease token. */
  readonly key: LeasedKey;
  readonly #client: Client;
  readonly #lost = new AbortController();
  readonly #stop = new AbortController();
  #expiresAt: string;
  #loop: Promise<void>;
  #released: Promise<void> | undefined;

  /** sentAt: when the request that claimed the key left (Date.now()). */
  constructor(client: Client, key: LeasedKey, sentAt: number) {
    const duration = leaseDurationMs(key);
    if (!key.leaseToken || duration <= 0) {
      throw new Error(`the server claimed key ${key.keyId} without a lease token or a lease deadline`);
    }
    this.#client = client;
    this.key = key;
    this.#expiresAt = key.leaseExpiresAt;
    this.#loop = this.#keepAlive(sentAt + duration);
  }

  /** The key's id. */
  get id(): string {
    return this.key.keyId;
  }

  /** The lease token, presented on every call of this lease. */
  get token(): string {
    return this.key.leaseToken;
  }

  /**
   * The credential the key stands for, from the claim's answer; undefined
   * for a key without one. Keep it out of logs.
   */
  get secret(): string | undefined {
    return this.key.secret;
  }

  /** The end of the lease as the server last set it (its clock, RFC 3339). */
  get expiresAt(): string {
    return this.#expiresAt;
  }

  /** Aborts when the lease is lost; its reason is a LeaseLostError. */
  get lost(): AbortSignal {
    return this.#lost.signal;
  }

  /**
   * Stops keeping the lease alive and releases the key. Throws the
   * LeaseLostError when the lease was already lost. Only the first call
   * does anything; later ones return its result.
   */
  release(signal?: AbortSignal): Promise<void> {
    return this.#end(undefined, signal);
  }

  /**
   * release(), but no claim takes the key before the cooldown (milliseconds,
   * or a duration such as "30s"; at most 24 hours) has passed: give back a
   * key that a third party rate-limited (an HTTP 429) this way. Only the
   * first call of release() or releaseWithCooldown() does anything.
   */
  releaseWithCooldown(cooldown: Cooldown, signal?: AbortSignal): Promise<void> {
    return this.#end(cooldown, signal);
  }

  #end(cooldown: Cooldown | undefined, signal: AbortSignal | undefined): Promise<void> {
    this.#released ??= (async () => {
      this.#stop.abort();
      await this.#loop;
      if (this.#lost.signal.aborted) throw this.#lost.signal.reason;
      await this.#client.releaseKey(this.key.keyId, {
        leaseToken: this.key.leaseToken,
        ...(cooldown === undefined ? {} : { cooldown }),
        ...(signal ? { signal } : {}),
      });
    })();
    return this.#released;
  }

  /**
   * Keeps the lease alive until stopped or lost. deadline is when the lease
   * ends by this machine's clock, reckoned from the server's own times and
   * the moment the request left, so that no clock skew enters. Each
   * keep-alive is one request, which this loop tries again until the lease
   * ends: the client's retries would wait out a Retry-After even past the
   * lease's end. Each try is given half the time left (at least
   * MIN_KEEP_ALIVE_TRY_MS), so that one left unanswered does not take the
   * rest of the lease with it.
   */
  async #keepAlive(deadline: number): Promise<void> {
    const stop = this.#stop.signal;
    // A third of the remaining time leaves room for two more tries should
    // one fail.
    let next = (deadline - Date.now()) / 3;
    for (;;) {
      try {
        await sleep(Math.max(next, MIN_KEEP_ALIVE_INTERVAL_MS), stop);
      } catch {
        return;
      }
      // A try gets half the time left: one that meets a network that
      // answers nothing leaves the other half for the next.
      const sent = Date.now();
      const tryMs = Math.max(Math.floor((deadline - sent) / 2), MIN_KEEP_ALIVE_TRY_MS);
      let key: Key;
      try {
        key = await this.#client[keepAliveOnce](this.key.keyId, this.key.leaseToken,
          anySignal(stop, AbortSignal.timeout(tryMs)));
      } catch (err) {
        if (stop.aborted) return;
        if (err instanceof ApiError && (err.isLeaseLost || err.isNotFound)) {
          this.#lose(`lease ${this.token} of key ${this.id}: ${err.message}`, err);
          return;
        }
        if (Date.now() >= deadline) {
          this.#lose(`lease ${this.token} of key ${this.id} ran out before a keep-alive got through`, err);
          return;
        }
        // The server or the network failed for now: try again, more often
        // as the end nears, never later than halfway to it, and not sooner
        // than the server's Retry-After where that leaves time.
        const left = (deadline - Date.now()) / 2;
        next = Math.min(next, left);
        if (err instanceof ApiError) next = Math.min(Math.max(next, err.retryAfterMs), left);
        continue;
      }
      if (stop.aborted) return;
      if (key.leaseExpiresAt) this.#expiresAt = key.leaseExpiresAt;
      deadline = sent + leaseDurationMs(key);
      next = (deadline - Date.now()) / 3;
    }
  }

  #lose(message: string, cause: unknown): void {
    this.#lost.abort(new LeaseLostError(message, this.key.keyId, this.key.leaseToken, cause));
  }
}

/**
 * How long the lease lasts from the server's answer: its end minus its start
 * (the claim or the last keep-alive), both by the database's clock.
 */
export function leaseDurationMs(key: Key): number {
  if (!key.leaseExpiresAt) return 0;
  const starts = [key.blockedAt, key.lastKeepAliveAt].filter((t): t is string => !!t).map((t) => Date.parse(t));
  if (starts.length === 0) return 0;
  return Date.parse(key.leaseExpiresAt) - Math.max(...starts);
}
