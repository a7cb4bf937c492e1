"""The asyncio client against a real server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from conftest import FAST_RETRY, RIDE_LEASE_TTL, RIDE_WINDOW, Proxy
from tokenorchestrator import (
    AsyncClient,
    AsyncLease,
    DuplicateSecretError,
    KeyNotFoundError,
    LeaseLost,
    LeaseMismatchError,
    NoFreeKeyError,
    RetryPolicy,
    ServiceUnavailableError,
    UnknownPoolError,
)


async def wait_until(check, timeout: float, interval: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(interval)
    return bool(check())


async def one_key_pool(client: AsyncClient, pool: str) -> str:
    result = await client.import_keys([{"secret": "sk-" + uuid.uuid4().hex}], pool)
    return result.keys[0].key_id


@pytest.mark.asyncio
async def test_async_claim_keep_alive_release(aclient: AsyncClient, pool: str, lease_ttl: float) -> None:
    key_id = await one_key_pool(aclient, pool)
    async with aclient.claim(pool, wait=5) as lease:
        assert isinstance(lease, AsyncLease)
        assert lease.key_id == key_id and lease.token and lease.secret and lease.secret.startswith("sk-")
        first = lease.expires_at
        assert first is not None
        held = await aclient.get_key(key_id, lease.token)
        assert held.is_blocked and held.secret == lease.secret
        # The coroutine waits far longer than a lease lasts.
        await asyncio.sleep(3 * lease_ttl)
        assert not lease.lost.is_set(), lease.lost_reason
        assert lease.expires_at is not None and lease.expires_at > first
        assert (await aclient.get_key(key_id, lease.token)).is_blocked
    assert not (await aclient.get_key(key_id)).is_blocked


@pytest.mark.asyncio
async def test_async_lease_survives_blocking_work_in_a_thread(aclient: AsyncClient, pool: str, lease_ttl: float) -> None:
    key_id = await one_key_pool(aclient, pool)
    async with aclient.claim(pool) as lease:
        await asyncio.to_thread(time.sleep, 3 * lease_ttl)
        assert not lease.lost.is_set(), lease.lost_reason
        assert (await aclient.get_key(key_id, lease.token)).is_blocked
    assert (await aclient.get_key(key_id)).times_assigned == 1


@pytest.mark.asyncio
async def test_async_awaited_claim_and_release_with_cooldown(aclient: AsyncClient, pool: str) -> None:
    key_id = await one_key_pool(aclient, pool)
    lease = await aclient.claim(pool)
    released = await lease.release(cooldown=30)
    assert released is not None and released.key_id == key_id and released.cooling_until is not None
    assert await lease.release() is released
    with pytest.raises(NoFreeKeyError):
        await aclient.claim_key(pool)


@pytest.mark.asyncio
async def test_async_cooldown_on_exit(aclient: AsyncClient, pool: str) -> None:
    key_id = await one_key_pool(aclient, pool)
    async with aclient.claim(pool) as lease:
        lease.cooldown("20s")
    key = await aclient.get_key(key_id)
    assert key.cooling_until is not None and not key.is_blocked


@pytest.mark.asyncio
async def test_async_lease_lost_when_the_key_is_deleted(aclient: AsyncClient, pool: str, lease_ttl: float) -> None:
    key_id = await one_key_pool(aclient, pool)
    async with aclient.claim(pool) as lease:
        await aclient.delete_key(key_id)
        await asyncio.wait_for(lease.lost.wait(), timeout=2 * lease_ttl)
        assert isinstance(lease.lost_reason, LeaseLost)
        assert isinstance(lease.lost_reason.__cause__, KeyNotFoundError)
    with pytest.raises(LeaseLost):
        await lease.release()


@pytest.mark.asyncio
async def test_async_lease_lost_to_another_holder(aclient: AsyncClient, pool: str, lease_ttl: float) -> None:
    key_id = await one_key_pool(aclient, pool)
    lease = await aclient.claim(pool)
    await aclient.release_key(key_id)
    other = await aclient.claim_key(pool)
    await asyncio.wait_for(lease.lost.wait(), timeout=2 * lease_ttl)
    assert isinstance(lease.lost_reason.__cause__, LeaseMismatchError)  # type: ignore[union-attr]
    async with lease:
        pass
    assert (await aclient.get_key(key_id, other.lease_token)).is_blocked


@pytest.mark.asyncio
async def test_async_unknown_pool_raises_at_once(aclient: AsyncClient) -> None:
    started = time.monotonic()
    with pytest.raises(UnknownPoolError):
        async with aclient.claim("no-such-pool-" + uuid.uuid4().hex[:8], wait=10):
            pass
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_async_no_free_key_and_typed_errors(aclient: AsyncClient, pool: str) -> None:
    await aclient.import_keys([{"secret": "sk-async-0123456789"}], pool)
    async with aclient.claim(pool):
        started = time.monotonic()
        with pytest.raises(NoFreeKeyError) as err:
            await aclient.claim(pool, wait=0.5)
        assert err.value.code == "no_free_key" and time.monotonic() - started >= 0.45
    with pytest.raises(DuplicateSecretError):
        await aclient.import_keys([{"secret": "sk-async-0123456789"}], pool)
    with pytest.raises(KeyNotFoundError):
        await aclient.delete_key(str(uuid.uuid4()))


@pytest.mark.asyncio
async def test_async_claim_waits_for_a_release(aclient: AsyncClient, pool: str) -> None:
    key_id = await one_key_pool(aclient, pool)
    held = await aclient.claim(pool)

    async def release_soon() -> None:
        await asyncio.sleep(0.3)
        await held.release()

    releasing = asyncio.ensure_future(release_soon())
    async with aclient.claim(pool, wait=10) as lease:
        assert lease.key_id == key_id and lease.token != held.token
    await releasing


@pytest.mark.asyncio
async def test_async_idempotency_key_is_reused(proxy: Proxy, aclient: AsyncClient, pool: str) -> None:
    await one_key_pool(aclient, pool)
    await aclient.create_keys(2, pool)
    proxy.add("GET", "/keys", "drop")
    proxy.add("GET", "/keys", "503")
    proxy.retry_after = "0"
    async with AsyncClient(proxy.url, retry=FAST_RETRY) as via_proxy:
        async with via_proxy.claim(pool) as lease:
            claims = proxy.requests("GET", "/keys")
            assert len(claims) == 3
            assert len({c.headers["idempotency-key"] for c in claims}) == 1
            assert (await aclient.pool_status(pool)).blocked == 1
            assert (await aclient.get_key(lease.key_id, lease.token)).is_blocked


@pytest.mark.asyncio
async def test_async_pools_and_stats(aclient: AsyncClient, pool: str) -> None:
    created = await aclient.put_pool(pool, key_ttl="1h", lease_ttl=2.5)
    assert created.policy == {"keyTTL": "1h0m0s", "leaseTTL": "2.5s"}
    await aclient.create_keys(3, pool)
    assert (await aclient.get_pool(pool)).keys == 3
    assert pool in [p.pool for p in await aclient.list_pools()]
    stats = await aclient.stats()
    assert stats.pool(pool) is not None
    assert (await aclient.delete_pool(pool, delete_keys=True)).deleted_keys == 3


@pytest.mark.asyncio
async def test_async_retries_are_bounded(proxy: Proxy) -> None:
    proxy.add("GET", "/stats", "503", times=-1)
    proxy.retry_after = "0"
    async with AsyncClient(proxy.url, retry=RetryPolicy(attempts=2, min_backoff=0.01)) as via_proxy:
        with pytest.raises(ServiceUnavailableError) as err:
            await via_proxy.stats()
    assert err.value.status == 503 and err.value.code == "database_unavailable"
    assert len(proxy.requests("GET", "/stats")) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["503", "cut", "refused", "silent"])
async def test_async_lease_rides_out_an_outage_shorter_than_the_lease(
    aclient: AsyncClient, proxy: Proxy, pool: str, fault: str
) -> None:
    await aclient.put_pool(pool, lease_ttl=RIDE_LEASE_TTL)
    key_id = (await aclient.create_key(pool)).key_id
    path = f"/keys/{key_id}/keepalive"
    proxy.retry_after = "2"
    proxy.outage("PUT", path, fault, RIDE_WINDOW)
    async with AsyncClient(proxy.url) as via_proxy:
        lease = await via_proxy.claim(pool)
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

        assert await wait_until(lambda: lease.lost.is_set() or kept_alive_after_the_window(), timeout=10)
        assert not lease.lost.is_set(), f"lease lost in an outage shorter than it: {lease.lost_reason}"
        end = proxy.window_end()
        assert end is not None
        keep_alives = proxy.requests("PUT", path)
        assert any(s.outcome == fault for s in keep_alives), "keep-alives met the outage"
        assert not any(s.outcome == "200" and s.at <= end for s in keep_alives), "none got through before the window closed"
        await lease.release()
    assert not (await aclient.get_key(key_id)).is_blocked, "the release freed the key"
    assert (await aclient.claim_key(pool)).key_id == key_id


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", ["503", "refused"])
async def test_async_lease_lost_once_an_outage_outlasts_it(
    aclient: AsyncClient, proxy: Proxy, pool: str, lease_ttl: float, fault: str
) -> None:
    key_id = (await aclient.create_key(pool)).key_id
    proxy.outage("PUT", f"/keys/{key_id}/keepalive", fault, 2 * lease_ttl)
    async with AsyncClient(proxy.url) as via_proxy:
        before = time.monotonic()
        lease = await via_proxy.claim(pool)
        await asyncio.wait_for(lease.lost.wait(), timeout=3 * lease_ttl)
        lost_after = time.monotonic() - before
        assert "ran out" in str(lease.lost_reason)
        assert lost_after >= lease_ttl, f"lost {lost_after:.3f}s after the claim, before its {lease_ttl}s were up"
        assert lost_after < lease_ttl + 1, f"lost {lost_after:.3f}s after the claim, long after its {lease_ttl}s were up"
        with pytest.raises(LeaseLost):
            await lease.release()
    # The server took the key back meanwhile.
    assert (await aclient.claim_key(pool, wait=5)).key_id == key_id
