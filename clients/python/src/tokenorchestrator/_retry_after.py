"""Retry-After, as seconds or an HTTP date."""

from __future__ import annotations

import email.utils
import time
from datetime import timedelta
from typing import Optional, Union

#: The longest cooldown the server takes.
MAX_COOLDOWN = 24 * 60 * 60.0


def parse_retry_after(value: Optional[str], *, now: Optional[float] = None) -> Optional[float]:
    """Seconds from now that a ``Retry-After`` value names: a number of
    seconds, or an HTTP date (RFC 9110), which in the past counts as 0.
    None for a missing or unreadable value."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value))
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if at is None or at.tzinfo is None:  # an HTTP date is always in GMT
        return None
    current = time.time() if now is None else now
    return max(0.0, at.timestamp() - current)


def cooldown_from_retry_after(
    value: Optional[str],
    default: Optional[float] = None,
    *,
    maximum: Union[float, timedelta] = MAX_COOLDOWN,
) -> Optional[float]:
    """The cooldown, in seconds, that an upstream's ``Retry-After`` header
    asks for, to release a rate-limited key with::

        if resp.status_code == 429:
            lease.cooldown(cooldown_from_retry_after(resp.headers.get("Retry-After"), default=30))

    ``value`` is seconds or an HTTP date; a missing or unreadable one gives
    ``default``. The result is capped at ``maximum`` (the server takes at
    most 24 hours).
    """
    if isinstance(maximum, timedelta):
        maximum = maximum.total_seconds()
    seconds = parse_retry_after(value)
    if seconds is None:
        seconds = default
    if seconds is None:
        return None
    return min(max(0.0, seconds), maximum, MAX_COOLDOWN)
