"""What the server answers, as typed objects. Every object keeps the JSON it
was read from in ``raw``, so that fields newer than this client stay
reachable."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "Key",
    "Pool",
    "PoolStats",
    "Stats",
    "PoolStatus",
    "SkippedKey",
    "ImportResult",
    "DeletedPool",
    "KeyPage",
    "parse_time",
]


def parse_time(value: Any) -> Optional[datetime]:
    """An RFC 3339 time of the server (UTC, milliseconds) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    if value.endswith("Z"):  # fromisoformat takes "Z" only from Python 3.11
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


@dataclass(frozen=True)
class Key:
    """A key as the server describes it. ``lease_token`` is set only on the
    answer of a claim, ``secret`` only for the holder of the current lease,
    ``deleted`` only on the answer of a deletion."""

    key_id: str
    pool: str
    is_blocked: bool
    created_at: Optional[datetime]
    expires_at: Optional[datetime]
    blocked_at: Optional[datetime]
    lease_expires_at: Optional[datetime]
    last_keep_alive_at: Optional[datetime]
    cooling_until: Optional[datetime]
    times_assigned: int
    #: How many leases may hold the key at once, each with its own token.
    seats: int = 1
    #: How many of its seats are held; None where the server does not
    #: count them (answers about one lease of a key of several seats).
    seats_held: Optional[int] = None
    name: Optional[str] = None
    secret_hint: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)
    secret: Optional[str] = field(default=None, repr=False)
    lease_token: Optional[str] = None
    deleted: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Key":
        return cls(
            key_id=str(data["keyId"]),
            pool=str(data.get("pool", "")),
            is_blocked=bool(data.get("isBlocked", False)),
            created_at=parse_time(data.get("createdAt")),
            expires_at=parse_time(data.get("expiresAt")),
            blocked_at=parse_time(data.get("blockedAt")),
            lease_expires_at=parse_time(data.get("leaseExpiresAt")),
            last_keep_alive_at=parse_time(data.get("lastKeepAliveAt")),
            cooling_until=parse_time(data.get("coolingUntil")),
            times_assigned=int(data.get("timesAssigned") or 0),
            seats=int(data.get("seats") or 1),
            seats_held=None if data.get("seatsHeld") is None else int(data["seatsHeld"]),
            name=data.get("name"),
            secret_hint=data.get("secretHint"),
            labels=dict(data.get("labels") or {}),
            secret=data.get("secret"),
            lease_token=data.get("leaseToken"),
            deleted=bool(data.get("deleted", False)),
            raw=data,
        )

    def lease_duration(self) -> Optional[timedelta]:
        """How long the lease lasts from the server's answer: its end minus
        its start (the claim or the last keep-alive), both by the database's
        clock, so that no clock skew between here and there enters."""
        if self.lease_expires_at is None:
            return None
        starts = [t for t in (self.blocked_at, self.last_keep_alive_at) if t is not None]
        if not starts:
            return None
        return self.lease_expires_at - max(starts)


@dataclass(frozen=True)
class SkippedKey:
    """A key of an import left out by skip_existing: its index in the list,
    and why ("secret" or "name")."""

    index: int
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """What an import created (without secrets) and left out, and whether
    the import gave the pool its policy."""

    keys: List[Key]
    skipped: List[SkippedKey]
    policy_created: bool


@dataclass(frozen=True)
class Pool:
    """A pool: its policy (only what it sets; server spelling, e.g.
    ``keyTTL``), what applies, and its counts."""

    pool: str
    has_policy: bool
    policy: Dict[str, Any]
    effective: Dict[str, Any]
    keys: int
    free: int
    held: int
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    keys_rebased: Optional[int] = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Pool":
        rebased = data.get("keysRebased")
        return cls(
            pool=str(data["pool"]),
            has_policy=bool(data.get("hasPolicy", False)),
            policy=dict(data.get("policy") or {}),
            effective=dict(data.get("effective") or {}),
            keys=int(data.get("keys") or 0),
            free=int(data.get("free") or 0),
            held=int(data.get("held") or 0),
            created_at=parse_time(data.get("createdAt")),
            updated_at=parse_time(data.get("updatedAt")),
            keys_rebased=None if rebased is None else int(rebased),
            raw=data,
        )


@dataclass(frozen=True)
class DeletedPool:
    pool: str
    deleted_keys: int


@dataclass(frozen=True)
class PoolStats:
    """The live counts of one pool (``pool`` is None for the total).

    ``total`` counts keys and ``seats`` their seats, which ``free`` and
    ``blocked`` (held) split. ``expiring_within_minute`` is a lower bound
    when :attr:`Stats.expiring_within_minute_capped` is true.
    """

    pool: Optional[str]
    total: int
    seats: int
    free: int
    blocked: int
    expiring_within_minute: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PoolStats":
        return cls(
            pool=data.get("pool"),
            total=int(data.get("total") or 0),
            seats=int(data.get("seats") or 0),
            free=int(data.get("free") or 0),
            blocked=int(data.get("blocked") or 0),
            expiring_within_minute=int(data.get("expiringWithinMinute") or 0),
        )


@dataclass(frozen=True)
class Stats:
    """The live counts of every pool that has keys, and their sum.

    ``expiring_within_minute_capped`` is true when more keys expire within a
    minute than the server counts (1,000): the counts of keys about to
    expire are then lower bounds.
    """

    pools: List[PoolStats]
    total: PoolStats
    expiring_within_minute_capped: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Stats":
        return cls(
            pools=[PoolStats.from_json(p) for p in data.get("pools") or []],
            total=PoolStats.from_json(data.get("total") or {}),
            expiring_within_minute_capped=bool(data.get("expiringWithinMinuteCapped")),
        )

    def pool(self, name: str) -> Optional[PoolStats]:
        """The counts of the named pool; None when it has no keys."""
        return next((p for p in self.pools if p.pool == name), None)


@dataclass(frozen=True)
class PoolStatus:
    """The availability of a pool, from HEAD /keys; claims nothing."""

    pool: str
    keys: int
    free: int
    blocked: int
    available: bool


@dataclass(frozen=True)
class KeyPage:
    """A page of a pool's keys in id order; the next page starts after
    ``next_after`` (None on the last page)."""

    pool: str
    keys: List[Key]
    next_after: Optional[str]
