"""Idempotent retries (docs/api.md#idempotent-retries): the operations of :class:`IdempotencyStore` on the
``idempotency_keys`` table outside the transaction of a change — the cheap look-up before the service runs, the
answer of a refusal that came from a read (nothing changed), and the purge of expired answers. The transaction
that writes an answer with its change, and the lock on the key, are in ``store.claims``."""

from __future__ import annotations

from promocodes.store.base import Connection, StoreBase, operation, read_operation
from promocodes.store.claims import Answer, Claim, StoredAnswer, find_answer, insert_answer, lock_key


class IdempotencyStore(StoreBase):
    """Answers kept under idempotency keys: looked up, written after a refusal, purged when expired."""

    @read_operation
    async def find_answer(self, conn: Connection, claim: Claim) -> StoredAnswer | None:
        """The live answer under the claim's key, if any. A cheap read before the service runs, so that most
        retries are answered at once; the look-up that decides is the one under the key's lock
        (``store.claims``), since another request may record an answer right after this read."""
        return await find_answer(conn, claim)

    @operation
    async def record_answer(self, conn: Connection, claim: Claim, answer: Answer) -> StoredAnswer | None:
        """Keep the answer of a refusal that changed nothing (it came from a read, or its operation rolled back):
        None when it was written; else the live answer another request wrote under the key first, which this
        request then answers with instead (``INSERT … ON CONFLICT``, an expired answer being replaced).

        Lock: the key's lock (:func:`~promocodes.store.claims.lock_key`) first, held to commit, as every writer of
        a key takes it: a request still executing under the key commits its change and answer before this insert
        is judged, so the insert then finds that answer instead of writing a second one beside the change."""
        async with conn.transaction():
            await lock_key(conn, claim)
            if await insert_answer(conn, claim, answer):
                return None
            return await find_answer(conn, claim)

    @operation
    async def purge_answers(self, conn: Connection, expired_before: int) -> None:
        """Delete the answers created at or before ``expired_before`` (microseconds): they count as absent
        already; this only frees their room. One statement over the ``created`` index."""
        await conn.fetchval("DELETE FROM idempotency_keys WHERE created <= $1 RETURNING 1", expired_before)
