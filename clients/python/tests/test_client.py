"""The synchronous client against a real server."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from conftest import FAST_RETRY, RIDE_LEASE_TTL, RIDE_WINDOW, Proxy, one_key_pool, wait_until
from tokenorchestrator import (
    ApiError,
    Client,
    DatabaseUnavailableError,
    DuplicateNameError,
    DuplicateSecretError,
    KeyNotFoundError,
    LeaseLost,
    LeaseMismatchError,
    LeaseTokenRequiredError,
    NoFreeKeyError,
    PoolNotEmptyError,
    RetryPolicy,
    SecretsNotConfiguredError,
    ServiceUnavailableError,
    UnknownParameterError,
    UnknownPoolError,
    cooldown_from_retry_after,
)
from tokenorchestrator._protocol import Request


def test_create_get_and_delete_keys(client: Client, pool: str) -> None:
    key = client.create_key(pool)
    assert key.pool == pool and not key.is_blocked and key.times_assigned == 0
    assert key.created_at is not None and key.created_at.tzinfo is not None
    assert key.expires_at is not None and key.expires_at > key.created_at

    batch = client.create_keys(3, pool)
    assert len(batch) == 3 and len({k.key_id for k in batch}) == 3
    assert client.get_key(batch[0].key_id).key_id == batch[0].key_id
    assert client.pool_status(pool).keys == 4

    deleted = client.delete_key(key.key_id)
    assert deleted.deleted and deleted.key_id == key.key_id
    with pytest.raises(KeyNotFoundError):
        client.get_key(key.key_id)
    with pytest.raises(ValueError):
        client.create_keys(0, pool)


def test_a_key_of_several_seats_is_held_by_as_many_leases(client: Client, pool: str) -> None:
    (key,) = client.create_keys(1, pool, seats=2)
    assert key.seats == 2 and key.seats_held == 0
    with client.claim(pool) as first, client.claim(pool) as second:
        assert first.key_id == second.key_id == key.key_id
        assert first.token != second.token
        whole = client.get_key(key.key_id)
        assert whole.seats == 2 and whole.seats_held == 2 and whole.is_blocked
    assert client.get_key(key.key_id).seats_held == 0
    with pytest.raises(ValueError):
        client.create_keys(1, pool, seats=0)


def test_claim_keep_alive_release(client: Client, pool: str, lease_ttl: float) -> None:
    key_id, secret = one_key_pool(client, pool)
    with client.claim(pool) as lease:
        assert lease.key_id == key_id and lease.token and lease.secret == secret
        assert lease.expires_at is not None
        first_deadline = lease.expires_at
        held = client.get_key(key_id, lease.token)
        assert held.is_blocked and held.secret == secret
        # Kept alive: the server's deadline moves on.
        assert wait_until(lambda: lease.expires_at > first_deadline, timeout=lease_ttl)
    assert not lease.lost.is_set()
    free = client.get_key(key_id)
    assert not free.is_blocked and free.secret is None
    # A second release does nothing more and answers what the first did.
    released = lease.release()
    assert released is not None and not released.is_blocked and lease.release() is released


def test_manual_claim_keep_alive_release(client: Client, pool: str) -> None:
    key_id, secret = one_key_pool(client, pool)
    key = client.claim_key(pool)
    assert key.key_id == key_id and key.lease_token and key.secret == secret
    kept = client.keep_alive(key_id, key.lease_token)
    assert kept.last_keep_alive_at is not None
    with pytest.raises(LeaseMismatchError) as err:
        client.release_key(key_id, str(int(key.lease_token) + 1000))
    assert err.value.status == 409 and err.value.code == "lease_mismatch"
    released = client.release_key(key_id, key.lease_token)
    assert not released.is_blocked


def test_lease_survives_a_busy_worker_thread(client: Client, pool: str, lease_ttl: float) -> None:
    key_id, _ = one_key_pool(client, pool)
    with client.claim(pool) as lease:
        # The worker's thread is busy far longer than a lease lasts.
        time.sleep(3.5 * lease_ttl)
        deadline = time.time() + 0.2 * lease_ttl
        while time.time() < deadline:  # and computes without sleeping
            sum(range(10_000))
        assert not lease.lost.is_set(), lease.lost_reason
        # Still the current lease: the server shows its secret to its token.
        assert client.get_key(key_id, lease.token).is_blocked
        with pytest.raises(NoFreeKeyError):
            client.claim_key(pool)
    assert client.get_key(key_id).times_assigned == 1


def test_lease_lost_when_the_key_is_deleted(client: Client, pool: str, lease_ttl: float) -> None:
    key_id, _ = one_key_pool(client, pool)
    with client.claim(pool) as lease:
        client.delete_key(key_id)
        assert lease.lost.wait(2 * lease_ttl)
        assert isinstance(lease.lost_reason, LeaseLost)
        assert isinstance(lease.lost_reason.__cause__, KeyNotFoundError)
        with pytest.raises(LeaseLost):
            lease.raise_if_lost()
    with pytest.raises(LeaseLost):
        lease.release()


def test_lease_lost_when_another_lease_holds_the_key(client: Client, pool: str, lease_ttl: float) -> None:
    key_id, _ = one_key_pool(client, pool)
    lease = client.claim(pool)
    client.release_key(key_id)  # without a token: ends the current lease
    other = client.claim_key(pool)
    assert other.lease_token != lease.token
    assert lease.lost.wait(2 * lease_ttl)
    assert isinstance(lease.lost_reason.__cause__, LeaseMismatchError)  # type: ignore[union-attr]
    with lease:
        pass  # leaving the block does not release the other holder's lease
    assert client.get_key(key_id, other.lease_token).is_blocked


def test_lease_lost_when_keep_alives_fail_until_it_runs_out(client: Client, proxy: Proxy, pool: str, lease_ttl: float) -> None:
    one_key_pool(client, pool)
    with Client(proxy.url, retry=RetryPolicy(attempts=1)) as via_proxy:
        lease = via_proxy.claim(pool)
        proxy.add("PUT", f"/keys/{lease.key_id}/keepalive", "503", times=-1)
        assert lease.lost.wait(2 * lease_ttl)
        assert "ran out" in str(lease.lost_reason)
        assert len(proxy.requests("PUT", f"/keys/{lease.key_id}/keepalive")) >= 2
        lease.__exit__(None, None, None)  # no release: nothing to release
    assert len(proxy.requests("PUT", f"/keys/{lease.key_id}")) == 0
    # The server frees the key in its own time.
    assert client.claim_key(pool, wait=5).key_id == lease.key_id


@pytest.mark.parametrize("fault", ["503", "cut", "refused", "silent"])
def test_lease_rides_out_an_outage_shorter_than_the_lease(client: Client, proxy: Proxy, pool: str, fault: str) -> None:
    client.put_pool(pool, lease_ttl=RIDE_LEASE_TTL)
    key_id = client.create_key(pool).key_id
    path = f"/keys/{key_id}/keepalive"
    proxy.retry_after = "2"
    proxy.outage("PUT", path, fault, RIDE_WINDOW)
    # The client's own retry policy, as users have it: it honours the
    # Retry-After of a 503 for up to 5 s.
    with Client(proxy.url) as via_proxy:
        lease = via_proxy.claim(pool)
        first_end = lease.expires_at
        assert first_end is not None

        def kept_alive_after_the_window() -> bool:
            end = proxy.window_end()
            return (
                end is not None
                and any(s.at > end and s.outcome == "200" for s in proxy.requests("PUT", path))
                and lease.expires_at is not None
                and lease.expires_at > first_end
            )

        assert wait_until(lambda: lease.lost.is_set() or kept_alive_after_the_window(), timeout=10)
        assert not lease.lost.is_set(), f"lease lost in an outage shorter than it: {lease.lost_reason}"
        end = proxy.window_end()
        assert end is not None
        keep_alives = proxy.requests("PUT", path)
        assert any(s.outcome == fault for s in keep_alives), "keep-alives met the outage"
        assert not any(s.outcome == "200" and s.at <= end for s in keep_alives), "none got through before the window closed"
        lease.release()
    assert not client.get_key(key_id).is_blocked, "the release freed the key"
    assert client.claim_key(pool).key_id == key_id


@pytest.mark.parametrize("fault", ["503", "refused"])
def test_lease_lost_once_an_outage_outlasts_it(client: Client, proxy: Proxy, pool: str, lease_ttl: float, fault: str) -> None:
    key_id = client.create_key(pool).key_id
    proxy.outage("PUT", f"/keys/{key_id}/keepalive", fault, 2 * lease_ttl)
    with Client(proxy.url) as via_proxy:
        before = time.monotonic()
        lease = via_proxy.claim(pool)
        assert lease.lost.wait(3 * lease_ttl)
        lost_after = time.monotonic() - before
        assert "ran out" in str(lease.lost_reason)
        assert lost_after >= lease_ttl, f"lost {lost_after:.3f}s after the claim, before its {lease_ttl}s were up"
        assert lost_after < lease_ttl + 1, f"lost {lost_after:.3f}s after the claim, long after its {lease_ttl}s were up"
        with pytest.raises(LeaseLost):
            lease.release()
    # The server took the key back meanwhile.
    assert client.claim_key(pool, wait=5).key_id == key_id


def test_release_with_a_cooldown(client: Client, pool: str) -> None:
    key_id, _ = one_key_pool(client, pool)
    with client.claim(pool) as lease:
        lease.cooldown(30)
    key = client.get_key(key_id)
    assert not key.is_blocked and key.cooling_until is not None
    assert timedelta(seconds=25) < key.cooling_until - datetime.now(timezone.utc) <= timedelta(seconds=31)
    with pytest.raises(NoFreeKeyError):
        client.claim_key(pool)


def test_release_with_a_cooldown_from_retry_after(client: Client, pool: str) -> None:
    key_id, _ = one_key_pool(client, pool)
    lease = client.claim(pool)
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    cooldown = cooldown_from_retry_after(format_datetime(when, usegmt=True))
    assert cooldown is not None and 115 < cooldown <= 120
    released = lease.release(cooldown=cooldown)
    assert released is not None and released.cooling_until is not None
    assert timedelta(seconds=110) < released.cooling_until - datetime.now(timezone.utc) <= timedelta(seconds=121)
    with pytest.raises(NoFreeKeyError):
        client.claim_key(pool)


def test_a_cooldown_ends(client: Client, pool: str) -> None:
    key_id, _ = one_key_pool(client, pool)
    with client.claim(pool) as lease:
        lease.cooldown(cooldown_from_retry_after("1"))
    with pytest.raises(NoFreeKeyError):
        client.claim_key(pool)
    started = time.monotonic()
    with client.claim(pool, wait=5) as again:
        assert again.key_id == key_id
    assert 0.5 < time.monotonic() - started < 4


def test_cooldown_from_retry_after() -> None:
    assert cooldown_from_retry_after("30") == 30
    assert cooldown_from_retry_after(" 7 ") == 7
    assert cooldown_from_retry_after(None) is None
    assert cooldown_from_retry_after(None, default=10) == 10
    assert cooldown_from_retry_after("soon", default=5) == 5
    assert cooldown_from_retry_after("999999") == 24 * 3600
    assert cooldown_from_retry_after("600", maximum=60) == 60
    assert cooldown_from_retry_after("600", maximum=timedelta(minutes=2)) == 120
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    assert cooldown_from_retry_after(format_datetime(past, usegmt=True)) == 0
    future = datetime.now(timezone.utc) + timedelta(seconds=90)
    got = cooldown_from_retry_after(format_datetime(future, usegmt=True))
    assert got is not None and 85 < got <= 90


def test_unknown_pool_raises_at_once(client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(UnknownPoolError) as err:
        client.claim("no-such-pool-" + uuid.uuid4().hex[:8], wait=10)
    assert time.monotonic() - started < 2
    assert err.value.status == 404 and err.value.code == "unknown_pool"
    assert not isinstance(err.value, NoFreeKeyError)


def test_no_free_key_after_the_wait(client: Client, pool: str) -> None:
    one_key_pool(client, pool)
    held = client.claim(pool)
    try:
        started = time.monotonic()
        with pytest.raises(NoFreeKeyError) as err:
            client.claim(pool, wait=0.6)
        assert 0.5 <= time.monotonic() - started < 5
        assert err.value.status == 404 and err.value.code == "no_free_key"
        started = time.monotonic()
        with pytest.raises(NoFreeKeyError):
            client.claim(pool)  # no wait: at once
        assert time.monotonic() - started < 1
    finally:
        held.release()


def test_claim_waits_for_a_release(client: Client, pool: str) -> None:
    key_id, _ = one_key_pool(client, pool)
    held = client.claim(pool)
    timer = threading.Timer(0.3, held.release)
    timer.start()
    try:
        with client.claim(pool, wait=10) as lease:
            assert lease.key_id == key_id and lease.token != held.token
    finally:
        timer.join()


def test_labels_choose_the_key(client: Client, pool: str) -> None:
    result = client.import_keys(
        [
            {"secret": "sk-free-" + uuid.uuid4().hex, "labels": {"tier": "free"}},
            {"secret": "sk-paid-" + uuid.uuid4().hex, "labels": {"tier": "paid", "region": "eu"}, "name": "paid-eu"},
        ],
        pool,
    )
    paid = result.keys[1]
    assert paid.labels == {"tier": "paid", "region": "eu"} and paid.name == "paid-eu"
    with client.claim(pool, labels={"tier": "paid"}) as lease:
        assert lease.key_id == paid.key_id and lease.secret and lease.secret.startswith("sk-paid-")
        with pytest.raises(NoFreeKeyError):
            client.claim(pool, labels=["tier=paid", "region=eu"])


def test_idempotency_key_is_reused_when_an_answer_is_lost(client: Client, proxy: Proxy, pool: str) -> None:
    key_id, secret = one_key_pool(client, pool)
    client.create_keys(2, pool)
    proxy.add("GET", "/keys", "drop")
    with Client(proxy.url, retry=FAST_RETRY) as via_proxy:
        with via_proxy.claim(pool) as lease:
            claims = proxy.requests("GET", "/keys")
            assert len(claims) == 2
            ikey = claims[0].headers.get("idempotency-key")
            assert ikey and claims[1].headers.get("idempotency-key") == ikey
            # The retry answered the first request's lease: one key is held.
            assert client.pool_status(pool).blocked == 1
            assert client.get_key(lease.key_id, lease.token).is_blocked


def test_503_is_retried_after_retry_after_with_the_same_idempotency_key(client: Client, proxy: Proxy, pool: str) -> None:
    one_key_pool(client, pool)
    proxy.add("GET", "/keys", "503")
    with Client(proxy.url, retry=RetryPolicy(attempts=3, min_backoff=0.01, max_backoff=5)) as via_proxy:
        with via_proxy.claim(pool) as lease:
            assert lease.token
        claims = proxy.requests("GET", "/keys")
        assert len(claims) == 2
        assert claims[1].at - claims[0].at >= 0.95  # Retry-After: 1, not the 10 ms backoff
        assert claims[0].headers["idempotency-key"] == claims[1].headers["idempotency-key"]

        # Retries are bounded: the last 503 is raised, typed.
        proxy.add("GET", "/pools", "503", times=-1)
        proxy.retry_after = "0"
        with pytest.raises(DatabaseUnavailableError) as err:
            via_proxy.list_pools()
        assert isinstance(err.value, ServiceUnavailableError)
        assert err.value.status == 503 and err.value.retry_after == 0
        assert len(proxy.requests("GET", "/pools")) == 3


def test_typed_errors(client: Client, no_secrets_url: str, pool: str) -> None:
    with pytest.raises(KeyNotFoundError) as err:
        client.get_key("not-a-key")
    assert err.value.status == 404 and err.value.code == "key_not_found" and err.value.title
    assert isinstance(err.value, ApiError)
    with pytest.raises(UnknownParameterError) as unknown:
        client._send(Request("GET", "/keys", lambda r: None, params=[("pool", pool), ("wiat", "1s")]))
    assert unknown.value.status == 400 and "wiat" in unknown.value.detail

    client.import_keys([{"secret": "sk-one-0123456789", "name": "one"}], pool)
    with pytest.raises(DuplicateSecretError) as dup:
        client.import_keys([{"secret": "sk-one-0123456789"}], pool)
    assert dup.value.status == 409 and dup.value.detail
    with pytest.raises(DuplicateNameError):
        client.import_keys([{"secret": "sk-two-0123456789", "name": "one"}], pool)

    with pytest.raises(PoolNotEmptyError):
        client.delete_pool(pool)

    with Client(no_secrets_url) as plain:
        with pytest.raises(SecretsNotConfiguredError) as refused:
            plain.import_keys([{"secret": "sk-x"}], pool)
        assert refused.value.status == 400


def test_lease_token_required(client: Client, pool: str) -> None:
    client.put_pool(pool, require_lease_token=True)
    key = client.create_key(pool)
    claimed = client.claim_key(pool)
    assert claimed.key_id == key.key_id
    with pytest.raises(LeaseTokenRequiredError) as err:
        client.keep_alive(key.key_id)
    assert err.value.status == 428 and err.value.code == "lease_token_required"
    with pytest.raises(LeaseTokenRequiredError):
        client.release_key(key.key_id)
    client.release_key(key.key_id, claimed.lease_token)


def test_every_error_code_has_a_class() -> None:
    import pathlib
    import re

    from tokenorchestrator import ERRORS_BY_CODE

    spec = pathlib.Path(__file__).resolve().parents[3] / "internal" / "api" / "openapi.yaml"
    text = spec.read_text()
    problem = text[text.index("    Problem:") :]
    enum = problem[problem.index("enum:") :]
    codes = re.findall(r"^\s+- ([a-z_]+)$", enum[: enum.index("instance:")], re.M)
    assert len(codes) > 20
    assert sorted(set(codes) - set(ERRORS_BY_CODE)) == []


def test_import_skip_existing_and_key_ttl(client: Client, pool: str) -> None:
    first = client.import_keys([{"secret": "sk-a-0123456789ab", "name": "a"}], pool, key_ttl="1h")
    assert first.policy_created and first.keys[0].secret_hint == "89ab"
    assert first.keys[0].expires_at is not None  # the policy's key life
    again = client.import_keys(
        [{"secret": "sk-a-0123456789ab"}, {"secret": "sk-b-0123456789ab", "name": "a"}, {"secret": "sk-c-0123456789ab"}],
        pool,
        skip_existing=True,
    )
    assert [(s.index, s.reason) for s in again.skipped] == [(0, "secret"), (1, "name")]
    assert len(again.keys) == 1 and not again.policy_created


def test_keys_by_name_and_pages(client: Client, pool: str) -> None:
    client.import_keys([{"secret": f"sk-{i}-" + uuid.uuid4().hex, "name": f"k{i}"} for i in range(5)], pool)
    key = client.get_key_by_name(pool, "k3")
    assert key.name == "k3" and key.secret is None and key.secret_hint
    with client.claim(pool, labels=None) as lease:
        if lease.key.name:
            named = client.get_key_by_name(pool, lease.key.name, lease.token)
            assert named.secret == lease.secret
    page = client.list_keys(pool, limit=3)
    assert len(page.keys) == 3 and page.next_after
    rest = client.list_keys(pool, after=page.next_after, limit=3)
    assert len(rest.keys) == 2 and rest.next_after is None
    assert client.delete_key_by_name(pool, "k3").deleted
    with pytest.raises(KeyNotFoundError):
        client.get_key_by_name(pool, "k3")


def test_pools_and_stats(client: Client, pool: str) -> None:
    created = client.put_pool(pool, key_ttl=None, lease_ttl=30, max_wait="5s")
    assert created.pool == pool and created.has_policy
    assert created.policy["keyTTL"] is None and created.policy["leaseTTL"] == "30s"
    assert created.effective["maxWait"] == "5s"
    client.create_keys(2, pool)
    got = client.get_pool(pool)
    assert got.keys == 2 and got.free == 2 and got.held == 0
    assert pool in [p.pool for p in client.list_pools()]
    with client.claim(pool) as lease:
        assert lease.key.expires_at is None  # keys that stay
        stats = client.stats()
        mine = stats.pool(pool)
        assert mine is not None and mine.total == 2 and mine.seats == 2 and mine.blocked == 1
        assert stats.total.total >= 2 and not stats.expiring_within_minute_capped
    deleted = client.delete_pool(pool, delete_keys=True)
    assert deleted.deleted_keys == 2
    with pytest.raises(UnknownPoolError):
        client.get_pool(pool)


def test_a_key_nobody_keeps_alive_expires(client: Client, pool: str) -> None:
    client.put_pool(pool, key_ttl=0.3)
    key = client.create_key(pool)
    assert wait_until(lambda: _gone(client, key.key_id), timeout=3)


def _gone(client: Client, key_id: str) -> bool:
    try:
        client.get_key(key_id)
    except KeyNotFoundError:
        return True
    return False
