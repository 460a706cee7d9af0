"""Request budgets kept in the worker's memory: fixed windows of counts per key, answered with 429 + Retry-After.

Two uses:

- :class:`RateLimiter` — every request of one token (off by default; ``PROMOCODES_RATE_LIMIT``).
- :class:`FailureGuard` — failures that guessing produces: unknown codes or programs looked up by a token or from
  a client address, and tokens that do not check out from a client address. Only failures count, so successful
  traffic is never slowed; once a key has used its budget, the requests that could guess further get 429 until
  the window ends. On by default (docs/api.md#rate-limits).

The counts live in one worker's memory: with ``--workers N`` a key may make up to N times the budget. That keeps
the checks free of I/O; a shared budget would need a shared store such as Redis. Memory is bounded: a window keeps
at most ``max_keys`` keys, and a key past that is counted from zero in the next window only.
"""

from __future__ import annotations

import math
import time

from promocodes.errors import RateLimited


class Window:
    """Counts per key in fixed windows of ``seconds``; everything is forgotten when a window ends."""

    def __init__(self, seconds: float, max_keys: int = 100_000) -> None:
        self.seconds = seconds
        self.max_keys = max_keys
        self._index = -1
        self._counts: dict[str, int] = {}

    def _roll(self) -> None:
        index = int(time.monotonic() // self.seconds)
        if index != self._index:
            self._index = index
            self._counts.clear()

    def count(self, key: str) -> int:
        self._roll()
        return self._counts.get(key, 0)

    def add(self, key: str) -> int:
        self._roll()
        count = self._counts.get(key, 0) + 1
        if count == 1 and len(self._counts) >= self.max_keys:
            return 0  # full: this key goes uncounted until the window ends (memory stays bounded)
        self._counts[key] = count
        return count

    def retry_after(self) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        return max(1, math.ceil((self._index + 1) * self.seconds - time.monotonic()))


class RateLimiter:
    """At most ``per_second`` requests for one token in each one-second window; 0 means unlimited."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._window = Window(1.0)

    def check(self, token: str) -> None:
        if not self.per_second:
            return
        if self._window.add(token) > self.per_second:
            raise RateLimited(
                f"Rate limit exceeded: at most {self.per_second} requests per second per token",
                retry_after=self._window.retry_after(),
            )


class FailureGuard:
    """At most ``limit`` failures per key in each window of ``seconds``; 0 turns the guard off.

    ``check`` before the work (429 when any of the keys has used its budget), ``failed`` after a failure.
    """

    def __init__(self, limit: int, seconds: float, what: str) -> None:
        self.limit = limit
        self.what = what
        self._window = Window(seconds)

    def check(self, *keys: str) -> None:
        if not self.limit:
            return
        if any(self._window.count(key) >= self.limit for key in keys):
            raise RateLimited(
                f"Too many {self.what}: at most {self.limit} per {self._window.seconds:g} s; retry later",
                retry_after=self._window.retry_after(),
            )

    def failed(self, *keys: str) -> None:
        if not self.limit:
            return
        for key in keys:
            self._window.add(key)
