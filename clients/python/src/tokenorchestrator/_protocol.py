"""The requests of the API, shared by Client and AsyncClient: each call
builds a Request, the client sends it (retrying answers of 503) and the
Request reads the answer. No input or output happens here."""

from __future__ import annotations

import json
import math
import random
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from ._models import DeletedPool, ImportResult, Key, KeyPage, Pool, PoolStatus, SkippedKey, Stats

T = TypeVar("T")

#: A length of time: seconds (int or float), a timedelta, or a duration the
#: server reads ("30s", "1500ms", "5m").
Duration = Union[int, float, timedelta, str]

#: Labels a claimed key must carry, every one: a mapping ({"tier": "paid"})
#: or "name=value" strings. The server walks the first label's keys and
#: checks the others on each, so name the most selective one first.
LabelFilter = Union[Mapping[str, str], Sequence[str]]

#: The longest the server waits for a free key in one call, in seconds.
MAX_WAIT = 60.0

#: The most keys one import creates.
MAX_IMPORT = 10_000

DEFAULT_POOL = "default"


@dataclass(frozen=True)
class RetryPolicy:
    """How answers of 503 (the server changed nothing) are retried: after
    ``min_backoff`` seconds, then twice as long each time up to
    ``max_backoff``, ``attempts`` tries in all. Each wait is jittered over
    [d/2, d) and never shorter than the server's Retry-After (up to
    ``max_backoff``). ``attempts=1`` disables retries."""

    attempts: int = 5
    min_backoff: float = 0.1
    max_backoff: float = 5.0

    def delays(self) -> Iterable[float]:
        """The jittered backoff before each retry, without Retry-After."""
        backoff = self.min_backoff
        for _ in range(max(1, self.attempts) - 1):
            yield jitter(backoff)
            backoff = min(2 * backoff, self.max_backoff)


def jitter(seconds: float) -> float:
    """Spreads the retries of many clients over [d/2, d)."""
    return seconds / 2 + random.random() * seconds / 2


def new_idempotency_key() -> str:
    """A random idempotency key: 128 random bits in hex."""
    return secrets.token_hex(16)


