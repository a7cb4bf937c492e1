// Tests of the client against a real server: TO_URL names it, started with
// a lease of TO_LEASE_TTL_MS (client_test.go in this directory does that;
// `make test/typescript` runs it). The 503 tests use a stub of their own.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { describe, it } from "node:test";

import { ApiError, Client, LeaseLostError, newIdempotencyKey } from "../src/index.js";

const url = process.env.TO_URL;
const leaseTtlMs = Number(process.env.TO_LEASE_TTL_MS ?? "1000");
const needsServer = url ? {} : { skip: "TO_URL is not set: run make test/typescript" };
const client = new Client(url ?? "http://127.0.0.1:1");

/** A pool of the test's own, so that tests running at once never share keys. */
function pool(): string {
  return `ts-${randomUUID()}`;
}

describe("against the server", needsServer, () => {
  it("claims and releases a key", async () => {
    const p = pool();
    const [created] = await client.createKeys(2, p);
    assert.ok(created);
    const key = await client.claimKey({ pool: p });
    assert.equal(key.pool, p);
    assert.equal(key.isBlocked, true);
    assert.match(key.leaseToken, /^[0-9]+$/);
    assert.deepEqual(await client.poolStatus(p), { pool: p, keys: 2, free: 1, blocked: 1, available: true });

    const released = await client.releaseKey(key.keyId, key.leaseToken);
    assert.equal(released.isBlocked, false);
    assert.equal((await client.getKey(key.keyId)).isBlocked, false);
    const stats = await client.stats();
    assert.deepEqual(stats.pools.find((s) => s.pool === p)?.free, 2);
  });

  it("keeps a lease alive past its TTL, then releases it", async () => {
    const p = pool();
    await client.createKey(p);
    const lease = await client.claim({ pool: p, timeoutMs: 5_000 });
    const firstEnd = lease.expiresAt;
    await new Promise((resolve) => setTimeout(resolve, 2.5 * leaseTtlMs));
    assert.equal(lease.lost.aborted, false, "the lease was lost while kept alive");
    assert.ok(Date.parse(lease.expiresAt) > Date.parse(firstEnd), "keep-alives moved the lease's end");
    const key = await client.getKey(lease.id);
    assert.equal(key.isBlocked, true);
    assert.equal(key.leaseExpiresAt, lease.expiresAt);

    // Still the holder: nobody else can have it.
    await assert.rejects(client.claimKey({ pool: p }), (err: unknown) => err instanceof ApiError && err.isNoKeyAvailable);
    await lease.release();
    assert.equal((await client.getKey(lease.id)).isBlocked, false);
    await lease.release(); // only the first call does anything
  });

  it("aborts the lost signal when the key is deleted", async () => {
    const p = pool();
    await client.createKey(p);
    const lease = await client.claim({ pool: p });
    const lost = new Promise<unknown>((resolve) => lease.lost.addEventListener("abort", () => resolve(lease.lost.reason)));
    await client.deleteKey(lease.id);
    const reason = await lost;
    assert.ok(reason instanceof LeaseLostError);
    assert.equal(reason.keyId, lease.id);
    assert.ok(reason.cause instanceof ApiError && reason.cause.isNotFound && reason.cause.code === "key_not_found");
    await assert.rejects(lease.release(), (err: unknown) => err === reason);
  });

  it("answers a repeated idempotent claim with the same lease", async () => {
    const p = pool();
    await client.createKeys(3, p);
    const idempotencyKey = newIdempotencyKey();
    const first = await client.claimKey({ pool: p, idempotencyKey });
    const again = await client.claimKey({ pool: p, idempotencyKey });
    assert.equal(again.keyId, first.keyId);
    assert.equal(again.leaseToken, first.leaseToken);
    assert.equal((await client.poolStatus(p)).blocked, 1, "the repeat claimed nothing more");

    // Once that lease has ended, the key claims nothing.
    await client.releaseKey(first.keyId, first.leaseToken);
    await assert.rejects(client.claimKey({ pool: p, idempotencyKey }), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.code, "idempotency_key_reused");
      assert.ok(err.isIdempotencyKeyReused && !err.isLeaseLost);
      return true;
    });
  });

  it("waits for a key to become free", async () => {
    const p = pool();
    await client.createKey(p);
    const holder = await client.claimKey({ pool: p });
    setTimeout(() => void client.releaseKey(holder.keyId, holder.leaseToken), 200);
    const started = Date.now();
    const lease = await client.claim({ pool: p, timeoutMs: 10_000 });
    assert.equal(lease.id, holder.keyId);
    assert.ok(Date.now() - started >= 150, "the key was not free before its release");
    await lease.release();
  });

  it("throws typed errors with the server's code", async () => {
    const p = pool();
    await assert.rejects(client.getKey(randomUUID()), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 404);
      assert.equal(err.code, "key_not_found");
      assert.ok(err.isNotFound && !err.isNoKeyAvailable);
      return true;
    });
    await assert.rejects(client.claimKey({ pool: p }), (err: unknown) =>
      err instanceof ApiError && err.code === "unknown_pool" && err.isUnknownPool && !err.isNoKeyAvailable && !err.isNotFound);

    const key = await client.createKey(p);
    const lease = await client.claimKey({ pool: p });
    await assert.rejects(client.claimKey({ pool: p }), (err: unknown) =>
      err instanceof ApiError && err.code === "no_free_key" && err.isNoKeyAvailable && !err.isUnknownPool && !err.isNotFound);
    await assert.rejects(client.claim({ pool: p, timeoutMs: 300 }), (err: unknown) =>
      err instanceof ApiError && err.isNoKeyAvailable);
    await assert.rejects(client.releaseKey(key.keyId, `${Number(lease.leaseToken) + 1000}`), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 409);
      assert.equal(err.code, "lease_mismatch");
      assert.ok(err.isLeaseLost);
      return true;
    });
    assert.equal((await client.getKey(key.keyId)).isBlocked, true, "a stale token changed nothing");
    await assert.rejects(client.createKeys(0, p), (err: unknown) =>
      err instanceof ApiError && err.status === 400 && err.code === "invalid_body");
  });

  it("never waits on a pool that has no keys", async () => {
    const p = pool();
    const unknownPool = (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 404);
      assert.equal(err.code, "unknown_pool");
      assert.ok(err.isUnknownPool && !err.isNoKeyAvailable && !err.isNotFound);
      return true;
    };
    const started = Date.now();
    await assert.rejects(client.claimKey({ pool: p, waitMs: 30_000 }), unknownPool);
    await assert.rejects(client.claimKey({ pool: p, labels: { tier: "paid" }, waitMs: 30_000 }), unknownPool);
    await assert.rejects(client.claim({ pool: p, timeoutMs: 60_000 }), unknownPool);
    await assert.rejects(client.claim({ pool: p }), unknownPool);
    assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started}ms, not at once`);
  });

  it("checks health and readiness", async () => {
    await client.health();
    await client.ready();
  });

  it("imports keys with secrets and labels, and shows a secret only with the lease token", async () => {
    const p = pool();
    const imported = await client.importKeys([
      { secret: `sk-paid-${p}`, labels: { tier: "paid", region: "eu" } },
      { secret: `sk-free-${p}`, labels: { tier: "free" } },
      { labels: { tier: "free" } },
    ], p);
    assert.equal(imported.length, 3);
    assert.deepEqual(imported.map((k) => k.labels), [{ tier: "paid", region: "eu" }, { tier: "free" }, { tier: "free" }]);
    assert.ok(imported.every((k) => k.pool === p && !k.isBlocked && k.secret === undefined && k.coolingUntil === null),
      "an import never echoes secrets");
    assert.equal((await client.poolStatus(p)).keys, 3);
    const [paid] = imported;
    assert.ok(paid);

    const key = await client.claimKey({ pool: p, labels: { tier: "paid" } });
    assert.equal(key.keyId, paid.keyId);
    assert.equal(key.secret, `sk-paid-${p}`);
    assert.deepEqual(key.labels, { tier: "paid", region: "eu" });

    const plain = await client.getKey(key.keyId);
    assert.equal(plain.isBlocked, true);
    assert.equal(plain.secret, undefined, "GET /keys/{id} without the token shows no secret");
    assert.equal((await client.getKeySecret(key.keyId, key.leaseToken)).secret, `sk-paid-${p}`);
    await assert.rejects(client.getKeySecret(key.keyId, `${Number(key.leaseToken) + 1000}`), (err: unknown) =>
      err instanceof ApiError && err.code === "lease_mismatch" && err.isLeaseLost);

    // Once the lease is released its token shows nothing either.
    await client.releaseKey(key.keyId, key.leaseToken);
    await assert.rejects(client.getKeySecret(key.keyId, key.leaseToken), (err: unknown) =>
      err instanceof ApiError && err.isLeaseLost);
  });

  it("claims only a key that carries every label", async () => {
    const p = pool();
    const [eu, us] = await client.importKeys([
      { secret: `sk-eu-${p}`, labels: { tier: "paid", region: "eu" } },
      { secret: `sk-us-${p}`, labels: { tier: "paid", region: "us" } },
      { labels: { tier: "free", region: "eu" } },
    ], p);
    assert.ok(eu && us);
    // Both forms, several times: a random claim would soon take another key.
    for (let i = 0; i < 3; i++) {
      const key = await client.claimKey({ pool: p, labels: ["region=eu", "tier=paid"] });
      assert.equal(key.keyId, eu.keyId);
      assert.equal(key.secret, `sk-eu-${p}`);
      await client.releaseKey(key.keyId, key.leaseToken);
      const other = await client.claimKey({ pool: p, labels: { tier: "paid", region: "us" } });
      assert.equal(other.keyId, us.keyId);
      assert.equal(other.secret, `sk-us-${p}`);
      await client.releaseKey(other.keyId, other.leaseToken);
    }
    const held = await client.claimKey({ pool: p, labels: { region: "eu", tier: "paid" } });
    // A free key of the pool is left (the free one in eu), but none matches.
    await assert.rejects(client.claimKey({ pool: p, labels: { tier: "paid", region: "eu" } }), (err: unknown) =>
      err instanceof ApiError && err.isNoKeyAvailable);
    await assert.rejects(client.claimKey({ pool: p, labels: ["tier=gold"] }), (err: unknown) =>
      err instanceof ApiError && err.isNoKeyAvailable);
    await client.releaseKey(held.keyId, held.leaseToken);
  });

  it("waits for a labelled key, idempotently, and claim() passes the labels on", async () => {
    const p = pool();
    const [paid] = await client.importKeys([
      { secret: `sk-paid-${p}`, labels: { tier: "paid" } },
      { labels: { tier: "free" } },
    ], p);
    assert.ok(paid);
    const holder = await client.claimKey({ pool: p, labels: { tier: "paid" } });
    setTimeout(() => void client.releaseKey(holder.keyId, holder.leaseToken), 200);
    const idempotencyKey = newIdempotencyKey();
    const started = Date.now();
    const key = await client.claimKey({ pool: p, labels: { tier: "paid" }, waitMs: 5_000, idempotencyKey });
    assert.ok(Date.now() - started >= 150, "the free key without the label was not taken");
    assert.equal(key.keyId, paid.keyId);
    const again = await client.claimKey({ pool: p, labels: { tier: "paid" }, idempotencyKey });
    assert.equal(again.leaseToken, key.leaseToken);
    assert.equal(again.secret, `sk-paid-${p}`, "an idempotent repeat carries the secret too");
    await client.releaseKey(key.keyId, key.leaseToken);

    const lease = await client.claim({ pool: p, labels: { tier: "paid" }, timeoutMs: 5_000 });
    assert.equal(lease.id, paid.keyId);
    assert.equal(lease.secret, `sk-paid-${p}`);
    await lease.release();
    const unlabelled = await client.claim({ pool: p, labels: ["tier=free"], timeoutMs: 5_000 });
    assert.notEqual(unlabelled.id, paid.keyId);
    assert.equal(unlabelled.secret, undefined, "a key without a secret has none");
    await unlabelled.release();
  });

  it("keeps a key released with a cooldown from every claim until it is over", async () => {
    const p = pool();
    await client.importKeys([{ secret: `sk-${p}`, labels: { tier: "paid" } }], p);
    const lease = await client.claim({ pool: p, timeoutMs: 5_000 });
    const cooldownMs = 600;
    const released = Date.now();
    await lease.releaseWithCooldown(cooldownMs);
    await lease.release(); // only the first call does anything: the key still cools below

    const key = await client.getKey(lease.id);
    assert.equal(key.isBlocked, false);
    assert.ok(key.coolingUntil, "coolingUntil is set");
    assert.ok(Date.parse(key.coolingUntil) > Date.parse(key.blockedAt ?? key.createdAt), "coolingUntil lies ahead");
    await assert.rejects(client.claimKey({ pool: p }), (err: unknown) => err instanceof ApiError && err.isNoKeyAvailable,
      "a cooling key is not claimed");
    await assert.rejects(client.claimKey({ pool: p, labels: { tier: "paid" } }), (err: unknown) =>
      err instanceof ApiError && err.isNoKeyAvailable);
    assert.equal((await client.poolStatus(p)).available, false);

    // A claim that waits gets it once the cooldown is over, and not before.
    const again = await client.claimKey({ pool: p, waitMs: 10_000 });
    assert.equal(again.keyId, lease.id);
    assert.ok(Date.now() - released >= cooldownMs - 50, `claimed again ${Date.now() - released}ms after a ${cooldownMs}ms cooldown`);

    // The plain call takes a cooldown as a duration string.
    const cooled = await client.releaseKey(again.keyId, { leaseToken: again.leaseToken, cooldown: "30s" });
    assert.ok(cooled.coolingUntil);
    const ahead = Date.parse(cooled.coolingUntil) - Date.now();
    assert.ok(ahead > 25_000 && ahead <= 31_000, `coolingUntil is ${ahead}ms ahead for a 30s cooldown`);
    await assert.rejects(client.claimKey({ pool: p }), (err: unknown) => err instanceof ApiError && err.isNoKeyAvailable);
  });

  it("refuses a duplicate secret with a typed error, creating nothing", async () => {
    const p = pool();
    await client.importKeys([{ secret: `sk-${p}` }], p);
    const duplicate = (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 409);
      assert.equal(err.code, "duplicate_secret");
      assert.ok(err.isDuplicateSecret && !err.isLeaseLost && !err.isSecretsNotConfigured);
      return true;
    };
    await assert.rejects(client.importKeys([{ secret: `sk-other-${p}` }, { secret: `sk-${p}` }], p), duplicate);
    await assert.rejects(client.importKeys([{ secret: `sk-twice-${p}` }, { secret: `sk-twice-${p}` }], p), duplicate);
    assert.equal((await client.poolStatus(p)).keys, 1, "nothing was created");
    // Another pool may hold the same secret.
    assert.equal((await client.importKeys([{ secret: `sk-${p}` }], pool())).length, 1);
  });

  it("lends a key of several seats to as many holders, each with a token", async () => {
    const p = pool();
    const [key] = await client.createKeys(1, p, undefined, 2);
    assert.equal(key!.seats, 2);
    const first = await client.claimKey({ pool: p });
    const second = await client.claimKey({ pool: p });
    assert.equal(first.keyId, key!.keyId);
    assert.equal(second.keyId, key!.keyId);
    assert.notEqual(first.leaseToken, second.leaseToken);
    const whole = await client.getKey(key!.keyId);
    assert.deepEqual([whole.seatsHeld, whole.isBlocked], [2, true]);
    assert.deepEqual([(await client.getPool(p)).seats, (await client.getPool(p)).held], [2, 2]);
  });

  it("gives a pool a policy that its leases follow, lists it, and deletes it", async () => {
    const p = pool();
    await client.createKeys(2, p);
    const before = await client.getPool(p);
    assert.equal(before.hasPolicy, false, "keys alone make no policy");
    assert.deepEqual(before.policy, {});
    assert.equal(before.createdAt, null);

    const put = await client.putPool(p, { keyTTL: null, leaseTTL: "2s", maxLeaseTTL: 3_000, requireLeaseToken: true, maxWait: "100ms" });
    assert.equal(put.pool, p);
    assert.equal(put.hasPolicy, true);
    assert.deepEqual(put.policy, { keyTTL: null, leaseTTL: "2s", maxLeaseTTL: "3s", requireLeaseToken: true, maxWait: "100ms" });
    assert.deepEqual(put.effective, { keyTTL: null, leaseTTL: "2s", maxLeaseTTL: "3s", requireLeaseToken: true, maxWait: "100ms", seats: 1 });
    assert.equal(put.keysRebased, 2, "the pool's keys now stay");
    assert.deepEqual([put.keys, put.seats, put.free, put.held], [2, 2, 2, 0]);
    assert.ok(put.createdAt && put.updatedAt);
    assert.deepEqual((await client.getPool(p)).policy, put.policy);
    const listed = (await client.listPools()).find((x) => x.pool === p);
    assert.ok(listed, "listPools shows the pool");
    assert.deepEqual(listed.policy, put.policy);

    const key = await client.claimKey({ pool: p });
    assert.equal(key.expiresAt, null, "a key of the pool stays");
    const leaseMs = Date.parse(key.leaseExpiresAt) - Date.parse(key.blockedAt ?? "");
    assert.ok(Math.abs(leaseMs - 2_000) < 50, `a lease of the pool's 2s, got ${leaseMs}ms`);
    assert.deepEqual([(await client.getPool(p)).held, (await client.getPool(p)).free], [1, 1]);

    // The pool requires the lease token for releases and keep-alives.
    for (const call of [() => client.releaseKey(key.keyId), () => client.keepAlive(key.keyId)]) {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.status, 428);
        assert.equal(err.code, "lease_token_required");
        assert.ok(err.isLeaseTokenRequired && !err.isLeaseLost && !err.isNotFound);
        return true;
      });
    }
    assert.equal((await client.getKey(key.keyId)).isBlocked, true, "nothing was released");
    assert.equal((await client.releaseKey(key.keyId, key.leaseToken)).isBlocked, false);

    // A claim() keeps its lease alive and releases it with its token.
    const lease = await client.claim({ pool: p, timeoutMs: 5_000 });
    await lease.release();
    assert.equal((await client.getKey(lease.id)).isBlocked, false);

    // A pool with keys is deleted only with them.
    await assert.rejects(client.deletePool(p), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 409);
      assert.equal(err.code, "pool_not_empty");
      assert.ok(err.isPoolNotEmpty && !err.isLeaseLost);
      return true;
    });
    assert.deepEqual(await client.deletePool(p, { deleteKeys: true }), { pool: p, deleted: true, deletedKeys: 2 });
    const unknown = (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 404);
      assert.equal(err.code, "unknown_pool");
      assert.ok(err.isUnknownPool && !err.isNotFound && !err.isNoKeyAvailable);
      return true;
    };
    await assert.rejects(client.getPool(p), unknown);
    await assert.rejects(client.deletePool(p), unknown);
    assert.equal((await client.listPools()).find((x) => x.pool === p), undefined);

    // A policy without keys makes a pool, which then goes with no keys to delete.
    const empty = pool();
    assert.deepEqual((await client.putPool(empty)).policy, {});
    assert.equal((await client.getPool(empty)).keys, 0);
    assert.equal((await client.deletePool(empty)).deletedKeys, 0);
  });

  it("imports named keys that stay, skips those the pool has, and finds and deletes a key by name", async () => {
    const p = pool();
    const first = await client.importBatch([
      { secret: `sk-live-alpha-${p}-1a2b`, name: "alpha", labels: { who: "alpha" } },
      { secret: `sk-live-beta-${p}-3c4d`, name: "beta" },
      { labels: { tier: "free" } },
    ], { pool: p });
    assert.equal(first.policyCreated, true, "secrets give a pool without a policy one whose keys stay");
    assert.deepEqual(first.skipped, []);
    assert.deepEqual(first.keys.map((k) => [k.name, k.secretHint, k.expiresAt]), [["alpha", "1a2b", null], ["beta", "3c4d", null], [null, null, null]]);
    assert.ok(first.keys.every((k) => k.secret === undefined), "an import never echoes secrets");
    assert.deepEqual((await client.getPool(p)).policy, { keyTTL: null });

    // Again with one new key: the ones the pool has are skipped, by index.
    const again = await client.importBatch([
      { secret: `sk-live-alpha-${p}-1a2b` },
      { secret: `sk-live-gamma-${p}-5e6f`, name: "gamma" },
      { secret: `sk-live-other-${p}-7a8b`, name: "beta" },
    ], { pool: p, skipExisting: true });
    assert.equal(again.policyCreated, false, "the pool has its policy");
    assert.deepEqual(again.skipped, [{ index: 0, reason: "secret" }, { index: 2, reason: "name" }]);
    assert.deepEqual(again.keys.map((k) => k.name), ["gamma"]);

    // Without skipExisting a repeated name refuses the whole import.
    await assert.rejects(client.importBatch([{ secret: `sk-live-delta-${p}-9c0d` }, { secret: `sk-live-eps-${p}-1e2f`, name: "alpha" }], { pool: p }),
      (err: unknown) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.status, 409);
        assert.equal(err.code, "duplicate_name");
        assert.match(err.detail, /keys\[1\]/);
        assert.ok(err.isDuplicateName && !err.isDuplicateSecret && !err.isLeaseLost);
        return true;
      });
    assert.equal((await client.getPool(p)).keys, 4, "nothing was created");

    // importKeys takes names too, and answers the keys alone.
    const [named] = await client.importKeys([{ name: "plain" }], p);
    assert.equal(named?.name, "plain");

    // A key by its name; its secret only with its lease's token.
    const alpha = await client.getKeyByName(p, "alpha");
    assert.equal(alpha.keyId, first.keys[0]?.keyId);
    assert.equal(alpha.secret, undefined);
    const held = await client.claimKey({ pool: p, labels: { who: "alpha" } });
    assert.equal(held.name, "alpha");
    assert.equal((await client.getKeyByName(p, "alpha", { leaseToken: held.leaseToken })).secret, `sk-live-alpha-${p}-1a2b`);
    await client.releaseKey(held.keyId, held.leaseToken);

    // A leaked key found by its hint in the list, then deleted by name.
    const page = await client.listKeys(p);
    assert.equal(page.nextAfter, null);
    assert.equal(page.keys.length, 5);
    const leaked = page.keys.find((k) => k.secretHint === "5e6f");
    assert.equal(leaked?.name, "gamma");
    const deleted = await client.deleteKeyByName(p, "gamma");
    assert.equal(deleted.keyId, leaked?.keyId);
    assert.equal(deleted.deleted, true);
    await assert.rejects(client.getKeyByName(p, "gamma"), (err: unknown) =>
      err instanceof ApiError && err.code === "key_not_found" && err.isNotFound && !err.isUnknownPool);
    await assert.rejects(client.deleteKeyByName(p, "gamma"), (err: unknown) => err instanceof ApiError && err.isNotFound);
    const paged = await client.listKeys(p, { limit: 2 });
    assert.equal(paged.keys.length, 2);
    assert.ok(paged.nextAfter);
    assert.equal((await client.listKeys(p, { after: paged.nextAfter })).keys.length, 2);

    // An import may ask for a key life instead; keys then end.
    const expiring = pool();
    const withLife = await client.importBatch([{ secret: `sk-live-day-${expiring}` }], { pool: expiring, keyTTL: "24h" });
    assert.equal(withLife.policyCreated, true);
    const ahead = Date.parse(withLife.keys[0]?.expiresAt ?? "") - Date.now();
    assert.ok(ahead > 23.9 * 3600_000 && ahead <= 24 * 3600_000 + 60_000, `the key ends in ${ahead}ms, not a day`);
    assert.equal((await client.getPool(expiring)).effective.keyTTL, "24h0m0s");
  });

  it("refuses secrets when the server has no encryption key", { skip: process.env.TO_URL_NO_SECRETS ? false : "TO_URL_NO_SECRETS is not set" }, async () => {
    const plain = new Client(process.env.TO_URL_NO_SECRETS ?? "http://127.0.0.1:1");
    const p = pool();
    await assert.rejects(plain.importKeys([{ labels: { tier: "paid" } }, { secret: "sk-1" }], p), (err: unknown) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 400);
      assert.equal(err.code, "secrets_not_configured");
      assert.ok(err.isSecretsNotConfigured && !err.isDuplicateSecret);
      return true;
    });
    assert.equal((await plain.poolStatus(p)).keys, 0, "nothing was created");
    // Labels need no encryption key.
    const [key] = await plain.importKeys([{ labels: { tier: "paid" } }], p);
    assert.deepEqual(key?.labels, { tier: "paid" });
  });
});

