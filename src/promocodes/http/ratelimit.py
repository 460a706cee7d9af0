"""A per-token request budget (spec 8.1.3: HTTP 429), counted in fixed one-second windows inside one worker."""

from __future__ import annotations

import time

from promocodes.errors import RateLimited


class RateLimiter:
    """At most ``per_second`` requests for one token in each one-second window; 0 means unlimited.

    The count lives in the worker's memory: with ``--workers N`` a token may make up to N times the budget.
    That keeps the check free of I/O; a shared budget would need a shared store such as Redis.
    """

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._window = 0
        self._counts: dict[str, int] = {}

    def check(self, token: str) -> None:
        if not self.per_second:
            return
        window = int(time.monotonic())
        if window != self._window:
            self._window = window
            self._counts.clear()
        count = self._counts.get(token, 0) + 1
        self._counts[token] = count
        if count > self.per_second:
            raise RateLimited(f"Rate limit exceeded: at most {self.per_second} requests per second per token")
