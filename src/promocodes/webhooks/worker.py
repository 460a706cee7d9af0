"""The delivery worker (docs/api.md#webhooks): a background task of every server process, of which ONE at a time
delivers.

- **One deliverer.** Each process tries to take the lease row (``Store.take_lease``, one conditional upsert) before
  each round; the holder renews it every round, so it keeps it while it works, and a process that stopped loses it
  when it expires (``lease_seconds``, at least three delivery timeouts so that a round never outlives it). A clean
  shutdown releases it, and another process takes over at its next poll.
- **A round**: the due pending deliveries, oldest first, none waiting behind an earlier pending event of its code
  (``Store.due_deliveries``), at most ``concurrency`` of them, sent concurrently, each bounded by ``timeout`` as a
  whole (connecting, sending, the status line). A full round is followed by another at once; otherwise the worker
  sleeps ``poll`` seconds.
- **Outcome**: a 2xx is delivered; anything else is retried ``retry_base * 2**(attempts - 1)`` seconds later, and
  a delivery whose next attempt would fall later than :data:`RETRY_WINDOW` after its creation is marked failed.
  Each outcome is one conditional ``UPDATE`` on a row still pending, so a delivery sent twice (a lease lost
  mid-round: at least once) is counted once.

Nothing here runs inside an API request: a slow receiver holds up only this task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx2
from prometheus_client import Counter

from promocodes.background import running
from promocodes.domain.times import from_micros, utcnow
from promocodes.models import DueDelivery
from promocodes.store import Store
from promocodes.webhooks import SIGNATURE_HEADER, delivery_body, signature_header

logger = logging.getLogger("promocodes")

#: how long a delivery is retried, from its event on; then it is marked failed
RETRY_WINDOW = timedelta(hours=24)
#: deliveries sent at once by the deliverer (each bounded by the timeout)
CONCURRENCY = 8
#: the shortest lease; it is at least three delivery timeouts
MIN_LEASE_SECONDS = 30.0
USER_AGENT = "promocodes-webhooks"

DELIVERIES = Counter(
    "promocodes_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retried (failed, tried again later) or failed (given up)",
    ["outcome"],
)


def retry_delay(retry_base: float, attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: ``retry_base``, then doubling."""
    return timedelta(seconds=retry_base * 2 ** (attempts - 1))


@functools.cache
def _tls() -> ssl.SSLContext:
    """The TLS settings of every delivery (the system's CA certificates), made once per process: loading the
    certificates takes tens of milliseconds, which every start of the worker would otherwise pay."""
    return ssl.create_default_context()


class Deliverer:
    """Sends what the outbox holds, while it holds the lease."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float = 10.0,
        retry_base: float = 10.0,
        poll: float = 1.0,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.retry_base = retry_base
        self.poll = poll
        self.concurrency = concurrency
        self.lease_seconds = max(MIN_LEASE_SECONDS, 3 * timeout)
        # Unique per process and start: a restarted worker with the same pid must not inherit a lease it never took.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.holding = False

    async def round(self, client: httpx2.AsyncClient) -> int:
        """When deliveries are due: take or renew the lease and, holding it, send one round of them. Returns how many
        were sent.

        The look at the outbox comes first and is a read: an idle server (no webhook, or nothing owed) then costs
        the database one read per poll, not a write of the lease. Whoever holds the lease reads again under it, since
        the deliveries seen before may have been sent by the previous holder meanwhile."""
        if not await self.store.due_deliveries(utcnow(), 1):
            return 0
        self.holding = await self.store.take_lease(self.owner, utcnow(), self.lease_seconds)
        if not self.holding:
            return 0
        due = await self.store.due_deliveries(utcnow(), self.concurrency)
        if due:
            await asyncio.gather(*(self.deliver(client, item) for item in due))
        return len(due)

    async def deliver(self, client: httpx2.AsyncClient, due: DueDelivery) -> None:
        """One attempt, then its outcome written. Exceptions of the attempt are outcomes, never raised."""
        body = delivery_body(due)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(due.secret, body),
        }
        status: int | None = None
        error = ""
        try:
            async with asyncio.timeout(self.timeout):
                # Streamed and closed unread: the status is the answer; a receiver's body is never held.
                async with client.stream("POST", due.url, content=body, headers=headers) as response:
                    status = response.status_code
        except TimeoutError:
            error = f"No answer within {self.timeout:g} s"
        except httpx2.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:500] or type(failure).__name__
        if status is not None and 200 <= status < 300:
            await self.store.delivery_succeeded(due.id, status, utcnow())
            DELIVERIES.labels("delivered").inc()
            return
        if status is not None:
            error = f"HTTP {status}"
        now = utcnow()
        next_attempt = now + retry_delay(self.retry_base, due.attempts + 1)
        created = from_micros(due.created)
        assert created is not None
        give_up = next_attempt > created + RETRY_WINDOW
        await self.store.delivery_failed(due.id, status, error, None if give_up else next_attempt, now)
        DELIVERIES.labels("failed" if give_up else "retried").inc()
        logger.warning(
            "Webhook %d delivery %d of event %d to %s failed (attempt %d): %s; %s",
            due.webhook_id,
            due.id,
            due.event_id,
            due.url,
            due.attempts + 1,
            error,
            "given up" if give_up else f"retrying at {next_attempt.isoformat(timespec='seconds')}",
        )

    async def run(self) -> None:
        """Forever: rounds while they come back full, else a pause of ``poll`` seconds. A database failure is
        logged and tried again after the pause (the outbox keeps everything meanwhile)."""
        async with httpx2.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls()) as client:
            while True:
                try:
                    sent = await self.round(client)
                except Exception as failure:
                    logger.warning("The webhook worker failed a round: %s: %s", type(failure).__name__, failure)
                    sent = 0
                if sent < self.concurrency:
                    await asyncio.sleep(self.poll)

    async def release(self) -> None:
        if self.holding:
            with contextlib.suppress(Exception):
                await self.store.release_lease(self.owner)
            self.holding = False


@contextlib.asynccontextmanager
async def delivering(deliverer: Deliverer) -> AsyncIterator[Deliverer]:
    """While the app runs: the worker's loop as a task; at the end, stop it and release the lease (an attempt cut
    short stays pending and is sent again: at least once)."""
    try:
        async with running(deliverer.run):
            yield deliverer
    finally:
        await deliverer.release()