/** A stub server answering 503 `failures` times, then a key. */
async function flakyServer(failures: number, retryAfter: string | undefined): Promise<{ url: string; times: number[]; idempotencyKeys: (string | undefined)[]; close: () => void }> {
  const times: number[] = [];
  const idempotencyKeys: (string | undefined)[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    times.push(Date.now());
    idempotencyKeys.push(req.headers["idempotency-key"] as string | undefined);
    if (times.length <= failures) {
      res.writeHead(503, { "Content-Type": "application/problem+json", ...(retryAfter ? { "Retry-After": retryAfter } : {}) });
      res.end(JSON.stringify({ type: "/problems/database_unavailable", title: "Database unavailable", status: 503, detail: "try again", code: "database_unavailable" }));
      return;
    }
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ keyId: "k", pool: "default", idempotencyKey: req.headers["idempotency-key"] }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, times, idempotencyKeys, close: () => server.close() };
}

describe("answers of 503", () => {
  it("are retried, honouring Retry-After", async () => {
    const stub = await flakyServer(1, "1");
    try {
      const c = new Client(stub.url, { retry: { attempts: 3, minBackoffMs: 10, maxBackoffMs: 2_000 } });
      const key = await c.getKey("k");
      assert.equal(key.keyId, "k");
      assert.equal(stub.times.length, 2);
      const waited = stub.times[1]! - stub.times[0]!;
      assert.ok(waited >= 950, `retried after ${waited}ms, before the server's Retry-After of 1s`);
    } finally {
      stub.close();
    }
  });

  it("are retried with jittered backoff, with the same Idempotency-Key, then thrown", async () => {
    const stub = await flakyServer(10, undefined);
    try {
      const c = new Client(stub.url, { retry: { attempts: 4, minBackoffMs: 40, maxBackoffMs: 1_000 } });
      await assert.rejects(c.claimKey({ idempotencyKey: "same-key" }), (err: unknown) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.code, "database_unavailable");
        assert.ok(err.isUnavailable);
        return true;
      });
      assert.equal(stub.times.length, 4, "4 attempts in all");
      assert.deepEqual(stub.idempotencyKeys, ["same-key", "same-key", "same-key", "same-key"]);
      const gaps = stub.times.slice(1).map((t, i) => t - stub.times[i]!);
      // Backoff 40, 80, 160 ms, each jittered over [d/2, d).
      [40, 80, 160].forEach((d, i) => assert.ok(gaps[i]! >= d / 2 - 5 && gaps[i]! < d + 50, `gap ${i}: ${gaps[i]}ms for ${d}ms`));
    } finally {
      stub.close();
    }
  });

  it("stop when the signal aborts", async () => {
    const stub = await flakyServer(10, "30");
    try {
      const c = new Client(stub.url);
      const started = Date.now();
      await assert.rejects(c.getKey("k", AbortSignal.timeout(200)), (err: unknown) => err instanceof DOMException && err.name === "TimeoutError");
      assert.ok(Date.now() - started < 2_000);
    } finally {
      stub.close();
    }
  });
});

