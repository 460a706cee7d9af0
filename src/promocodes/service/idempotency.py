"""Idempotent retries (docs/api.md#idempotent-retries): the rules — what a valid key is, what makes a retry the
same request, which answers are kept — and the run of one request under its claim on the key.

The flow, for a writing method called with a key:

1. the http pipeline reads the key (:func:`idempotency_key`) and makes the claim (:meth:`IdempotentRetries.claim`);
2. :meth:`IdempotentRetries.run` looks the key up (a cheap read: a retry of a finished request is answered at once)
   and otherwise runs the service with the claim set (``store.claims.CLAIM``);
3. right before the store call that makes the change, the service hands the claim its answer mapping
   (:func:`final`); that store call locks the key, looks it up again, executes, and keeps the answer in the same
   transaction (``store.claims``);
4. a refusal (402, 404, 409) that came from a read, before any change, is kept afterwards
   (``Store.record_answer``).

The answers are kept in the store; the pipeline renders a :class:`~promocodes.store.claims.Replay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from promocodes.background import running
from promocodes.domain.times import to_micros, utcnow
from promocodes.errors import (
    SUCCESS_TEXT,
    BadRequest,
    ChangedMeanwhile,
    IdempotencyKeyReused,
    PromocodeError,
    StorageUnavailable,
)
from promocodes.models import Principal
from promocodes.schemas import Request, envelope_members
from promocodes.store import Store
from promocodes.store.claims import CLAIM, Answer, Claim

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")

HEADER = "Idempotency-Key"
FIELD = "idempotency_key"
#: 1 to 255 printable ASCII characters (space to tilde)
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
#: the errors of a request that reached its operation: the objects and their state. Everything refused before it
#: (400, 401, 403, 413, 429) and every failure (500, 503) is not kept, so that a retry executes.
KEPT_ERRORS = frozenset({402, 404, 409})
#: how often each worker deletes expired answers (they count as absent before that already)
PURGE_SECONDS = 3600.0
MICROS_PER_HOUR = 3600 * 1_000_000

logger = logging.getLogger("promocodes")


class NotFinal:
    """What an answer mapping returns for a store result that is not the request's answer yet: nothing changed,
    and the service goes on to another store call (attach: the pool was empty, a generated code collided)."""


NOT_FINAL = NotFinal()


def idempotency_key(header: str | None, field: object) -> str | None:
    """The request's key: the ``Idempotency-Key`` header, else the body field ``idempotency_key``; None when neither
    is given. 400 naming the one given when it is not 1 to 255 printable ASCII characters."""
    given: object
    if header is not None:
        given, where = header, f"Header `{HEADER}`"
    elif field is not None:
        given, where = field, f"Field `{FIELD}`"
    else:
        return None
    if not isinstance(given, str) or not _VALID_KEY.fullmatch(given):
        raise BadRequest(f"{where} must be 1 to 255 printable ASCII characters")
    return given


def fingerprint(path: str, request: Request) -> str:
    """What makes a retry the same request: the method and its parameters as the operation receives them (the
    typed request, so ``"5"`` and ``5`` are one value, and a JSON and an XML body saying the same are one
    request), keys sorted; the token, the answer's ``format`` and the key itself are not among them."""
    canonical = msgspec.json.encode(request, order="sorted")
    return hashlib.sha256(path.encode() + b"\n" + canonical).hexdigest()


def kept(error: PromocodeError) -> bool:
    """Whether a refusal is kept for retries: the errors of the objects and their state, sent in the envelope —
    except a change made meanwhile by a concurrent request (a retry is judged anew) and a key sent with other
    parameters (it is about the key, not an operation)."""
    return (
        error.code in KEPT_ERRORS
        and error.http_status == 200
        and not isinstance(error, ChangedMeanwhile | IdempotencyKeyReused)
    )


