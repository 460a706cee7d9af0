"""Promo codes (docs/api.md#promo-code-methods): the operations of :class:`CodeStore` — import, generate, get (the
code state), activate, update, attach (named or from the pool), detach, export — and the state-machine helpers
they share (``_activate``, ``_update_code``, ``_deactivate``, ``_detach``, ``_bind``, …), each change one
conditional statement whose ``RETURNING`` row says whether it happened.

Every change also records its event in the code's history (docs/api.md#history, ``store.events``), in the same
transaction and only after that ``RETURNING`` row said the change happened: each operation that changes a code takes
the ``actor`` the event names. Every operation that writes an event takes the program row (``share_row``, or the
import's program lock) before any other row: the event's foreign key on the program needs a key-share lock on it,
and taking it first keeps the order every writer uses — program, then code, then binding — so that a forced
``programs/delete`` (which locks the program, then deletes codes and bindings by cascade) can never deadlock with
a change that already holds a code or a binding and then needs the program.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

from promocodes.domain.codes import code_key
from promocodes.domain.templates import KeyPattern
from promocodes.domain.times import format_rfc3339, from_micros, to_micros
from promocodes.errors import ChangedMeanwhile, Conflict, NotFound
from promocodes.models import (
    Actor,
    CodeEventKind,
    CodeState,
    ExportedCode,
    Generation,
    ImportOutcome,
    Outcome,
    Program,
)
from promocodes.store.base import (
    BULK_SECONDS_PER_ROW,
    Connection,
    Row,
    StoreBase,
    _Rollback,
    bulk_operation,
    operation,
    read_operation,
)
from promocodes.store.claims import claim_pending
from promocodes.store.events import Tally, bump, forget, record, record_pool_low, set_details
from promocodes.store.redemptions import (
    JUDGED_COLUMNS,
    Redemption,
    RedemptionGroups,
    judge_activation,
    redeem_group,
)
from promocodes.store.rows import PROGRAM_COLUMNS, _binding, _flag, _program, _time

# A code's state (``CodeState``): the code, its latest binding and — for a named profile — that profile's binding.
# The columns and joins are shared by the look-up by key (``_CODE_STATE``) and get's one read of program and code
# together (``_PROGRAM_AND_CODE_STATE``); ``{profile}`` is the placeholder of the named profile's pk.
_STATE_COLUMNS = """
    c.id, c.code, c.program_id, c.created, c.expire_date, c.attached_count,
    (SELECT count(activated) FROM code_bindings WHERE code_id = c.id) AS activated_count,
    (SELECT max(activated) FROM code_bindings WHERE code_id = c.id) AS last_activated,
    l.profile_pk AS latest_profile_pk, lp.profile_id AS latest_profile_id,
    lp.database_id AS latest_database_id, l.attached AS latest_attached, l.activated AS latest_activated,
    o.profile_pk AS own_profile_pk, op.profile_id AS own_profile_id,
    op.database_id AS own_database_id, o.attached AS own_attached, o.activated AS own_activated
"""
_STATE_JOINS = """
    LEFT JOIN code_bindings l ON l.id = (
        SELECT id FROM code_bindings WHERE code_id = c.id ORDER BY attached DESC, id DESC LIMIT 1)
    LEFT JOIN profiles lp ON lp.id = l.profile_pk
    LEFT JOIN code_bindings o ON o.code_id = c.id AND o.profile_pk = CAST({profile} AS BIGINT)
    LEFT JOIN profiles op ON op.id = o.profile_pk
"""
_CODE_STATE = f"""
    SELECT {_STATE_COLUMNS} FROM codes c {_STATE_JOINS.format(profile="$3")}
    WHERE c.program_id = $1 AND c.code_key = $2
"""
# The program (its columns prefixed ``p_``) and the code, looked up by the key the program's own case rule gives:
# ``$3`` the code as written, ``$4`` its case-folded key (domain.codes.code_key). No code: its columns are NULL.
_PROGRAM_AND_CODE_STATE = f"""
    SELECT {", ".join(f"p.{column} AS p_{column}" for column in PROGRAM_COLUMNS)}, {_STATE_COLUMNS}
    FROM programs p
    LEFT JOIN codes c ON c.program_id = p.id AND c.code_key = CASE WHEN p.case_sensitive THEN $3 ELSE $4 END
    {_STATE_JOINS.format(profile="NULL")}
    WHERE p.id = $1 AND p.account_id = $2