/** What an OutageProxy does to the requests of its window. */
type Fault =
  /** Answers 503 database_unavailable with Retry-After, forwarding nothing. */
  | "503"
  /** Closes the connection without an answer, forwarding nothing. */
  | "cut"
  /** Stops listening and closes every connection until the window ends. */
  | "refused"
  /**
   * Holds the request and answers nothing, as a network that drops every
   * packet does, until the client gives up on it.
   */
  | "silent";

/**
 * A request the proxy saw, when it came, and what became of it: the status
 * passed on, "forwarding" while the server has it, the fault met, or
 * "lost" (forwarded, then the answer cut or replaced by a 503).
 */
interface Hit {
  at: number;
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  outcome: string;
}

type Match = (method: string, path: string) => boolean;
const isKeepAlive: Match = (method, path) => method === "PUT" && path.endsWith("/keepalive");
const isClaim: Match = (method, path) => method === "GET" && path === "/keys";

/**
 * Stands in front of the server, forwarding requests to it, until a request
 * that its window matches comes: from then on, for the window's length,
 * requests meet the fault instead. It can also lose the answers of some
 * requests after forwarding them, as when a connection breaks (or a
 * replica's answer turns into a 503) just after the server committed.
 */
class OutageProxy {
  readonly hits: Hit[] = [];
  retryAfter = "1";
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  #port = 0;
  #fault: Fault | undefined;
  #opens: Match | undefined;
  #lengthMs = 0;
  #began: number | undefined;
  #lose: { match: Match; left: number; how: "503" | "cut" } | undefined;
  #closed = false;

