"""Per-client token buckets for the gateway.

Each client key (a hash of the Authorization header, else the client IP) owns a bucket
holding up to ``burst`` tokens, refilled at ``rate`` tokens per second; a request takes one.
Idle buckets that have refilled completely carry no information and are pruned, so the
table stays bounded by the number of recently active clients.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_clients:
            # Still full of active clients: forget the least recently seen half.
            ordered = sorted(self._buckets.items(), key=lambda kv: kv[1].updated)
            for key, _ in ordered[: len(ordered) // 2]:
                del self._buckets[key]


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


def client_key(authorization: str | None, client_host: str | None, path: str = "") -> str:
    """Who a request counts against: the bearer credential (hashed, never kept), else the
    client address. Logins always count against the address: a guesser could otherwise send
    a new made-up Authorization header with every attempt and never be limited."""
    if authorization and authorization[:7].lower() == "bearer " and not path.endswith(LOGIN_SUFFIX):
        return "auth:" + hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).hexdigest()
    return "ip:" + (client_host or "unknown")


LOGIN_SUFFIX = "/auth:login"
