"""Work a server process does beside its requests (sampling metrics, purging expired answers, delivering
webhooks): a loop that lives exactly as long as the application, started and stopped by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(loop: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run ``loop()`` as a task while the context is open; on leaving, cancel it and wait until it has stopped, so
    that nothing of it outlives the store it uses."""
    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
