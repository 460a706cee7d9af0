"""Reading request bodies with three bounds: size (413), time (408) and the bytes all requests hold at once (503).

A client that sends nothing, or sends slowly, or many clients sending large bodies together, must not be able to
hold the worker's memory or its event loop. docs/api.md#limits-on-hostile-input lists the settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import Request

from promocodes.errors import PayloadTooLarge, RequestTimeout, ServerBusy


class BodyBudget:
    """The bytes of request bodies one worker holds in memory at once.

    A request reserves what it reads (the declared ``Content-Length`` up front, or each chunk as it comes) and
    gives it all back when it is answered. When the budget is spent, a request waits up to ``wait`` seconds for
    room, then gets 503 with ``Retry-After``. A body larger than the whole budget may still go through alone, so a
    budget set below the body size limit cannot refuse every large request forever.
    """

    def __init__(self, capacity: int, wait: float) -> None:
        self.capacity = capacity
        self.wait = wait
        self.used = 0
        self._freed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._freed is None:  # made on first use, inside the event loop that serves the requests
            self._freed = asyncio.Condition()
        return self._freed

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Reservation]:
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            if reservation.size:
                self.used -= reservation.size
                reservation.size = 0
                freed = self._condition()
                async with freed:
                    freed.notify_all()

    async def _take(self, size: int, deadline: float) -> None:
        freed = self._condition()
        async with freed:

            def fits() -> bool:
                return self.used == 0 or self.used + size <= self.capacity

            try:
                await asyncio.wait_for(freed.wait_for(fits), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise ServerBusy("Too many request bodies are being received at once; retry later") from None
            self.used += size


class Reservation:
    """What one request holds of the budget."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0
        self._deadline = time.monotonic() + budget.wait

    async def grow(self, size: int) -> None:
        await self.budget._take(size, self._deadline)
        self.size += size


async def read_body(request: Request, limit: int, timeout: float, reservation: Reservation) -> bytes:
    """The whole body: 413 as soon as it is known to exceed ``limit`` (declared or while streaming), 408 when it
    has not fully arrived within ``timeout`` seconds (a trickling client is dropped), 503 when the worker holds
    too many bodies already."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes")
    if declared.isdigit():
        await reservation.grow(int(declared))
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes")
                if len(body) > reservation.size:
                    await reservation.grow(len(body) - reservation.size)
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {timeout:g} seconds") from None
    return bytes(body)