  constructor(readonly target: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  async listen(): Promise<void> {
    const server = createServer((req, res) => void this.#handle(req, res));
    server.on("connection", (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(this.#port, "127.0.0.1", resolve));
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  /** Arms the fault: the window begins with the first request opens matches. */
  window(fault: Fault, opens: Match, lengthMs: number): void {
    this.#fault = fault;
    this.#opens = opens;
    this.#lengthMs = lengthMs;
    this.#began = undefined;
  }

  /** Forwards the next n requests that match, then loses their answers. */
  loseAnswers(match: Match, n: number, how: "503" | "cut"): void {
    this.#lose = { match, left: n, how };
  }

  /** When the window ended or will end; undefined before it began. */
  get windowEnd(): number | undefined {
    return this.#began === undefined ? undefined : this.#began + this.#lengthMs;
  }

  close(): void {
    this.#closed = true;
    this.#stop();
  }

  #stop(): void {
    this.#server?.close();
    for (const socket of this.#sockets) socket.destroy();
    this.#server = undefined;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const now = Date.now();
    const method = req.method ?? "GET";
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const hit: Hit = { at: now, method, path, idempotencyKey: req.headers["idempotency-key"] as string | undefined, outcome: "forwarding" };
    this.hits.push(hit);
    if (this.#began === undefined && this.#opens?.(method, path)) {
      this.#began = now;
      if (this.#fault === "refused") {
        hit.outcome = "refused";
        this.#stop();
        setTimeout(() => void (this.#closed ? undefined : this.listen()), this.#lengthMs);
        return;
      }
    }
    if (this.#began !== undefined && now < this.#began + this.#lengthMs) {
      hit.outcome = this.#fault ?? "";
      if (this.#fault === "503") {
        res.writeHead(503, { "Content-Type": "application/problem+json", "Retry-After": this.retryAfter });
        res.end(JSON.stringify({ type: "/problems/database_unavailable", title: "Database unavailable", status: 503, detail: "the proxy says so", code: "database_unavailable" }));
      } else if (this.#fault !== "silent") {
        req.socket.destroy();
      }
      // Silent: the request stays open, unanswered, until the client
      // closes its connection (or close() does).
      return;
    }
    const lose = this.#lose && this.#lose.left > 0 && this.#lose.match(method, path) ? this.#lose : undefined;
    if (lose) lose.left--;
    const body: Buffer[] = [];
    for await (const chunk of req) body.push(chunk as Buffer);
    const upstream = new URL(this.target);
    const answer = await new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer } | undefined>((resolve) => {
      const out = httpRequest({
        host: upstream.hostname, port: upstream.port, method, path: req.url,
        headers: { ...req.headers, host: upstream.host },
      }, (resp) => {
        const chunks: Buffer[] = [];
        resp.on("data", (c: Buffer) => chunks.push(c));
        resp.on("end", () => resolve({ status: resp.statusCode ?? 502, headers: resp.headers, body: Buffer.concat(chunks) }));
        resp.on("error", () => resolve(undefined));
      });
      out.on("error", () => resolve(undefined));
      out.end(Buffer.concat(body));
    });
    if (!answer) {
      hit.outcome = "upstream failed";
      req.socket.destroy();
      return;
    }
    if (lose) {
      // The server did the work; its answer never arrives.
      hit.outcome = "lost";
      if (lose.how === "cut") {
        req.socket.destroy();
      } else {
        res.writeHead(503, { "Content-Type": "application/problem+json", "Retry-After": this.retryAfter });
        res.end(JSON.stringify({ type: "/problems/database_unavailable", title: "Database unavailable", status: 503, detail: "lost on the way", code: "database_unavailable" }));
      }
      return;
    }
    hit.outcome = String(answer.status);
    const headers = { ...answer.headers };
    delete headers["transfer-encoding"];
    delete headers.connection;
    headers["content-length"] = String(answer.body.length);
    res.writeHead(answer.status, headers);
    res.end(answer.body);
  }
}

async function outageProxy(): Promise<OutageProxy> {
  const proxy = new OutageProxy(url ?? "http://127.0.0.1:1");
  await proxy.listen();
  return proxy;
}

/** Waits until check() holds, failing after timeoutMs. */
async function waitFor(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) assert.fail(`${what} did not happen within ${timeoutMs}ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe("riding out an outage", needsServer, () => {
  // The window opens with the lease's first keep-alive, the worst moment for
  // it (a third of the lease has passed without one), and lasts about half
  // the lease. Its 503s ask for a Retry-After longer than the lease has
  // left, which the lease must not wait out; its silent requests are held
  // unanswered, which a keep-alive must give up on in time for another.
  for (const fault of ["503", "cut", "refused", "silent"] as const) {
    it(`keeps a lease through an outage shorter than it (${fault})`, async () => {
      const p = pool();
      const leaseMs = 2_000;
      await client.putPool(p, { leaseTTL: leaseMs });
      await client.createKey(p);
      const proxy = await outageProxy();
      try {
        proxy.retryAfter = "2";
        proxy.window(fault, isKeepAlive, leaseMs * 0.45);
        // The client's own retry policy, as users have it: it honours the
        // Retry-After of a 503 for up to 5 s.
        const lease = await new Client(proxy.url).claim({ pool: p, timeoutMs: 5_000 });
        const firstEnd = lease.expiresAt;
        // Until a keep-alive got through after the window, and the lease
        // took in the end it gave.
        await waitFor("a keep-alive after the window", () => {
          assert.equal(lease.lost.aborted, false, `lease lost in an outage shorter than it: ${String(lease.lost.reason)}`);
          const end = proxy.windowEnd;
          return end !== undefined && proxy.hits.some((h) => h.at > end && isKeepAlive(h.method, h.path) && h.outcome === "200") &&
            Date.parse(lease.expiresAt) > Date.parse(firstEnd);
        }, 10_000);
        assert.ok(proxy.hits.some((h) => isKeepAlive(h.method, h.path) && h.outcome === fault), "keep-alives met the outage");
        assert.ok(!proxy.hits.some((h) => isKeepAlive(h.method, h.path) && h.outcome === "200" && h.at <= (proxy.windowEnd ?? 0)),
          "no keep-alive got through before the window closed");

        await lease.release();
        assert.equal((await client.getKey(lease.id)).isBlocked, false, "the release freed the key");
        assert.equal((await client.claimKey({ pool: p })).keyId, lease.id);
      } finally {
        proxy.close();
      }
    });
  }

  for (const fault of ["503", "refused"] as const) {
    it(`loses a lease an outage outlasts, once its time is up (${fault})`, async () => {
      const p = pool();
      await client.createKey(p);
      const proxy = await outageProxy();
      try {
        proxy.window(fault, isKeepAlive, 2 * leaseTtlMs);
        const before = Date.now();
        const lease = await new Client(proxy.url).claim({ pool: p, timeoutMs: 5_000 });
        const reason = await new Promise<unknown>((resolve) => lease.lost.addEventListener("abort", () => resolve(lease.lost.reason)));
        const lostAfter = Date.now() - before;
        assert.ok(reason instanceof LeaseLostError);
        assert.match(reason.message, /ran out/);
        assert.ok(lostAfter >= leaseTtlMs, `lost after ${lostAfter}ms, before its ${leaseTtlMs}ms were up`);
        assert.ok(lostAfter < leaseTtlMs + 1_000, `lost ${lostAfter}ms after the claim, long after its ${leaseTtlMs}ms were up`);
        await assert.rejects(lease.release(), (err: unknown) => err === reason);
        // The server took the key back meanwhile.
        assert.equal((await client.claimKey({ pool: p, waitMs: 5_000 })).keyId, lease.id);
      } finally {
        proxy.close();
      }
    });
  }

  for (const how of ["503", "cut"] as const) {
    it(`retries a claim whose answer was lost (${how}) with the same Idempotency-Key, holding one lease`, async () => {
      const p = pool();
      // A lease that outlasts the retries: one that ended before a retry
      // came would rightly be claimed afresh.
      await client.putPool(p, { leaseTTL: "30s" });
      await client.createKeys(2, p);
      const proxy = await outageProxy();
      try {
        // Two answers lost: a transport may send a request again by itself
        // once, on a fresh connection, when a reused one breaks.
        proxy.loseAnswers(isClaim, 2, how);
        const lease = await new Client(proxy.url, { retry: { minBackoffMs: 10 } }).claim({ pool: p, timeoutMs: 10_000 });
        const claims = proxy.hits.filter((h) => isClaim(h.method, h.path));
        assert.deepEqual(claims.map((h) => h.outcome), ["lost", "lost", "200"]);
        assert.match(claims[0]?.idempotencyKey ?? "", /^[0-9a-f]{32}$/);
        assert.ok(claims.every((h) => h.idempotencyKey === claims[0]?.idempotencyKey), "the same Idempotency-Key on every try");
        assert.equal((await client.poolStatus(p)).blocked, 1, "one lease, not one per try");
        assert.equal((await client.getKey(lease.id)).isBlocked, true);
        await lease.release();
        assert.equal((await client.poolStatus(p)).blocked, 0, "nothing stranded");
      } finally {
        proxy.close();
      }
    });
  }
});
