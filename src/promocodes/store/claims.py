"""Idempotent retries in the store (docs/api.md#idempotent-retries): a request's claim on its key, and the one
transaction that writes the answer together with the change it describes.

The http pipeline sets a :class:`Claim` in :data:`CLAIM` for a writing request that carries an ``Idempotency-Key``.
Right before the store call that makes the change, the service gives the claim a ``render``: a pure function from
that call's result to the answer (the same mapping it then applies itself). The store's decorators
(``store.base``) run that one operation through :func:`claimed`: the key is locked and looked up, and the work runs
only when no answer holds it; the answer is inserted before the commit. So either the change and its answer are
committed together, or neither is.

Imports nothing of the store at run time: ``store.base`` imports this module. The operations that read and write
the table outside such a transaction (the cheap look-up, a refusal that came from a read, the purge) are in
``store.idempotency``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec

from promocodes.errors import IdempotencyKeyReused

if TYPE_CHECKING:
    from promocodes.store.base import Connection

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer as kept for retries: the envelope's ``error`` and ``error_text``, and its other members (``data``,
    and import's counters) as JSON text — enough to write the answer again, as JSON or as XML."""

    error: int
    error_text: str
    members: str


class StoredAnswer(NamedTuple):
    """A live answer found under a key: the fingerprint of the request that made it, and the answer."""

    fingerprint: str
    answer: Answer


class Replay(Exception):
    """The key holds this very request's answer: nothing was executed, and the answer goes out again. Raised through
    the service to the http pipeline, which renders it; not a ``PromocodeError``, since it is no failure."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("the answer of an earlier request with the same Idempotency-Key")
        self.answer = answer


#: the result of the store call that makes the change → the answer; None for a result that is not the request's
#: last word (nothing changed, and the service goes on to another store call)
Render = Callable[[Any], Answer | None]


@dataclass(slots=True)
class Claim:
    """A request's claim on its ``Idempotency-Key``, for the length of the request."""

    account_id: int
    key: str
    #: SHA-256 (hex) of the method and its parameters: a retry must match it
    fingerprint: str
    #: when the request claimed the key (microseconds): the ``created`` of the answer it writes
    created: int
    #: answers created at or before this moment (microseconds) have expired: they count as absent
    expired_before: int
    #: given by the service right before the store call that makes the change; taken by that call
    render: Render | None = None
    #: render in a worker thread: a big import's answer costs seconds of Python
    render_in_thread: bool = False
    #: the answer was written inside the transaction of the operation (which then committed, or raised)
    recorded: bool = False

    def settle(self, stored: StoredAnswer) -> Exception:
        """What an answer found under the key means for this request: made by the same request → replay it;
        by another (another method, other parameters) → 409, and nothing is executed."""
        if stored.fingerprint == self.fingerprint:
            return Replay(stored.answer)
        return IdempotencyKeyReused()

    @property
    def lock_id(self) -> int:
        """The 64-bit key :func:`lock_key` locks: a hash of the account and the key, in a namespace of its own."""
        name = msgspec.json.encode([self.account_id, "idempotency", self.key])
        return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


#: the claim of the request being served; None outside a writing request that carries a key
CLAIM: ContextVar[Claim | None] = ContextVar("idempotency_claim", default=None)

_FIND = (
    "SELECT fingerprint, error, error_text, answer FROM idempotency_keys "
    "WHERE account_id = $1 AND key = $2 AND created > $3"
)
# An expired answer is replaced; a live one is left as it is (no row returned).
_INSERT = """
    INSERT INTO idempotency_keys (account_id, key, fingerprint, error, error_text, answer, created)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (account_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, error = excluded.error,
        error_text = excluded.error_text, answer = excluded.answer, created = excluded.created
    WHERE idempotency_keys.created <= $8
    RETURNING created
"""


async def lock_key(conn: Connection, claim: Claim) -> None:
    """Lock the claim's key until the transaction ends; every writer of a key takes this lock first.

    Lock: ``conn.lock_key`` on :attr:`Claim.lock_id` — ``pg_advisory_xact_lock`` on PostgreSQL, held to commit.
    Two requests with one key therefore run one after the other: the second waits here until the first has
    committed its change and its answer; its look-up, a statement after the lock (a fresh READ COMMITTED
    snapshot), then finds that answer and replays it instead of executing again. It is always the first lock of
    its transaction, taken before any lock of the operation itself, so it adds no lock-order cycle (no deadlock).
    Different keys hash to different locks (a rare collision only makes two requests wait in turn). SQLite needs
    nothing: the operation runs inside the write transaction (``BEGIN IMMEDIATE``), which is already serial.
    """
    await conn.lock_key(claim.lock_id)


async def find_answer(conn: Connection, claim: Claim) -> StoredAnswer | None:
    """The live answer under the claim's key, if any."""
    row = await conn.fetchrow(_FIND, claim.account_id, claim.key, claim.expired_before)
    if row is None:
        return None
    return StoredAnswer(row["fingerprint"], Answer(row["error"], row["error_text"], row["answer"]))


async def insert_answer(conn: Connection, claim: Claim, answer: Answer) -> bool:
    """Write the answer under the claim's key, replacing an expired one; False when a live answer holds the key."""
    created = await conn.fetchval(
        _INSERT,
        claim.account_id,
        claim.key,
        claim.fingerprint,
        answer.error,
        answer.error_text,
        answer.members,
        claim.created,
        claim.expired_before,
    )
    return created is not None


def claim_pending() -> bool:
    """Whether the request's claim holds a render, which the next operation takes: that operation must then run in
    a transaction of its own (``store.redemptions`` leaves such a request out of its groups)."""
    claim = CLAIM.get()
    return claim is not None and claim.render is not None


def claimed(work: Callable[[Connection], Awaitable[T]]) -> Callable[[Connection], Awaitable[T]]:
    """An operation's work as the store's decorators run it: as it is, unless the request's claim holds a render,
    which this operation then takes (the next operation runs plain again)."""
    claim = CLAIM.get()
    if claim is None or claim.render is None:
        return work
    render, claim.render = claim.render, None
    return functools.partial(_run_claimed, claim, render, work)


async def _run_claimed(claim: Claim, render: Render, work: Callable[[Connection], Awaitable[T]], conn: Connection) -> T:
    """Lock the key, look it up, and run the work only when it holds no answer; write the work's answer before the
    commit. An answer found raises (:class:`Replay`, or 409 for another request's), and the transaction rolls back:
    nothing is executed. So is an answer that fails to be written: the change goes with it."""
    async with conn.transaction():
        await lock_key(conn, claim)
        stored = await find_answer(conn, claim)
        if stored is not None:
            raise claim.settle(stored)
        result = await work(conn)
        answer = await asyncio.to_thread(render, result) if claim.render_in_thread else render(result)
        if answer is not None:
            if not await insert_answer(conn, claim, answer):
                # Cannot happen while every writer of a key holds its lock; if it did, the change must not stay.
                stored = await find_answer(conn, claim)
                raise claim.settle(stored) if stored is not None else RuntimeError("An idempotency key was lost")
            claim.recorded = True
        return result
