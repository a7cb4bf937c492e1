"""The synchronous client, and the lease that keeps itself alive in a
thread of its own."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

import httpx

from . import _protocol as p
from ._errors import (
    ApiError,
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

#: Keeps a lease with a very short life from becoming a busy loop (seconds).
MIN_KEEP_ALIVE_INTERVAL = 0.005
#: A keep-alive gets at least this long to be answered (seconds).
MIN_KEEP_ALIVE_TRY = 0.1


class Client:
    """A client of one Token Orchestrator server, or of a load balancer in
    front of several replicas.

    Error answers raise an ApiError of the class the problem's ``code``
    names. Answers of 503 (the server changed nothing) are retried with
    jittered exponential backoff that honours Retry-After; requests whose
    answer was lost (a cut connection) are sent again only when that is
    safe: reads, keep-alives, releases and claims with an idempotency key,
    which ``claim()`` always sends. Network failures otherwise raise httpx's
    ``TransportError``. Thread-safe; close it, or use it as a context
    manager.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: Optional[str] = None,
        retry: Optional[RetryPolicy] = None,
        timeout: float = 10.0,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        """``base_url``: e.g. ``"http://127.0.0.1:8080"``. ``token`` is sent
        as ``Authorization: Bearer``. ``timeout`` bounds each request in
        seconds (a claim's wait comes on top). ``http_client`` replaces the
        client's own httpx.Client (proxies, TLS settings); it is not closed
        by ``close()``."""
        self.base_url = p.check_base_url(base_url)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._token = token
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # Keys.

    def create_key(self, pool: Optional[str] = None) -> Key:
        """Creates one free key in the pool (``default`` when None)."""
        return self._send(p.create_key(pool))

    def create_keys(self, count: int, pool: Optional[str] = None, *, seats: Optional[int] = None) -> List[Key]:
        """Creates ``count`` free keys (1 to 10000) in one call, each with
        ``seats`` (1 to 1000; default: the pool's policy's, or 1)."""
        return self._send(p.create_keys(count, pool, seats))

    def import_keys(
        self,
        keys: Sequence[Mapping[str, Any]],
        pool: Optional[str] = None,
        *,
        skip_existing: bool = False,
        key_ttl: Optional[Duration] = None,
    ) -> ImportResult:
        """Creates the keys, each a mapping with an optional ``secret``,
        ``name`` and ``labels``, in one call (at most 10000), answered in the
        order given without their secrets. A secret or name the pool has
        already, or one listed twice, raises DuplicateSecretError or
        DuplicateNameError unless ``skip_existing`` leaves the pool's out
        (listed in ``skipped``); a server without an encryption key raises
        SecretsNotConfiguredError. Either way nothing is created. Secrets
        imported into a pool without a policy give it one whose keys stay
        until deleted, or live ``key_ttl``."""
        return self._send(p.import_keys(keys, pool, skip_existing, key_ttl))

    def claim_key(
        self,
        pool: Optional[str] = None,
        *,
        labels: Optional[LabelFilter] = None,
        wait: Duration = 0,
        idempotency_key: Optional[str] = None,
    ) -> Key:
        """One claim request: a random free key of the pool (carrying every
        one of ``labels``), with its ``lease_token`` and ``secret``; waits up
        to ``wait`` seconds (at most 60) for one to become free, then raises
        NoFreeKeyError. UnknownPoolError comes at once. The lease runs out
        unless kept alive: ``claim()`` does that."""
        req = p.claim_key(pool, labels, p.seconds_of(wait), idempotency_key, self.timeout)
        return self._send(req)

    def claim(
        self,
        pool: Optional[str] = None,
        *,
        labels: Optional[LabelFilter] = None,
        wait: Duration = 0,
        idempotency_key: Optional[str] = None,
    ) -> "Lease":
        """Claims a key of the pool and keeps its lease alive in a background
        thread until released::

            with client.claim("openai", labels={"tier": "paid"}, wait=30) as lease:
                call_the_api(lease.secret)

        Waits up to ``wait`` seconds for a key to become free (``0``: not at
        all; ``float("inf")``: until one is), then raises NoFreeKeyError; a
        pool with neither keys nor a policy raises UnknownPoolError at once.
        Every request of one claim carries the same Idempotency-Key, so a
        claim repeated after its answer was lost gets the lease the first
        one got, never a second key."""
        key, sent = self._claim(pool, labels, p.seconds_of(wait) or 0.0, idempotency_key)
        return Lease(self, key, sent)

    def _claim(
        self,
        pool: Optional[str],
        labels: Optional[LabelFilter],
        wait: float,
        idempotency_key: Optional[str],
    ) -> Tuple[Key, float]:
        deadline = time.monotonic() + wait
        ikey = idempotency_key or p.new_idempotency_key()
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            sent = time.monotonic()
            try:
                return self._send(p.claim_key(pool, labels, remaining, ikey, self.timeout)), sent
            except IdempotencyKeyReusedError:
                if idempotency_key is not None:
                    raise
                # A key was claimed for this claim but its lease ended before
                # an answer got through: nobody holds it, so claim afresh.
                ikey = p.new_idempotency_key()
            except NoFreeKeyError:
                if time.monotonic() >= deadline:
                    raise
                elapsed = time.monotonic() - sent
                if elapsed < self.retry.min_backoff:  # a server that waited less than asked
                    time.sleep(min(self.retry.min_backoff - elapsed, max(0.0, deadline - time.monotonic())))

    def pool_status(self, pool: Optional[str] = None) -> PoolStatus:
        """How many keys the pool has and whether one is free; claims nothing."""
        return self._send(p.pool_status(pool))

    def get_key(self, key_id: str, lease_token: Optional[str] = None) -> Key:
        """The key. With the current lease's token it carries its secret;
        another token raises LeaseMismatchError."""
        return self._send(p.get_key(key_id, lease_token))

    def get_key_by_name(self, pool: str, name: str, lease_token: Optional[str] = None) -> Key:
        """The key of the pool with this name, as ``get_key``."""
        return self._send(p.get_key_by_name(pool, name, lease_token))

    def delete_key(self, key_id: str) -> Key:
        """Deletes the key for good, held or free; answers it as it was."""
        return self._send(p.delete_key(key_id))

    def delete_key_by_name(self, pool: str, name: str) -> Key:
        """Deletes the key of the pool with this name for good."""
        return self._send(p.delete_key_by_name(pool, name))

    def list_keys(self, pool: str, *, after: Optional[str] = None, limit: Optional[int] = None) -> KeyPage:
        """A page of the pool's live keys in id order (never secrets or lease
        tokens); the next page starts after ``next_after``."""
        return self._send(p.list_keys(pool, after, limit))

    def release_key(
        self, key_id: str, lease_token: Optional[str] = None, *, cooldown: Optional[Duration] = None
    ) -> Key:
        """Frees the key at once. With a lease token only that lease ends (a
        stale one raises LeaseMismatchError and changes nothing); with a
        cooldown no claim takes the key before it has passed (at most 24 h)."""
        return self._send(p.release_key(key_id, lease_token, cooldown))

    def keep_alive(self, key_id: str, lease_token: Optional[str] = None) -> Key:
        """Resets the key's life and, with the current lease's token, extends
        the lease; a stale token raises LeaseMismatchError."""
        return self._send(p.keep_alive(key_id, lease_token))

    # Pools.

    def put_pool(
        self,
        pool: str,
        *,
        key_ttl: Optional[Duration] = UNSET,
        lease_ttl: Optional[Duration] = None,
        max_lease_ttl: Optional[Duration] = None,
        require_lease_token: Optional[bool] = None,
        max_wait: Optional[Duration] = None,
    ) -> Pool:
        """Creates or replaces the pool's policy, the whole of it: what is
        left out is unset and the server's setting applies. ``key_ttl=None``:
        keys stay until deleted."""
        return self._send(
            p.put_pool(
                pool,
                key_ttl=key_ttl,
                lease_ttl=lease_ttl,
                max_lease_ttl=max_lease_ttl,
                require_lease_token=require_lease_token,
                max_wait=max_wait,
            )
        )

    def get_pool(self, pool: str) -> Pool:
        """The pool's policy, what applies, and its counts; UnknownPoolError
        when it has neither keys nor a policy."""
        return self._send(p.get_pool(pool))

    def list_pools(self) -> List[Pool]:
        """Every pool that has a policy or keys, in name order."""
        return self._send(p.list_pools())

    def delete_pool(self, pool: str, *, delete_keys: bool = False) -> DeletedPool:
        """Removes the pool's policy; a pool with keys raises
        PoolNotEmptyError unless ``delete_keys``."""
        return self._send(p.delete_pool(pool, delete_keys))

    def stats(self) -> Stats:
        """The live counts of every pool."""
        return self._send(p.stats())

    def health(self) -> None:
        self._send(p.health())

    def ready(self) -> None:
        """Returns when the server can serve; a 503 raises at once."""
        self._send(p.ready())

    # Sending.

    def _send(self, req: "p.Request[T]") -> T:
        attempts = req.attempts or max(1, self.retry.attempts)
        backoff = self.retry.min_backoff
        url = self.base_url + req.path
        headers = p.request_headers(self._token, req)
        timeout = req.timeout if req.timeout is not None else self.timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._http.request(
                    req.method, url, params=req.url_params(), json=req.json, headers=headers, timeout=timeout
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as err:
                # A request that never got through may always be sent again;
                # one whose answer was lost only when that is safe.
                never_sent = isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt >= attempts or not (never_sent or req.retry_lost_answer):
                    raise
                time.sleep(p.retry_delay(self.retry, backoff, None))
                backoff = min(2 * backoff, self.retry.max_backoff)
                continue
            if resp.status_code < 400:
                return req.parse(resp)
            error = error_from_response(resp.status_code, resp.headers, resp.content)
            if resp.status_code != 503 or attempt >= attempts:
                raise error
            # The server changed nothing: the same request may be sent again.
            time.sleep(p.retry_delay(self.retry, backoff, error.retry_after))
            backoff = min(2 * backoff, self.retry.max_backoff)


class Lease:
    """A key held by this client, from ``Client.claim()``.

    It keeps itself alive in a daemon thread, at about a third of the
    lease's remaining time as the server's answers give it, so the worker's
    own thread may block, sleep or compute for longer than a lease lasts.
    When the server says the lease or the key is gone (409, 404), or the
    lease runs out before a keep-alive gets through, ``lost`` is set and
    ``lost_reason`` says why: from then on the key may be someone else's.
    Released on leaving the ``with`` block (with the cooldown given to
    ``cooldown()``, if any), or by ``release()``.
    """

    def __init__(self, client: Client, key: Key, sent: float) -> None:
        """``sent``: when the claim request left, by ``time.monotonic()``."""
        duration = key.lease_duration()
        if not key.lease_token or duration is None or duration.total_seconds() <= 0:
            raise ValueError(f"the server claimed key {key.key_id} without a lease token or a lease deadline")
        self.key = key
        self.lost = threading.Event()
        self.lost_reason: Optional[LeaseLost] = None
        self._client = client
        self._expires_at = key.lease_expires_at
        self._deadline = sent + duration.total_seconds()
        self._cooldown: Optional[Duration] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._released: Optional[Tuple[Optional[Key], Optional[BaseException]]] = None
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"tokenorchestrator-lease-{key.key_id}", daemon=True
        )
        self._thread.start()

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def token(self) -> str:
        """The lease token, presented on every call of this lease."""
        return self.key.lease_token or ""

    @property
    def secret(self) -> Optional[str]:
        """The credential the key stands for, None for a key without one.
        Keep it out of logs."""
        return self.key.secret

    @property
    def expires_at(self) -> Optional[datetime]:
        """The end of the lease as the server last set it (its clock, UTC)."""
        return self._expires_at

    def remaining(self) -> float:
        """Seconds until the lease ends unless kept alive, by this machine's
        monotonic clock."""
        return max(0.0, self._deadline - time.monotonic())

    def raise_if_lost(self) -> None:
        """Raises LeaseLost if the lease was lost."""
        if self.lost.is_set() and self.lost_reason is not None:
            raise self.lost_reason

    def cooldown(self, cooldown: Optional[Duration]) -> None:
        """Releases the key with this cooldown (seconds, a timedelta or
        "30s"; at most 24 h) when the ``with`` block ends: no claim takes it
        before. See ``cooldown_from_retry_after``. None: no cooldown."""
        self._cooldown = cooldown

    def release(self, cooldown: Optional[Duration] = None) -> Optional[Key]:
        """Stops keeping the lease alive and releases the key, with a
        cooldown if given (or set by ``cooldown()``). Raises LeaseLost when
        the lease was already lost. Only the first call does anything; later
        ones answer as it did."""
        with self._lock:
            if self._released is None:
                self._released = self._release(cooldown if cooldown is not None else self._cooldown)
        key, err = self._released
        if err is not None:
            raise err
        return key

    def _release(self, cooldown: Optional[Duration]) -> Tuple[Optional[Key], Optional[BaseException]]:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if self.lost.is_set():
            return None, self.lost_reason
        try:
            return self._client._send(p.release_key(self.key_id, self.token, cooldown)), None
        except (LeaseMismatchError, KeyNotFoundError) as err:
            self._lose(f"lease {self.token} of key {self.key_id} ended before its release: {err}", err)
            return None, self.lost_reason
        except Exception as err:  # noqa: BLE001 - handed to the caller
            return None, err

    def __enter__(self) -> "Lease":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        try:
            self.release()
        except LeaseLost:
            pass  # lease.lost says so already
        except Exception:
            if exc_type is None:
                raise
            log.warning("releasing key %s failed", self.key_id, exc_info=True)

    def _keep_alive(self) -> None:
        deadline = self._deadline
        # A third of the remaining time leaves room for two more tries
        # should one fail.
        wait = (deadline - time.monotonic()) / 3
        while True:
            if self._stop.wait(max(wait, MIN_KEEP_ALIVE_INTERVAL)):
                return
            # A try gets half the time left: one that meets a network that
            # answers nothing leaves the other half for the next.
            sent = time.monotonic()
            req = p.keep_alive(self.key_id, self.token, timeout=max((deadline - sent) / 2, MIN_KEEP_ALIVE_TRY))
            req.attempts = 1  # this loop retries, within the lease's time
            try:
                key = self._client._send(req)
            except (LeaseMismatchError, KeyNotFoundError) as err:
                if not self._stop.is_set():
                    self._lose(f"lease {self.token} of key {self.key_id}: {err}", err)
                return
            except Exception as err:  # noqa: BLE001 - the server or the network failed for now
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
        return f"<Lease key_id={self.key_id} token={self.token} {state}>"
