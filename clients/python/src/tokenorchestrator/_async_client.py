"""The asyncio client, and the lease that keeps itself alive in a task."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from types import TracebackType
from typing import Any, Generator, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

import httpx

from . import _protocol as p
from ._client import MIN_KEEP_ALIVE_INTERVAL, MIN_KEEP_ALIVE_TRY
from ._errors import (
    IdempotencyKeyReusedError,
    KeyNotFoundError,
    LeaseLost,
    LeaseMismatchError,
    NoFreeKeyError,
    error_from_response,
)
from ._models import DeletedPool, ImportResult, Key, KeyPage, Pool, PoolStatus, Stats
from ._protocol import UNSET, Duration, LabelFilter, RetryPolicy

T = TypeVar("T")

log = logging.getLogger("tokenorchestrator")


class AsyncClient:
    """The asyncio twin of ``Client``: the same calls, as coroutines, and
    ``claim()`` usable as ``async with client.claim(...) as lease`` or
    ``lease = await client.claim(...)``. Close it with ``aclose()`` or use
    it as an async context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        token: Optional[str] = None,
        retry: Optional[RetryPolicy] = None,
        timeout: float = 10.0,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.base_url = p.check_base_url(base_url)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._token = token
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # Keys.

    async def create_key(self, pool: Optional[str] = None) -> Key:
        """Creates one free key in the pool (``default`` when None)."""
        return await self._send(p.create_key(pool))

    async def create_keys(self, count: int, pool: Optional[str] = None, *, seats: Optional[int] = None) -> List[Key]:
        """Creates ``count`` free keys (1 to 10000) in one call, each with
        ``seats`` (1 to 1000; default: the pool's policy's, or 1)."""
        return await self._send(p.create_keys(count, pool, seats))

    async def import_keys(
        self,
        keys: Sequence[Mapping[str, Any]],
        pool: Optional[str] = None,
        *,
        skip_existing: bool = False,
        key_ttl: Optional[Duration] = None,
    ) -> ImportResult:
        """As ``Client.import_keys``."""
        return await self._send(p.import_keys(keys, pool, skip_existing, key_ttl))

    async def claim_key(
        self,
        pool: Optional[str] = None,
        *,
        labels: Optional[LabelFilter] = None,
        wait: Duration = 0,
        idempotency_key: Optional[str] = None,
    ) -> Key:
        """One claim request, as ``Client.claim_key``."""
        return await self._send(p.claim_key(pool, labels, p.seconds_of(wait), idempotency_key, self.timeout))

    def claim(
        self,
        pool: Optional[str] = None,
        *,
        labels: Optional[LabelFilter] = None,
        wait: Duration = 0,
        idempotency_key: Optional[str] = None,
    ) -> "_Claim":
        """Claims a key of the pool and keeps its lease alive in a task until
        released, as ``Client.claim``::

            async with client.claim("openai", labels={"tier": "paid"}, wait=30) as lease:
                await call_the_api(lease.secret)

        The task runs whenever the event loop does: blocking work belongs in
        ``asyncio.to_thread`` (or ``run_in_executor``), or it starves the
        keep-alive as it starves every other task."""
        return _Claim(self, pool, labels, p.seconds_of(wait) or 0.0, idempotency_key)

    async def _claim(
        self,
        pool: Optional[str],
        labels: Optional[LabelFilter],
        wait: float,
        idempotency_key: Optional[str],
    ) -> "AsyncLease":
        deadline = time.monotonic() + wait
        ikey = idempotency_key or p.new_idempotency_key()
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            sent = time.monotonic()
            try:
                key = await self._send(p.claim_key(pool, labels, remaining, ikey, self.timeout))
                return AsyncLease(self, key, sent)
            except IdempotencyKeyReusedError:
                if idempotency_key is not None:
                    raise
                ikey = p.new_idempotency_key()
            except NoFreeKeyError:
                if time.monotonic() >= deadline:
                    raise
                elapsed = time.monotonic() - sent
                if elapsed < self.retry.min_backoff:
                    await asyncio.sleep(min(self.retry.min_backoff - elapsed, max(0.0, deadline - time.monotonic())))

    async def pool_status(self, pool: Optional[str] = None) -> PoolStatus:
        return await self._send(p.pool_status(pool))

    async def get_key(self, key_id: str, lease_token: Optional[str] = None) -> Key:
        """The key; with the current lease's token, its secret too."""
        return await self._send(p.get_key(key_id, lease_token))

    async def get_key_by_name(self, pool: str, name: str, lease_token: Optional[str] = None) -> Key:
        return await self._send(p.get_key_by_name(pool, name, lease_token))

    async def delete_key(self, key_id: str) -> Key:
        return await self._send(p.delete_key(key_id))

    async def delete_key_by_name(self, pool: str, name: str) -> Key:
        return await self._send(p.delete_key_by_name(pool, name))

    async def list_keys(self, pool: str, *, after: Optional[str] = None, limit: Optional[int] = None) -> KeyPage:
        return await self._send(p.list_keys(pool, after, limit))

    async def release_key(
        self, key_id: str, lease_token: Optional[str] = None, *, cooldown: Optional[Duration] = None
    ) -> Key:
        return await self._send(p.release_key(key_id, lease_token, cooldown))

    async def keep_alive(self, key_id: str, lease_token: Optional[str] = None) -> Key:
        return await self._send(p.keep_alive(key_id, lease_token))

    # Pools.

    async def put_pool(
        self,
        pool: str,
        *,
        key_ttl: Optional[Duration] = UNSET,
        lease_ttl: Optional[Duration] = None,
        max_lease_ttl: Optional[Duration] = None,
        require_lease_token: Optional[bool] = None,
        max_wait: Optional[Duration] = None,
    ) -> Pool:
        return await self._send(
            p.put_pool(
                pool,
                key_ttl=key_ttl,
                lease_ttl=lease_ttl,
                max_lease_ttl=max_lease_ttl,
                require_lease_token=require_lease_token,
                max_wait=max_wait,
            )
        )

    async def get_pool(self, pool: str) -> Pool:
        return await self._send(p.get_pool(pool))

    async def list_pools(self) -> List[Pool]:
        return await self._send(p.list_pools())

    async def delete_pool(self, pool: str, *, delete_keys: bool = False) -> DeletedPool:
        return await self._send(p.delete_pool(pool, delete_keys))

    async def stats(self) -> Stats:
        return await self._send(p.stats())

    async def health(self) -> None:
        await self._send(p.health())

    async def ready(self) -> None:
        await self._send(p.ready())

    async def _send(self, req: "p.Request[T]") -> T:
        attempts = req.attempts or max(1, self.retry.attempts)
        backoff = self.retry.min_backoff
        url = self.base_url + req.path
        headers = p.request_headers(self._token, req)
        timeout = req.timeout if req.timeout is not None else self.timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._http.request(
                    req.method, url, params=req.url_params(), json=req.json, headers=headers, timeout=timeout
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as err:
                never_sent = isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt >= attempts or not (never_sent or req.retry_lost_answer):
                    raise
                await asyncio.sleep(p.retry_delay(self.retry, backoff, None))
                backoff = min(2 * backoff, self.retry.max_backoff)
                continue
            if resp.status_code < 400:
                return req.parse(resp)
            error = error_from_response(resp.status_code, resp.headers, resp.content)
            if resp.status_code != 503 or attempt >= attempts:
                raise error
            await asyncio.sleep(p.retry_delay(self.retry, backoff, error.retry_after))
            backoff = min(2 * backoff, self.retry.max_backoff)


class _Claim:
    """What ``AsyncClient.claim()`` returns: await it for the lease, or use
    it with ``async with``, which releases the lease at the end."""

    def __init__(
        self,
        client: AsyncClient,
        pool: Optional[str],
        labels: Optional[LabelFilter],
        wait: float,
        idempotency_key: Optional[str],
    ) -> None:
        self._args = (pool, labels, wait, idempotency_key)
        self._client = client
        self._lease: Optional[AsyncLease] = None

    def __await__(self) -> Generator[Any, None, "AsyncLease"]:
        return self._client._claim(*self._args).__await__()

    async def __aenter__(self) -> "AsyncLease":
        self._lease = await self._client._claim(*self._args)
        return self._lease

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self._lease is not None:
            await self._lease.__aexit__(exc_type, exc, tb)


class AsyncLease:
    """A key held by this client, from ``AsyncClient.claim()``: as
    ``Lease``, kept alive by an asyncio task; ``lost`` is an asyncio.Event.
    Create it inside the running event loop."""

    def __init__(self, client: AsyncClient, key: Key, sent: float) -> None:
        duration = key.lease_duration()
        if not key.lease_token or duration is None or duration.total_seconds() <= 0:
            raise ValueError(f"the server claimed key {key.key_id} without a lease token or a lease deadline")
        self.key = key
        self.lost = asyncio.Event()
        self.lost_reason: Optional[LeaseLost] = None
        self._client = client
        self._expires_at = key.lease_expires_at
        self._deadline = sent + duration.total_seconds()
        self._cooldown: Optional[Duration] = None
        self._stop = asyncio.Event()
        self._released: Optional["asyncio.Task[Optional[Key]]"] = None
        self._task = asyncio.get_running_loop().create_task(self._keep_alive())

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def token(self) -> str:
        return self.key.lease_token or ""

    @property
    def secret(self) -> Optional[str]:
        return self.key.secret

    @property
    def expires_at(self) -> Optional[datetime]:
        return self._expires_at

    def remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def raise_if_lost(self) -> None:
        if self.lost.is_set() and self.lost_reason is not None:
            raise self.lost_reason

    def cooldown(self, cooldown: Optional[Duration]) -> None:
        """Releases the key with this cooldown when the ``async with`` block ends."""
        self._cooldown = cooldown

    async def release(self, cooldown: Optional[Duration] = None) -> Optional[Key]:
        """Stops keeping the lease alive and releases the key, with a
        cooldown if given (or set by ``cooldown()``). Raises LeaseLost when
        the lease was already lost. Only the first call does anything."""
        if self._released is None:
            self._released = asyncio.ensure_future(
                self._release(cooldown if cooldown is not None else self._cooldown)
            )
        return await asyncio.shield(self._released)

    async def _release(self, cooldown: Optional[Duration]) -> Optional[Key]:
        self._stop.set()
        await self._task
        self.raise_if_lost()
        try:
            released: Key = await self._client._send(p.release_key(self.key_id, self.token, cooldown))
            return released
        except (LeaseMismatchError, KeyNotFoundError) as err:
            self._lose(f"lease {self.token} of key {self.key_id} ended before its release: {err}", err)
            raise self.lost_reason from err  # type: ignore[misc]

    async def __aenter__(self) -> "AsyncLease":
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        try:
            await self.release()
        except LeaseLost:
            pass
        except Exception:
            if exc_type is None:
                raise
            log.warning("releasing key %s failed", self.key_id, exc_info=True)

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Waits the seconds; True when stopped first."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
            return True
        except asyncio.TimeoutError:
            return self._stop.is_set()

    async def _keep_alive(self) -> None:
        deadline = self._deadline
        wait = (deadline - time.monotonic()) / 3
        while True:
            if await self._sleep_or_stop(max(wait, MIN_KEEP_ALIVE_INTERVAL)):
                return
            # A try gets half the time left: one that meets a network that
            # answers nothing leaves the other half for the next.
            sent = time.monotonic()
            req = p.keep_alive(self.key_id, self.token, timeout=max((deadline - sent) / 2, MIN_KEEP_ALIVE_TRY))
            req.attempts = 1
            try:
                key = await self._client._send(req)
            except (LeaseMismatchError, KeyNotFoundError) as err:
                if not self._stop.is_set():
                    self._lose(f"lease {self.token} of key {self.key_id}: {err}", err)
                return
            except Exception as err:  # noqa: BLE001
                if self._stop.is_set():
                    return
                if time.monotonic() >= deadline:
                    self._lose(f"lease {self.token} of key {self.key_id} ran out before a keep-alive got through", err)
                    return
                log.debug("keep-alive of key %s failed, trying again: %s", self.key_id, err)
                wait = min(wait, (deadline - time.monotonic()) / 2)
                continue
            duration = key.lease_duration()
            if duration is not None:
                self._expires_at = key.lease_expires_at
                deadline = self._deadline = sent + duration.total_seconds()
            wait = (deadline - time.monotonic()) / 3

    def _lose(self, message: str, cause: Optional[BaseException]) -> None:
        reason = LeaseLost(message, self.key_id, self.token)
        reason.__cause__ = cause
        self.lost_reason = reason
        self.lost.set()
        log.warning("%s", message)

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "released" if self._released else "held"
        return f"<AsyncLease key_id={self.key_id} token={self.token} {state}>"