def success_answer(data: object) -> Answer:
    return Answer(0, SUCCESS_TEXT, msgspec.json.encode(envelope_members(data)).decode())


def refusal_answer(error: PromocodeError) -> Answer:
    return Answer(error.code, error.text, '{"data":null}')


def final(mapping: Callable[[R], A], *, in_thread: bool = False) -> Callable[[R], A]:
    """Give the request's claim (when it has one) the answer of the next store call that writes, and return
    ``mapping`` for the service to apply to that call's result itself.

    ``mapping`` is what the service does with the result: it returns the answer's ``data``, raises the error the
    service answers with, or returns :data:`NOT_FINAL` when the result is not the answer yet. It must be pure: it
    runs inside the store's transaction (to keep the answer with the change) and again in the service.
    ``in_thread``: the mapping is heavy (a big import's report), run it in a worker thread."""
    claim = CLAIM.get()
    if claim is not None:
        claim.render = functools.partial(_render, mapping)
        claim.render_in_thread = in_thread
    return mapping


def _render(mapping: Callable[[Any], object], result: object) -> Answer | None:
    try:
        data = mapping(result)
    except PromocodeError as error:
        return refusal_answer(error) if kept(error) else None
    return None if isinstance(data, NotFinal) else success_answer(data)


class IdempotentRetries:
    """Requests run under their key's claim, with answers kept ``hours`` (docs/api.md#idempotent-retries)."""

    def __init__(self, store: Store, hours: int) -> None:
        self.store = store
        self.hours = hours

    def _expired_before(self, now: int) -> int:
        return now - self.hours * MICROS_PER_HOUR

    def claim(self, principal: Principal, path: str, key: str, request: Request) -> Claim:
        """The claim of one request on its key, in the caller's account. Pure (a large import's parameters are
        hashed in a worker thread by the caller)."""
        now = to_micros(utcnow())
        return Claim(
            account_id=principal.account_id,
            key=key,
            fingerprint=fingerprint(path, request),
            created=now,
            expired_before=self._expired_before(now),
        )

    async def run(self, claim: Claim, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` (the service) under the claim, unless the key already holds an answer: then raise
        :class:`~promocodes.store.claims.Replay` with it (or 409 when it answered other parameters)."""
        stored = await self.store.find_answer(claim)
        if stored is not None:
            raise claim.settle(stored)
        token = CLAIM.set(claim)
        try:
            result = await call()
        except PromocodeError as error:
            if kept(error) and not claim.recorded:
                await self._keep(claim, error)
            raise
        finally:
            CLAIM.reset(token)
        if not claim.recorded:
            # A writing service path that never handed its claim an answer: a bug, and a retry would execute again.
            logger.error("A request with an idempotency key succeeded without keeping its answer")
        return result

    async def _keep(self, claim: Claim, error: PromocodeError) -> None:
        """Keep a refusal that changed nothing; when another request kept an answer under the key first, answer
        with that one instead (raises)."""
        claim.render = None  # a render never taken belongs to no store call: the record must run plain
        try:
            stored = await self.store.record_answer(claim, refusal_answer(error))
        except StorageUnavailable:
            return  # not kept: a retry executes again, which is safe, since this request changed nothing
        if stored is not None:
            raise claim.settle(stored)

    async def purge(self) -> None:
        """Delete the expired answers (they count as absent already)."""
        await self.store.purge_answers(self._expired_before(to_micros(utcnow())))


@contextlib.asynccontextmanager
async def purging(retries: IdempotentRetries, every: float = PURGE_SECONDS) -> AsyncIterator[None]:
    """While the app runs: purge expired answers every ``every`` seconds (first after one period, so that starting
    a worker costs nothing). A failed purge is logged and tried again next time."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await retries.purge()
            except Exception as error:  # the database may be away for a while; expired answers count as absent
                logger.warning("Purging expired idempotency keys failed: %s: %s", type(error).__name__, error)

    async with running(loop):
        yield