@dataclass
class Request(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: List[Tuple[str, str]] = field(default_factory=list)
    json: Any = None
    headers: Dict[str, str] = field(default_factory=dict)
    # Whether a request whose answer was lost (connection cut, timeout) may
    # be sent again: it changes nothing twice.
    retry_lost_answer: bool = False
    # Seconds for the whole request, None for the client's.
    timeout: Optional[float] = None
    # Overrides the client's retry policy's attempts.
    attempts: Optional[int] = None

    def url_params(self) -> httpx.QueryParams:
        """The query, leaving out parameters without a value."""
        return httpx.QueryParams([(k, v) for k, v in self.params if v != ""])


def duration_param(name: str, value: Duration) -> str:
    """A duration as the server reads it: strings as given, seconds and
    timedeltas as whole milliseconds, rounded up."""
    if isinstance(value, str):
        return value
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds from 0, a timedelta or a duration string, got {value!r}")
    return f"{math.ceil(value * 1000)}ms"


def seconds_of(value: Optional[Duration]) -> Optional[float]:
    """A wait in seconds; strings are read as the server would (s, ms, m, h)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        for unit in ("ms", "s", "m", "h"):
            if value.endswith(unit):
                return float(value[: -len(unit)]) * units[unit]
        return float(value)
    return float(value)


def label_params(labels: Optional[LabelFilter]) -> List[Tuple[str, str]]:
    if labels is None:
        return []
    if isinstance(labels, str):
        return [("label", labels)]
    if isinstance(labels, Mapping):
        return [("label", f"{name}={value}") for name, value in labels.items()]
    return [("label", str(item)) for item in labels]


def if_match(token: Optional[str]) -> Dict[str, str]:
    return {"If-Match": f'"{token}"'} if token else {}


def key_path(key_id: str) -> str:
    """The id stays one path segment, whatever the caller passes."""
    return "/keys/" + quote(key_id, safe="")


def pool_path(pool: str) -> str:
    return "/pools/" + quote(pool, safe="")


def named_key_path(pool: str, name: str) -> str:
    return pool_path(pool) + "/keys/" + quote(name, safe="")


def _json(resp: httpx.Response) -> Any:
    try:
        return json.loads(resp.content)
    except ValueError as err:
        raise ValueError(f"the answer to {resp.request.method} {resp.request.url.path} is not JSON") from err


def _key(resp: httpx.Response) -> Key:
    return Key.from_json(_json(resp))


def _keys(resp: httpx.Response) -> List[Key]:
    return [Key.from_json(k) for k in _json(resp)["keys"]]


def _import(resp: httpx.Response) -> ImportResult:
    data = _json(resp)
    return ImportResult(
        keys=[Key.from_json(k) for k in data["keys"]],
        skipped=[SkippedKey(int(s["index"]), str(s["reason"])) for s in data.get("skipped") or []],
        policy_created=bool(data.get("policyCreated", False)),
    )


def _pool(resp: httpx.Response) -> Pool:
    return Pool.from_json(_json(resp))


def _nothing(resp: httpx.Response) -> None:
    return None


# The calls, one function each, named as the client methods that use them.


def create_keys(count: int, pool: Optional[str], seats: Optional[int] = None) -> Request[List[Key]]:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_IMPORT:
        raise ValueError(f"count must be from 1 to {MAX_IMPORT}, got {count!r}")
    body: Dict[str, Any] = {"count": count}
    if seats is not None:
        if isinstance(seats, bool) or not isinstance(seats, int) or not 1 <= seats <= 1000:
            raise ValueError(f"seats must be from 1 to 1000, got {seats!r}")
        body["seats"] = seats
    return Request("POST", "/keys", _keys, params=[("pool", pool or "")], json=body)


def create_key(pool: Optional[str]) -> Request[Key]:
    return Request("POST", "/keys", _key, params=[("pool", pool or "")])


def import_keys(
    keys: Sequence[Mapping[str, Any]],
    pool: Optional[str],
    skip_existing: bool,
    key_ttl: Optional[Duration],
) -> Request[ImportResult]:
    if not keys:
        raise ValueError("import_keys needs at least one key")
    if len(keys) > MAX_IMPORT:
        raise ValueError(f"import_keys takes at most {MAX_IMPORT} keys, got {len(keys)}")
    body: Dict[str, Any] = {"keys": [_new_key(k) for k in keys]}
    if skip_existing:
        body["skipExisting"] = True
    if key_ttl is not None:
        body["keyTTL"] = duration_param("key_ttl", key_ttl)
    return Request("POST", "/keys", _import, params=[("pool", pool or "")], json=body)


def _new_key(key: Mapping[str, Any]) -> Dict[str, Any]:
    unknown = set(key) - {"secret", "name", "labels"}
    if unknown:
        raise ValueError(f"a key to import has secret, name and labels, not {sorted(unknown)}")
    return {k: (dict(v) if k == "labels" else v) for k, v in key.items() if v is not None}


def claim_key(
    pool: Optional[str],
    labels: Optional[LabelFilter],
    wait: Optional[float],
    idempotency_key: Optional[str],
    timeout: float,
) -> Request[Key]:
    params = [("pool", pool or "")]
    if wait is not None and wait > 0:
        params.append(("wait", f"{math.ceil(min(wait, MAX_WAIT) * 1000)}ms"))
    params += label_params(labels)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    # The server takes up to the wait to answer.
    return Request(
        "GET",
        "/keys",
        _key,
        params=params,
        headers=headers,
        retry_lost_answer=bool(idempotency_key),
        timeout=min(wait or 0, MAX_WAIT) + timeout,
    )


def pool_status(pool: Optional[str]) -> Request[PoolStatus]:
    def parse(resp: httpx.Response) -> PoolStatus:
        h = resp.headers

        def num(name: str) -> int:
            return int(h.get(name) or 0)

        return PoolStatus(
            pool=h.get("X-Pool", ""),
            keys=num("X-Pool-Keys"),
            free=num("X-Pool-Free"),
            blocked=num("X-Pool-Blocked"),
            available=h.get("X-Pool-Available") == "true",
        )

    return Request("HEAD", "/keys", parse, params=[("pool", pool or "")], retry_lost_answer=True)


def get_key(key_id: str, lease_token: Optional[str]) -> Request[Key]:
    return Request("GET", key_path(key_id), _key, headers=if_match(lease_token), retry_lost_answer=True)


def get_key_by_name(pool: str, name: str, lease_token: Optional[str]) -> Request[Key]:
    return Request("GET", named_key_path(pool, name), _key, headers=if_match(lease_token), retry_lost_answer=True)


def delete_key(key_id: str) -> Request[Key]:
    return Request("DELETE", key_path(key_id), _key)


def delete_key_by_name(pool: str, name: str) -> Request[Key]:
    return Request("DELETE", named_key_path(pool, name), _key)


def list_keys(pool: str, after: Optional[str], limit: Optional[int]) -> Request[KeyPage]:
    def parse(resp: httpx.Response) -> KeyPage:
        data = _json(resp)
        return KeyPage(
            pool=str(data.get("pool", pool)),
            keys=[Key.from_json(k) for k in data.get("keys") or []],
            next_after=data.get("nextAfter"),
        )

    params = [("after", after or ""), ("limit", "" if limit is None else str(limit))]
    return Request("GET", pool_path(pool) + "/keys", parse, params=params, retry_lost_answer=True)


def release_key(key_id: str, lease_token: Optional[str], cooldown: Optional[Duration]) -> Request[Key]:
    params = [] if cooldown is None else [("cooldown", duration_param("cooldown", cooldown))]
    # A release repeated changes nothing more: the key is free (or the token
    # is stale and the answer says so).
    return Request("PUT", key_path(key_id), _key, params=params, headers=if_match(lease_token), retry_lost_answer=True)


def keep_alive(key_id: str, lease_token: Optional[str], timeout: Optional[float] = None) -> Request[Key]:
    return Request(
        "PUT",
        key_path(key_id) + "/keepalive",
        _key,
        headers=if_match(lease_token),
        retry_lost_answer=True,
        timeout=timeout,
    )


def put_pool(
    pool: str,
    *,
    key_ttl: Union[Duration, None, "_Unset"],
    lease_ttl: Optional[Duration],
    max_lease_ttl: Optional[Duration],
    require_lease_token: Optional[bool],
    max_wait: Optional[Duration],
) -> Request[Pool]:
    body: Dict[str, Any] = {}
    if not isinstance(key_ttl, _Unset):
        body["keyTTL"] = None if key_ttl is None else duration_param("key_ttl", key_ttl)
    for name, wire, value in (
        ("lease_ttl", "leaseTTL", lease_ttl),
        ("max_lease_ttl", "maxLeaseTTL", max_lease_ttl),
        ("max_wait", "maxWait", max_wait),
    ):
        if value is not None:
            body[wire] = duration_param(name, value)
    if require_lease_token is not None:
        body["requireLeaseToken"] = require_lease_token
    return Request("PUT", pool_path(pool), _pool, json=body, retry_lost_answer=True)


def get_pool(pool: str) -> Request[Pool]:
    return Request("GET", pool_path(pool), _pool, retry_lost_answer=True)


def list_pools() -> Request[List[Pool]]:
    def parse(resp: httpx.Response) -> List[Pool]:
        return [Pool.from_json(p) for p in _json(resp)["pools"]]

    return Request("GET", "/pools", parse, retry_lost_answer=True)


def delete_pool(pool: str, delete_keys: bool) -> Request[DeletedPool]:
    def parse(resp: httpx.Response) -> DeletedPool:
        data = _json(resp)
        return DeletedPool(pool=str(data.get("pool", pool)), deleted_keys=int(data.get("deletedKeys") or 0))

    params = [("deleteKeys", "true")] if delete_keys else []
    return Request("DELETE", pool_path(pool), parse, params=params)


def stats() -> Request[Stats]:
    return Request("GET", "/stats", lambda resp: Stats.from_json(_json(resp)), retry_lost_answer=True)


def health() -> Request[None]:
    return Request("GET", "/healthz", _nothing, retry_lost_answer=True)


def ready() -> Request[None]:
    return Request("GET", "/readyz", _nothing, attempts=1)


class _Unset:
    """The default of put_pool's key_ttl: None there means keys that stay."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def request_headers(token: Optional[str], req: Request[Any]) -> Dict[str, str]:
    headers = {"Accept": "application/json, application/problem+json", "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(req.headers)
    return headers


def retry_delay(policy: RetryPolicy, backoff: float, retry_after: Optional[float]) -> float:
    """The wait before the next try: the jittered backoff, at least the
    server's Retry-After, at most the policy's longest backoff."""
    return min(max(jitter(backoff), retry_after or 0.0), policy.max_backoff)


USER_AGENT = "tokenorchestrator-python"


def check_base_url(base_url: str) -> str:
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"server URL must be http:// or https:// with a host, got {base_url!r}")
    return base_url.rstrip("/")