"""


class CodeStore(StoreBase):
    """Promo codes: imported, generated, read, activated, updated, attached, detached, exported."""

    @bulk_operation
    async def import_codes(
        self,
        conn: Connection,
        program_id: int,
        rows: Sequence[tuple[str, str]],
        now: datetime,
        case_sensitive: bool | None = None,
        *,
        actor: Actor,
    ) -> ImportOutcome:
        """Insert ``(code, key)`` rows (keys already unique within the batch), in order, up to the program's limit.

        Lock: the first statement touches the program row (:func:`_program_for_insert`), which holds it until
        commit, so two imports into one program count against ``codes_limit`` one after the other and can never
        overshoot it together. Duplicates (keys the program holds) use no room. ``case_sensitive`` is the setting
        the keys were made under: checked on the locked row, so keys are never stored under a setting that changed
        since the service read the program.

        History: ONE ``created`` event for the whole call, written before the codes (they carry its id in
        ``created_event``, set by the same bulk insert) and given its count after them; removed again when the
        call created no code (docs/api.md#history).
        """
        async with conn.transaction():
            program = await _program_for_insert(conn, program_id, case_sensitive)
            limit = program["codes_limit"]
            room = None if limit is None else max(0, limit - program["code_count"])
            created = to_micros(now)
            event_id = await record(conn, CodeEventKind.CREATED, actor, created, program_id, None)
            inserted: list[str] = []
            considered = 0
            while considered < len(rows) and (room is None or room > 0):
                # Without a limit, one pass; with one, try as many rows as there is room for: duplicates among
                # them leave room for the next rows, so loop until the room or the rows run out.
                end = len(rows) if room is None else considered + room
                codes = [code for code, _ in rows[considered:end]]
                keys = [key for _, key in rows[considered:end]]
                skipped = await conn.insert_codes(program_id, codes, keys, created, event_id)
                added = [key for key in keys if key not in skipped] if skipped else keys
                inserted += added
                considered = min(end, len(rows))
                if room is not None:
                    room -= len(added)
            if inserted:
                await conn.fetchval(
                    "UPDATE programs SET code_count = code_count + $2 WHERE id = $1 RETURNING code_count",
                    program_id,
                    len(inserted),
                )
                await set_details(conn, event_id, {"source": "import", "count": len(inserted)})
                await bump(conn, program_id, created, Tally(created=len(inserted)))
            else:
                await forget(conn, event_id)
            return ImportOutcome(inserted=frozenset(inserted), considered=considered)

    #: codes drawn and inserted per statement by :meth:`generate_codes`: what it holds in memory at a time
    GENERATION_BATCH = 50_000
    #: rounds :meth:`generate_codes` may add to redraw collisions. Under the key-space guard a code collides with
    #: odds of at most 1 in 1,000, so even one redraw round is rare; running out means the template is (nearly)
    #: exhausted.
    GENERATION_REDRAWS = 32

    @bulk_operation
    async def generate_codes(
        self,
        conn: Connection,
        program_id: int,
        slots: Sequence[int],
        draw: Callable[[int], tuple[list[str], list[str]]],
        pattern: KeyPattern,
        most_matching: int,
        now: datetime,
        case_sensitive: bool,
        return_codes: bool = False,
        *,
        actor: Actor,
    ) -> Generation:
        """Make exactly ``len(slots)`` new codes in the program, or nothing (docs/api.md#generate).

        ``slots`` is ``range(count)``: one slot per code to make, which gives the operation its bulk time budget.
        ``draw(n)`` returns n drawn codes and their keys (they may repeat, or repeat codes the program holds).
        ``pattern`` says which keys the template can make; ``most_matching`` is the key-space bound: the codes
        asked for plus the held codes matching ``pattern`` may not exceed it. ``case_sensitive`` is the setting the
        keys are made under, as in :meth:`import_codes`.

        Lock: the program row, taken by the first statement (:func:`_program_for_insert`, as :meth:`import_codes`
        does) and held to commit. Every insert of codes into a program takes that lock first (import, attach
        creating a code, generate), so under it the program's codes cannot change: the guard's count of matching
        codes and the ``codes_limit`` check on the locked row's count stay true until the inserts commit, and two
        generations into one program run one after the other — they can neither pass the guard or the limit on the
        same count and together exceed it, nor insert the same code twice (the unique key backs that up).
        ``case_sensitive`` is judged on the locked row too.

        Under the lock: the guard (counting matching codes only when the program holds enough codes for the bound
        to be at stake: that count reads every code of the program); the limit, for the whole request; then
        batches of :attr:`GENERATION_BATCH` drawn codes, each inserted skipping keys already held, and the
        shortfall drawn again (at most :attr:`GENERATION_REDRAWS` extra rounds) until exactly the count is new.
        Memory holds one batch, plus the returned codes (read back in creation order at the end) when
        ``return_codes``. The answer gives the id range of the new codes (``after_id`` < id <= ``last_id``), by
        which :meth:`export_page` can read them back later.

        History: ONE ``created`` event for the whole call (``{"source": "generate", "count": N}``), written after
        the checks and before the codes, which carry its id in ``created_event`` (docs/api.md#history).

        A refusal writes nothing. Any failure — a driver error, the time running out, a template too full to draw
        from — leaves the transaction by an exception, so everything it inserted is rolled back.
        """
        count = len(slots)
        async with conn.transaction():
            program = await _program_for_insert(conn, program_id, case_sensitive)
            held = program["code_count"]
            if held + count > most_matching:
                operator, operand = conn.key_match(pattern)
                matching = await conn.fetchval(
                    f"SELECT count(*) FROM codes WHERE program_id = $1 AND length(code_key) = $2 "
                    f"AND code_key {operator} $3",
                    program_id,
                    pattern.length,
                    operand,
                )
                if matching + count > most_matching:
                    return Generation(Outcome.KEY_SPACE_FULL, wanted=matching + count, allowed=most_matching)
            limit = program["codes_limit"]
            if limit is not None and held + count > limit:
                return Generation(Outcome.LIMIT_REACHED, wanted=held + count, allowed=limit)
            created = to_micros(now)
            details = {"source": "generate", "count": count}
            event_id = await record(conn, CodeEventKind.CREATED, actor, created, program_id, None, details=details)
            last_id = "SELECT COALESCE(max(id), 0) FROM codes WHERE program_id = $1"  # an index seek
            after_id = await conn.fetchval(last_id, program_id)
            remaining = count
            rounds_left = -(-count // self.GENERATION_BATCH) + self.GENERATION_REDRAWS
            while remaining > 0:
                if rounds_left == 0:
                    raise Conflict("Could not draw enough new codes from the template; nothing was generated")
                rounds_left -= 1
                codes, keys = draw(min(remaining, self.GENERATION_BATCH))
                remaining -= await conn.insert_generated(program_id, codes, keys, created, event_id)
                del codes, keys  # before the next draw: one batch in memory at a time
            await conn.fetchval(
                "UPDATE programs SET code_count = code_count + $2 WHERE id = $1 RETURNING code_count", program_id, count
            )
            await bump(conn, program_id, created, Tally(created=count))
            # Ids grow with every insert, and no other transaction inserts into the program while the lock is
            # held, so the program's ids after `after_id` are exactly the new codes, in creation order.
            returned: list[str] = []
            if return_codes:
                rows = await conn.fetch(
                    "SELECT code FROM codes WHERE program_id = $1 AND id > $2 ORDER BY id", program_id, after_id
                )
                returned = [row["code"] for row in rows]
            return Generation(
                Outcome.DONE, codes=returned, after_id=after_id, last_id=await conn.fetchval(last_id, program_id)
            )

    @read_operation
    async def program_and_code_state(
        self, conn: Connection, account_id: int, program_id: int, code: str
    ) -> tuple[Program, CodeState | None] | None:
        """``get``'s one read (docs/api.md#get): the account's program — None when it has no such program — and the
        code as that program looks it up (exactly, or through case folding), None when it holds no such code. ONE
        statement: one round trip, and program and code read from one snapshot."""
        row = await conn.fetchrow(
            _PROGRAM_AND_CODE_STATE, program_id, account_id, code_key(code, True), code_key(code, False)
        )
        return None if row is None else (_program(row, "p_"), _state(row))

    @read_operation
    async def code_state(
        self, conn: Connection, program_id: int, key: str, profile_pk: int | None = None
    ) -> CodeState | None:
        return await _code_state(conn, program_id, key, profile_pk)

    #: the grouping of concurrent activations (``store.redemptions``), set by the PostgreSQL adapter; None: each
    #: activation is its own operation (SQLite's writer already commits concurrent operations as one group)
    _redemptions: RedemptionGroups | None = None

    async def activate(
        self,
        program_id: int,
        code: str,
        profile_pk: int | None,
        now: datetime,
        *,
        actor: Actor,
        account_id: int | None = None,
    ) -> Outcome:
        """Redeem a code (docs/api.md#activate), the whole request judged in the store: the program (NO_PROGRAM when
        ``account_id`` is given and does not hold it), its rule for multiple-usage codes (NEEDS_PROFILE without
        ``profile_pk``), the code looked up by the program's own case rule, the program's state and the code's.

        On its own (:meth:`_activate_alone`), or — on PostgreSQL, when other activations arrive at the same moment —
        in one transaction with them (``store.redemptions``), which gives it the same outcome. A request with an
        idempotency claim always runs on its own: its answer is written in its own transaction (``store.claims``).
        """
        at = to_micros(now)
        if self._redemptions is None or claim_pending():
            return await self._activate_alone(account_id, program_id, code, profile_pk, at, actor)
        return await self._redemptions.activate(account_id, program_id, code, profile_pk, at, actor)

    @operation
    async def _activate_alone(
        self,
        conn: Connection,
        account_id: int | None,
        program_id: int,
        code: str,
        profile_pk: int | None,
        at: int,
        actor: Actor,
    ) -> Outcome:
        """Redeem a code: the program judged, then ONE conditional ``UPDATE`` (attached, not activated, not expired,
        in an active program, and bound to ``profile_pk`` when one is named), and its ``activated`` event, in one
        transaction.

        Locks: the program row (``share_row``, see the module docstring), read with what the request needs of it;
        then the code row (``lock_row``, see :func:`_activate`: it keeps the code's ``activated_count`` — and so the
        program's ``activated`` counter — exact when several profiles activate one shared code at once), then the
        ``UPDATE`` row lock. Two concurrent activations of one code queue on the code row; the second then re-checks
        ``activated IS NULL`` against the committed row (PostgreSQL's READ COMMITTED re-evaluation; on SQLite write
        transactions are serial), so exactly one of them matches — and only that one writes the event, right after
        its ``UPDATE``. The read that explains a refusal changes nothing.
        """
        async with conn.transaction():
            program = await conn.fetchrow(
                f"SELECT {JUDGED_COLUMNS} FROM programs WHERE id = $1{conn.share_row}",
                program_id,
            )
            judged = judge_activation(program, account_id, code, profile_pk)
            if isinstance(judged, Outcome):
                return judged
            return await _activate(conn, program_id, judged, profile_pk, at, actor)

    def _group_redemptions(self) -> RedemptionGroups:
        """The PostgreSQL adapter's grouping of activations, over this store's operations."""

        async def alone(redemption: Redemption) -> Outcome:
            return await self._activate_alone(
                redemption.account_id,
                redemption.program_id,
                redemption.code,
                redemption.profile_pk,
                redemption.at,
                redemption.actor,
            )

        return RedemptionGroups(self._activate_group, alone)

    async def _activate_group(self, group: list[Redemption]) -> list[Outcome]:
        """One transaction for the group (``store.redemptions.redeem_group``). Each request the group's statement did
        not activate is then explained, in the same transaction, by the single path's read; a request whose key
        another request of the group already holds (``abc`` and ``ABC`` in a program that ignores case) runs after
        the statement, on the single path, in the same transaction — so it sees that activation."""

        async def work(conn: Connection) -> list[Outcome]:
            async with conn.transaction():
                judged, done = await redeem_group(conn, group)
                outcomes: list[Outcome] = []
                for i, (redemption, verdict) in enumerate(zip(group, judged, strict=True)):
                    program_id, profile_pk = redemption.program_id, redemption.profile_pk
                    if isinstance(verdict, Outcome):
                        outcomes.append(verdict)
                    elif i in done:
                        outcomes.append(Outcome.DONE)
                    elif verdict.repeated:
                        outcomes.append(
                            await _activate(conn, program_id, verdict.key, profile_pk, redemption.at, redemption.actor)
                        )
                    else:
                        outcomes.append(await _not_activated(conn, program_id, verdict.key, profile_pk))
                return outcomes

        return await self._run(work, extra_time=len(group) * BULK_SECONDS_PER_ROW)

    @operation
    async def update_code(
        self,
        conn: Connection,
        program_id: int,
        key: str,
        profile_pk: int | None,
        expire_date: datetime | None,
        set_expiry: bool,
        activated: bool | None,
        now: datetime,
        *,
        actor: Actor,
    ) -> Outcome:
        """Change the expiry and/or the activation, all or nothing (docs/api.md#update), each change with its
        event (``expiry_changed``, then ``activated`` or ``deactivated``): an update doing two things records two.

        The new expiry is written first, so the activation is judged against it; when the activation then fails,
        the transaction rolls back and the expiry, and its event, are undone.

        Locks: the program row (``share_row``, see the module docstring); then, for a new expiry, the code row
        (``lock_row``: ``FOR NO KEY UPDATE`` on PostgreSQL) is read with its current expiry and held to commit,
        so that of two concurrent expiry changes the second reads what the first wrote: each event's ``old`` is
        the expiry the change really replaced. Activation is the same conditional statement as :meth:`activate`.
        """
        at = to_micros(now)
        try:
            async with conn.transaction():
                await _share_program(conn, program_id)
                return await _update_code(
                    conn, program_id, key, profile_pk, expire_date, set_expiry, activated, at, actor
                )
        except _Rollback as rollback:
            return rollback.outcome

    @operation
    async def attach_code(
        self,
        conn: Connection,
        program_id: int,
        code: str,
        key: str,
        profile_pk: int,
        multiple_usage: bool,
        create: bool,
        now: datetime,
        case_sensitive: bool | None = None,
        *,
        actor: Actor,
    ) -> Outcome:
        """Bind the named code to a profile, creating it first when ``create`` and it is unknown (``case_sensitive``:
        as in :meth:`import_codes`).

        Locks: a personal code is claimed by ONE conditional ``UPDATE`` (``attached_count`` 0 → 1); of two
        concurrent claims the second re-checks the committed row, finds 1, and matches nothing. A multiple-usage
        code takes one binding row per profile, and the ``UNIQUE (code_id, profile_pk)`` constraint makes the
        second of two identical binds a no-op (``ON CONFLICT DO NOTHING``). Creating the code goes through
        :meth:`import_codes`' program-row lock, so the program limit holds. The program row is held with
        ``share_row`` to commit, so that a delete without ``force`` waits for this attach (see
        :meth:`ProgramStore.delete_program`).

        History: a code created here records ``created`` (``{"source": "attach"}``, naming the code itself), then
        the binding records ``attached``; an attach that changes nothing records nothing.
        """
        at = to_micros(now)
        async with conn.transaction():
            await _share_program(conn, program_id)
            if create:
                exists = await conn.fetchval(
                    "SELECT id FROM codes WHERE program_id = $1 AND code_key = $2", program_id, key
                )
                if exists is None:
                    outcome = await _import_one(conn, program_id, code, key, at, case_sensitive, actor)
                    if outcome is not Outcome.DONE:
                        return outcome
            if multiple_usage:
                code_id = await conn.fetchval(
                    "INSERT INTO code_bindings (code_id, profile_pk, attached) "
                    "SELECT id, $3, $4 FROM codes WHERE program_id = $1 AND code_key = $2 "
                    "  AND (expire_date IS NULL OR expire_date > $4) "
                    "ON CONFLICT (code_id, profile_pk) DO NOTHING RETURNING code_id",
                    program_id,
                    key,
                    profile_pk,
                    at,
                )
                if code_id is not None:
                    count = await conn.fetchval(
                        "UPDATE codes SET attached_count = attached_count + 1 WHERE id = $1 RETURNING attached_count",
                        code_id,
                    )
                    first = Tally(attached=1) if count == 1 else None
                    await record(conn, CodeEventKind.ATTACHED, actor, at, program_id, code_id, profile_pk, tally=first)
                    if count == 1:  # its first binding: the code left the free pool (docs/api.md#webhooks)
                        await record_pool_low(conn, program_id, at, actor)
                    return Outcome.DONE
            else:
                code_id = await conn.fetchval(
                    "UPDATE codes SET attached_count = 1 WHERE program_id = $1 AND code_key = $2 "
                    "AND attached_count = 0 AND (expire_date IS NULL OR expire_date > $3) RETURNING id",
                    program_id,
                    key,
                    at,
                )
                if code_id is not None:
                    await _bind(conn, program_id, code_id, profile_pk, at, actor)
                    return Outcome.DONE
            return _why_not_attached(await _code_state(conn, program_id, key, profile_pk), at)

    @operation
    async def attach_from_pool(
        self,
        conn: Connection,
        program_id: int,
        profile_pk: int,
        one_per_profile: bool,
        now: datetime,
        *,
        actor: Actor,
    ) -> str | None:
        """Bind the oldest free, unexpired code of the program to the profile; None when none is free.

        Locks:
        - the program row (``share_row``), as in :meth:`attach_code`;
        - the profile row (``lock_row``: ``FOR NO KEY UPDATE`` on PostgreSQL), held to commit, so that with
          ``one_per_profile`` two concurrent attaches for one profile run one after the other and the second
          sees the first's code instead of taking another;
        - the picked code: ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claiming ``UPDATE``. Concurrent
          attaches each lock a different free row instead of queueing on the same oldest one, and the outer
          ``attached_count = 0`` re-check means a row claimed meanwhile is never claimed twice. On SQLite the
          write transaction (``BEGIN IMMEDIATE``) is itself exclusive.
        The partial index ``codes_free`` makes the pick a seek to the first free row at any number of codes.
        The binding records ``attached``; handing back the code a profile already holds records nothing.
        """
        at = to_micros(now)
        async with conn.transaction():
            await _share_program(conn, program_id)
            await conn.fetchval(f"SELECT id FROM profiles WHERE id = $1{conn.lock_row}", profile_pk)
            if one_per_profile:
                held: str | None = await conn.fetchval(
                    "SELECT c.code FROM code_bindings b JOIN codes c ON c.id = b.code_id "
                    "WHERE b.profile_pk = $1 AND c.program_id = $2 ORDER BY b.attached, b.id LIMIT 1",
                    profile_pk,
                    program_id,
                )
                if held is not None:
                    return held
            row = await conn.fetchrow(
                "UPDATE codes SET attached_count = 1 WHERE id = ("
                "  SELECT id FROM codes WHERE program_id = $1 AND attached_count = 0"
                "    AND (expire_date IS NULL OR expire_date > $2)"
                f"  ORDER BY id LIMIT 1{conn.skip_locked}"
                ") AND attached_count = 0 RETURNING id, code",
                program_id,
                at,
            )
            if row is None:
                return None
            await _bind(conn, program_id, row["id"], profile_pk, at, actor)
            picked: str = row["code"]
            return picked

    @operation
    async def detach(
        self, conn: Connection, program_id: int, key: str, profile_pk: int, now: datetime, *, actor: Actor
    ) -> Outcome:
        """Unbind a code from the profile that alone holds it, unless it was activated.

        Locks: the program row (``share_row``, see the module docstring); the claim is ONE conditional ``UPDATE``
        (``attached_count`` 1 → 0), then the binding is deleted under its own conditions (this profile, not
        activated); if that matches nothing the whole transaction rolls back, so a refused detach leaves the count
        as it was. The ``detached`` event is written after the ``DELETE`` removed the binding.
        """
        try:
            async with conn.transaction():
                await _share_program(conn, program_id)
                return await _detach(conn, program_id, key, profile_pk, to_micros(now), actor)
        except _Rollback as rollback:
            return rollback.outcome

    @read_operation
    async def export_page(self, conn: Connection, program_id: int, after_id: int, limit: int) -> list[ExportedCode]:
        """One page of the program's codes in creation order, after ``after_id`` (keyset paging: no cursor is
        held between pages, so an export of millions of codes needs neither a long transaction nor memory)."""
        rows = await conn.fetch(
            "SELECT c.id, c.code, max(b.attached) AS attached, max(b.activated) AS activated "
            "FROM (SELECT id, code FROM codes WHERE program_id = $1 AND id > $2 ORDER BY id LIMIT $3) c "
            "LEFT JOIN code_bindings b ON b.code_id = c.id GROUP BY c.id, c.code ORDER BY c.id",
            program_id,
            after_id,
            limit,
        )
        return [_exported(row) for row in rows]

    @read_operation
    async def export_rows(
        self, conn: Connection, program_id: int, after_id: int, until_id: int, limit: int
    ) -> list[ExportRow]:
        """At most ``limit`` codes of the program with ``after_id < id <= until_id``, in creation order, as they
        are stored: ``(id, code, attached, activated)``, times in microseconds or None (:meth:`export_batches`)."""
        rows: list[ExportRow] = await conn.fetch(_EXPORT_PAGE, program_id, after_id, until_id, limit)
        return rows

    @read_operation
    async def code_id_range(self, conn: Connection, program_id: int) -> tuple[int, int] | None:
        """The program's lowest and highest code id (two index seeks), or None when it holds no code."""
        row = await conn.fetchrow("SELECT min(id), max(id) FROM codes WHERE program_id = $1", program_id)
        return None if row is None or row[0] is None else (row[0], row[1])

    #: codes per page of an export: what one page holds in memory
    EXPORT_PAGE = 10_000

    async def export_batches(self, program_id: int, page_size: int = EXPORT_PAGE) -> AsyncIterator[list[ExportRow]]:
        """Every code of the program that existed when the export began, in creation order, a page at a time.

        Each page is its own short read (no transaction or cursor is held while the caller writes a page out; the
        next page is read while the caller handles this one), and
        its query is bounded on BOTH sides of the id: ``after_id < id <= until_id``, with at most ``page_size``
        rows. A bare ``id > after_id ORDER BY id LIMIT n`` would be enough for a planner that knows the table, but
        right after a bulk import PostgreSQL's statistics still say the program is small: it then reads every
        remaining code of the program and sorts them for each page, an export quadratic in its size. Bounded, a
        page reads only its span, whatever the plan. The span adapts to how densely the program's codes lie among
        all the ids (other programs' codes interleave): it doubles while pages come back less than half full, and
        halves when one fills up, so a sparse program needs few more reads than a dense one.

        Snapshot: the highest id is read when the export begins, and codes created later are not listed; each page
        shows its codes as they are when that page is read (a code activated meanwhile shows its activation if its
        page is read after it). A code is never listed twice, and never skipped unless it was deleted.
        """
        bounds = await self.code_id_range(program_id)
        if bounds is None:
            return
        after_id, last_id = bounds[0] - 1, bounds[1]
        span = page_size
        reading: asyncio.Future[list[ExportRow]] | None = None
        try:
            while after_id < last_id:
                until_id = min(after_id + span, last_id)
                if reading is None:
                    reading = asyncio.ensure_future(self.export_rows(program_id, after_id, until_id, page_size))
                rows, reading = await reading, None
                if len(rows) == page_size:  # the span held more: go on after the last row, with a narrower span
                    after_id = rows[-1][0]
                    span = max(page_size, span // 2)
                else:
                    after_id = until_id
                    if len(rows) < page_size // 2:
                        span *= 2
                if after_id < last_id:
                    # Read ahead: the next page is read (by the database, or SQLite's reader thread) while the
                    # caller encodes and sends this one. At most two pages are in memory.
                    until_id = min(after_id + span, last_id)
                    reading = asyncio.ensure_future(self.export_rows(program_id, after_id, until_id, page_size))
                if rows:
                    yield rows
        finally:
            if reading is not None:  # the caller stopped early (a client gone): the read ahead is not wanted
                reading.cancel()
                if not reading.cancelled() and reading.done():
                    reading.exception()  # taken, not logged as never retrieved: the caller has its own outcome

    async def export_codes(self, program_id: int, page_size: int = 5000) -> AsyncIterator[ExportedCode]:
        """Every code of the program, page by page (:meth:`export_batches`); memory stays at one page whatever the
        program's size."""
        async for rows in self.export_batches(program_id, page_size):
            for row in rows:
                yield _exported(row)


#: one page of an export: the program's codes in an id range, each with its latest attach and activation. The
#: bindings are aggregated for the same id range only (the unique index on ``(code_id, profile_pk)`` bounds that
#: read too): aggregating the joined page instead costs a hash aggregate and a second sort of every row, most of them
#: codes never attached.
_EXPORT_PAGE = (
    "SELECT c.id, c.code, b.attached, b.activated FROM codes c LEFT JOIN ("
    "  SELECT code_id, max(attached) AS attached, max(activated) AS activated FROM code_bindings"
    "  WHERE code_id > $2 AND code_id <= $3 GROUP BY code_id"
    ") b ON b.code_id = c.id "
    "WHERE c.program_id = $1 AND c.id > $2 AND c.id <= $3 ORDER BY c.id LIMIT $4"
)
#: ``(id, code, attached, activated)``: a driver's row as it comes (``asyncpg.Record``, ``sqlite3.Row``), read by
#: position or unpacked, never copied
ExportRow = Row


def _exported(row: Row) -> ExportedCode:
    return ExportedCode(id=row[0], code=row[1], attached=from_micros(row[2]), activated=from_micros(row[3]))


async def _program_for_insert(conn: Connection, program_id: int, case_sensitive: bool | None) -> Row:
    """Lock the program row for an insert of codes (a no-op ``UPDATE``, held to commit: inserts into one program
    and a change of its ``case_sensitive`` run one after the other) and return its count and limit."""
    program = await conn.fetchrow(
        "UPDATE programs SET code_count = code_count WHERE id = $1 RETURNING code_count, codes_limit, case_sensitive",
        program_id,
    )
    if program is None:  # deleted since the service looked it up
        raise NotFound(f"Program {program_id} not found")
    if case_sensitive is not None and _flag(program["case_sensitive"]) != case_sensitive:
        raise ChangedMeanwhile(
            f"Program {program_id} changed its case sensitivity meanwhile; nothing was imported, retry"
        )
    return program


async def _lock_code(conn: Connection, program_id: int, key: str) -> int | None:
    """Hold the code row to commit (``lock_row``) before its bindings, in the order every writer takes them (program,
    code, binding: see the module docstring); the code's id, or None when the program holds no such code."""
    code_id: int | None = await conn.fetchval(
        f"SELECT id FROM codes WHERE program_id = $1 AND code_key = $2{conn.lock_row}", program_id, key
    )
    return code_id


async def _share_program(conn: Connection, program_id: int) -> None:
    """Take the program row first (``share_row``: ``FOR KEY SHARE`` on PostgreSQL, held to commit), for the reasons
    the module docstring gives; any number of code changes share it, only a delete of the program waits for them."""
    await conn.fetchval(f"SELECT id FROM programs WHERE id = $1{conn.share_row}", program_id)


async def _import_one(
    conn: Connection, program_id: int, code: str, key: str, at: int, case_sensitive: bool | None, actor: Actor
) -> Outcome:
    """Create one code for an attach, with its ``created`` event, under the program lock of an import."""
    program = await _program_for_insert(conn, program_id, case_sensitive)
    if program["codes_limit"] is not None and program["code_count"] >= program["codes_limit"]:
        return Outcome.LIMIT_REACHED
    code_id = await conn.fetchval(
        "INSERT INTO codes (program_id, code, code_key, created) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (program_id, code_key) DO NOTHING RETURNING id",
        program_id,
        code,
        key,
        at,
    )
    if code_id is not None:  # else created by a concurrent request meanwhile: theirs is the creation
        await conn.fetchval("UPDATE programs SET code_count = code_count + 1 WHERE id = $1 RETURNING id", program_id)
        details = {"source": "attach"}
        await record(
            conn, CodeEventKind.CREATED, actor, at, program_id, code_id, details=details, tally=Tally(created=1)
        )
    return Outcome.DONE


async def _bind(conn: Connection, program_id: int, code_id: int, profile_pk: int, at: int, actor: Actor) -> None:
    """Bind a code just claimed (``attached_count`` 0 → 1) to the profile, and record ``attached`` — then, as the
    free pool just shrank, ``pool_low`` when it crossed the program's threshold (``store.events.record_pool_low``)."""
    await conn.fetchval(
        "INSERT INTO code_bindings (code_id, profile_pk, attached) VALUES ($1, $2, $3) RETURNING id",
        code_id,
        profile_pk,
        at,
    )
    await record(conn, CodeEventKind.ATTACHED, actor, at, program_id, code_id, profile_pk, tally=Tally(attached=1))
    await record_pool_low(conn, program_id, at, actor)


async def _code_state(conn: Connection, program_id: int, key: str, profile_pk: int | None) -> CodeState | None:
    """The code with its latest binding and, when ``profile_pk`` is given, that profile's binding: ONE statement,
    so the parts are read from one snapshot without a transaction around them."""
    row = await conn.fetchrow(_CODE_STATE, program_id, key, profile_pk)
    return None if row is None else _state(row)


def _state(row: Row) -> CodeState | None:
    """The code's state from the columns of ``_STATE_COLUMNS``; None when they are NULL (no such code)."""
    if row["id"] is None:
        return None
    return CodeState(
        id=row["id"],
        code=row["code"],
        program_id=row["program_id"],
        created=_time(row["created"]),
        expire_date=from_micros(row["expire_date"]),
        attached_count=row["attached_count"],
        activated_count=int(row["activated_count"]),
        last_activated=from_micros(row["last_activated"]),
        latest=_binding(row, "latest"),
        own=_binding(row, "own"),
    )


async def _activate(
    conn: Connection, program_id: int, key: str, profile_pk: int | None, at: int, actor: Actor
) -> Outcome:
    """Activate the binding, and count the code as activated when it is its first activated binding.

    Lock: the code row first (:func:`_lock_code`), then the binding (the ``UPDATE``): the code's
    ``activated_count`` then moves under that lock, so of two profiles activating one multiple-usage code at once
    exactly one sees 0 → 1 and counts the code (docs/api.md#program-statistics)."""
    await _lock_code(conn, program_id, key)
    activated = await conn.fetchrow(
        """
        UPDATE code_bindings SET activated = $3
        WHERE id = (
            SELECT b.id FROM code_bindings b JOIN codes c ON c.id = b.code_id
            WHERE c.program_id = $1 AND c.code_key = $2 AND b.activated IS NULL
              AND (c.expire_date IS NULL OR c.expire_date > $3)
              AND (CAST($4 AS BIGINT) IS NULL OR b.profile_pk = $4)
              AND EXISTS (SELECT 1 FROM programs WHERE id = $1 AND active)
            ORDER BY b.id LIMIT 1)
        AND activated IS NULL
        RETURNING code_id, profile_pk
        """,
        program_id,
        key,
        at,
        profile_pk,
    )
    if activated is not None:
        code_id = activated["code_id"]
        count = await conn.fetchval(
            "UPDATE codes SET activated_count = activated_count + 1 WHERE id = $1 RETURNING activated_count", code_id
        )
        first = Tally(activated=1) if count == 1 else None
        await record(
            conn, CodeEventKind.ACTIVATED, actor, at, program_id, code_id, activated["profile_pk"], tally=first
        )
        return Outcome.DONE
    return await _not_activated(conn, program_id, key, profile_pk)


async def _not_activated(conn: Connection, program_id: int, key: str, profile_pk: int | None) -> Outcome:
    """Why the conditional ``UPDATE`` of an activation matched no row: a read, which changes nothing. The program's
    state is part of that ``UPDATE``'s condition, so a program paused after the service read it is judged as it
    stands in this transaction (docs/api.md#order-of-checks: the code is looked for first)."""
    state = await _code_state(conn, program_id, key, profile_pk)
    if state is None:
        return Outcome.NO_CODE
    if not await conn.fetchval("SELECT active FROM programs WHERE id = $1", program_id):
        return Outcome.PROGRAM_INACTIVE
    binding = state.own if profile_pk is not None else state.latest
    if binding is None:
        return Outcome.NOT_ATTACHED if state.attached_count == 0 else Outcome.ATTACHED_ELSEWHERE
    if binding.activated is not None:
        return Outcome.ALREADY_ACTIVATED
    return Outcome.EXPIRED


async def _update_code(
    conn: Connection,
    program_id: int,
    key: str,
    profile_pk: int | None,
    expire_date: datetime | None,
    set_expiry: bool,
    activated: bool | None,
    at: int,
    actor: Actor,
) -> Outcome:
    if set_expiry:
        outcome = await _set_expiry(conn, program_id, key, expire_date, at, actor)
        if outcome is Outcome.NO_CODE:
            return outcome
    if activated is True:
        outcome = await _activate(conn, program_id, key, profile_pk, at, actor)
        if outcome is not Outcome.DONE:
            raise _Rollback(outcome)  # undo the new expiry too: all or nothing
        return outcome
    if activated is False:
        outcome = await _deactivate(conn, program_id, key, profile_pk, at, actor)
        if outcome not in (Outcome.DONE, Outcome.UNCHANGED):
            raise _Rollback(outcome)  # a refused deactivation undoes the new expiry as well: all or nothing
        return outcome
    return Outcome.DONE


async def _set_expiry(
    conn: Connection, program_id: int, key: str, expire_date: datetime | None, at: int, actor: Actor
) -> Outcome:
    """Set the expiry (None clears it) and record ``expiry_changed`` with the old and new values, only when it
    really changes. The code row is read with ``lock_row`` and held to commit (see :meth:`CodeStore.update_code`),
    so the ``old`` recorded is the value this change replaced."""
    current = await conn.fetchrow(
        f"SELECT id, expire_date FROM codes WHERE program_id = $1 AND code_key = $2{conn.lock_row}", program_id, key
    )
    if current is None:
        return Outcome.NO_CODE
    new = None if expire_date is None else to_micros(expire_date)
    if current["expire_date"] == new:
        return Outcome.UNCHANGED
    await conn.fetchval("UPDATE codes SET expire_date = $2 WHERE id = $1 RETURNING id", current["id"], new)
    details = {
        "old": format_rfc3339(from_micros(current["expire_date"])) or None,
        "new": format_rfc3339(from_micros(new)) or None,
    }
    await record(conn, CodeEventKind.EXPIRY_CHANGED, actor, at, program_id, current["id"], details=details)
    return Outcome.DONE


async def _deactivate(
    conn: Connection, program_id: int, key: str, profile_pk: int | None, at: int, actor: Actor
) -> Outcome:
    """Clear the activation (a rollback of a redemption), recording ``deactivated`` for each binding cleared. A code
    that is not activated is left as it is, and records nothing. Lock: the code row first, as :func:`_activate`;
    the code stops counting as activated when its ``activated_count`` falls to 0."""
    code_id = await _lock_code(conn, program_id, key)
    cleared = await conn.fetch(
        "UPDATE code_bindings SET activated = NULL WHERE activated IS NOT NULL "
        "AND code_id = (SELECT id FROM codes WHERE program_id = $1 AND code_key = $2) "
        "AND (CAST($3 AS BIGINT) IS NULL OR profile_pk = $3) RETURNING code_id, profile_pk",
        program_id,
        key,
        profile_pk,
    )
    ordered = sorted(cleared, key=lambda row: row["profile_pk"])
    left = None
    if ordered:
        left = await conn.fetchval(
            "UPDATE codes SET activated_count = activated_count - $2 WHERE id = $1 RETURNING activated_count",
            code_id,
            len(ordered),
        )
    for index, row in enumerate(ordered):
        # The code stops counting as activated once, not once per binding: the last event carries it.
        tally = Tally(deactivated=1) if left == 0 and index == len(ordered) - 1 else None
        await record(
            conn, CodeEventKind.DEACTIVATED, actor, at, program_id, row["code_id"], row["profile_pk"], tally=tally
        )
    if cleared:
        return Outcome.DONE
    state = await _code_state(conn, program_id, key, profile_pk)
    if state is None:
        return Outcome.NO_CODE
    if profile_pk is not None and state.own is None:
        return Outcome.NOT_ATTACHED if state.attached_count == 0 else Outcome.ATTACHED_ELSEWHERE
    return Outcome.UNCHANGED


def _why_not_attached(state: CodeState | None, at: int) -> Outcome:
    if state is None:
        return Outcome.NO_CODE
    if state.own is not None:
        return Outcome.UNCHANGED
    if state.expire_date is not None and to_micros(state.expire_date) <= at:
        return Outcome.EXPIRED
    return Outcome.ATTACHED_ELSEWHERE


async def _detach(conn: Connection, program_id: int, key: str, profile_pk: int, at: int, actor: Actor) -> Outcome:
    code_id = await conn.fetchval(
        "UPDATE codes SET attached_count = 0 WHERE program_id = $1 AND code_key = $2 AND attached_count = 1 "
        "RETURNING id",
        program_id,
        key,
    )
    if code_id is None:
        return await _why_not_detached(conn, program_id, key, profile_pk)
    removed = await conn.fetchval(
        "DELETE FROM code_bindings WHERE code_id = $1 AND profile_pk = $2 AND activated IS NULL RETURNING id",
        code_id,
        profile_pk,
    )
    if removed is None:
        # The sole binding is someone else's, or this profile's but activated; the rollback puts the count back.
        own = await conn.fetchval(
            "SELECT 1 FROM code_bindings WHERE code_id = $1 AND profile_pk = $2", code_id, profile_pk
        )
        raise _Rollback(Outcome.ALREADY_ACTIVATED if own else Outcome.ATTACHED_ELSEWHERE)
    await record(conn, CodeEventKind.DETACHED, actor, at, program_id, code_id, profile_pk, tally=Tally(detached=1))
    return Outcome.DONE


async def _why_not_detached(conn: Connection, program_id: int, key: str, profile_pk: int) -> Outcome:
    state = await _code_state(conn, program_id, key, profile_pk)
    if state is None:
        return Outcome.NO_CODE
    if state.attached_count == 0:
        return Outcome.NOT_ATTACHED
    if state.attached_count > 1:
        return Outcome.SEVERAL_PROFILES
    if state.own is None:
        return Outcome.ATTACHED_ELSEWHERE
    return Outcome.ALREADY_ACTIVATED
