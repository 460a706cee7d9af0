"""Redemptions grouped across concurrent requests (docs/performance.md#grouped-redemptions), on PostgreSQL.

A checkout spike is many ``activate`` requests at once, each of a different code. Run one by one, each costs a
transaction of its own — ``BEGIN``, the program's share lock, the conditional ``UPDATE``, its history event and
webhook deliveries, ``COMMIT`` — and the database spends most of its time on the round trips and the commit, not on
the change. :class:`RedemptionGroups` (one per worker process, owned by the PostgreSQL store) lets the requests
that arrive while earlier ones are being written wait together, then writes them as ONE transaction
(:func:`redeem_group`): one share lock statement for their programs, one statement that activates them all and
writes their events and deliveries, one commit. Each request still gets its own outcome: the statement returns the
position of every request it activated, and a request it did not activate is explained by the same read the single
path uses (``store.codes._not_activated``).

How a group forms — group commit, no timer: a request arriving while fewer than ``parallel`` groups are being
written starts a group at once (so a lone request waits for nothing and takes the single path); one arriving while
they are all busy waits in the queue, and when a group finishes, everything that queued meanwhile (up to
``max_group``) becomes the next group. The busier the server, the bigger the groups; an idle server answers as
before.

Why it stays exact:

- the activation is the same conditional ``UPDATE`` as the single path, per code: ``activated IS NULL`` is in its
  ``WHERE``, and PostgreSQL re-checks it against the committed row when it had to wait for another transaction's
  row lock, so of two groups (or a group and a single request, in any worker) redeeming one code, exactly one
  matches — the other is told ``ALREADY_ACTIVATED``;
- the group judges each request's program from the row it holds under its share lock, exactly as the single path
  does (``judge_activation``): another account's program, a multiple-usage program without a profile, and the
  code's key by the program's case rule;
- a code named twice in one queue goes into two different groups (a group holds each program and code at most
  once); two spellings of one key in one group (``abc`` and ``ABC`` where case is ignored) leave the statement to
  the first, and the second runs after it on the single path, in the same transaction — so the statement never
  has to choose between two requests for one row;
- the events and deliveries are written by the same statement, from the rows the ``UPDATE`` returned, so they exist
  exactly for the activations that happened;
- never a shared failure: when a group's transaction fails as a whole (a deadlock between two groups locking their
  rows in different orders, a timeout), nothing of it was committed, and each of its requests then runs alone on the
  single path, which gives it its own answer;
- a request carrying an ``Idempotency-Key`` never joins a group: its answer must be written in its own transaction
  (``store.claims``), so it takes the single path.

Locks (in :func:`redeem_group`): the programs' rows, ``FOR KEY SHARE``, in id order (read with what the requests
need of them) — the order every writer takes
them (``store.codes``), and the lock that keeps a forced ``programs/delete`` waiting until the group commits; then
the codes' rows (``FOR NO KEY UPDATE``, in id order), as the single path takes its code before its binding
(``store.codes._activate``): the code's ``activated_count``, which says when a code becomes activated for the
program's statistics, moves under that lock, and a detach (code, then binding) meets the same order; then each
activated binding's row lock, taken by the ``UPDATE`` in the order of the group's requests, which are sorted by
program and key so that two groups meet their common rows in the same order; last, the program's counter rows
(``program_days``, this connection's shard, in program order: ``store.events.bump``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from promocodes.domain.codes import code_key
from promocodes.models import WEBHOOK_TYPES, Actor, CodeEventKind, Outcome
from promocodes.store.base import Connection, Row
from promocodes.store.events import MICROS_PER_DAY
from promocodes.store.rows import _flag

logger = logging.getLogger("promocodes")

#: the most requests one group holds; beyond it the statement's arrays would only make one commit wait longer
MAX_GROUP = 256
#: groups written at once per process: while one commits, the next is already on its way
PARALLEL_GROUPS = 2


@dataclass(slots=True)
class Redemption:
    """One ``activate`` request waiting in (or written by) a group: the code as the request wrote it (cleaned);
    the program's case rule makes its key once the group holds the program's row."""

    account_id: int | None
    program_id: int
    code: str
    profile_pk: int | None
    at: int
    actor: Actor
    answer: asyncio.Future[Outcome] = field(repr=False)


#: runs one request alone (the single path, its own transaction), for a lone request and for the fallback
RunAlone = Callable[[Redemption], Awaitable[Outcome]]
#: runs a whole group as one operation of the store (its own pooled connection and time bound)
RunGroup = Callable[[list[Redemption]], Awaitable[list[Outcome]]]


class RedemptionGroups:
    """The queue of one process's activations and the groups it forms (see the module docstring)."""

    def __init__(
        self, run_group: RunGroup, run_alone: RunAlone, max_group: int = MAX_GROUP, parallel: int = PARALLEL_GROUPS
    ) -> None:
        self._run_group = run_group
        self._run_alone = run_alone
        self._max_group = max_group
        self._parallel = parallel
        self._queue: deque[Redemption] = deque()
        self._busy = 0  # groups being written
        self._tasks: set[asyncio.Task[None]] = set()
        #: how many groups of more than one request were written (read by the tests and by nothing else)
        self.groups_written = 0

    async def activate(
        self, account_id: int | None, program_id: int, code: str, profile_pk: int | None, at: int, actor: Actor
    ) -> Outcome:
        """Redeem one code, alone or with the requests that arrive with it; its own outcome either way."""
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(Redemption(account_id, program_id, code, profile_pk, at, actor, answer))
        self._start()
        return await answer

    def _start(self) -> None:
        while self._queue and self._busy < self._parallel:
            group = self._take()
            if not group:
                return
            self._busy += 1
            # A context of its own: the group must not carry the context variables of the request that happened to
            # start it (its idempotency claim above all, store.claims), since it writes for every request in it.
            task = asyncio.get_running_loop().create_task(self._write(group), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Redemption]:
        """The next group: queued requests in arrival order, each program and code at most once (a repeat stays
        queued for a later group), callers that gave up left out."""
        group: list[Redemption] = []
        held: set[tuple[int, str]] = set()  # (program, code as written): the keys are checked in the group
        later: list[Redemption] = []
        while self._queue and len(group) < self._max_group:
            redemption = self._queue.popleft()
            if redemption.answer.done():  # its caller was cancelled while it waited: it never runs
                continue
            name = (redemption.program_id, redemption.code)
            if name in held:
                later.append(redemption)
                if len(later) >= self._max_group:
                    break  # a queue of one code asked many times: look no further, so a take stays O(group)
            else:
                held.add(name)
                group.append(redemption)
        self._queue.extendleft(reversed(later))
        return group

    async def _write(self, group: list[Redemption]) -> None:
        try:
            if len(group) == 1:
                outcomes: list[Outcome | BaseException] = list(await _alone(self._run_alone, group))
            else:
                try:
                    outcomes = list(await self._run_group(group))
                    self.groups_written += 1
                except Exception as error:  # nothing of the group was committed: each request on its own
                    logger.info("A group of %d activations failed (%s); running them one by one", len(group), error)
                    outcomes = list(await _alone(self._run_alone, group))
            for redemption, outcome in zip(group, outcomes, strict=True):
                if redemption.answer.done():
                    continue
                if isinstance(outcome, BaseException):
                    redemption.answer.set_exception(outcome)
                else:
                    redemption.answer.set_result(outcome)
        finally:
            for redemption in group:  # whatever happened above (even a cancelled task), nobody is left waiting
                if not redemption.answer.done():
                    redemption.answer.cancel()
            self._busy -= 1
            self._start()


async def _alone(run_alone: RunAlone, group: list[Redemption]) -> list[Outcome | BaseException]:
    """Each request of the group on the single path, side by side; each keeps its own answer or its own error."""
    return await asyncio.gather(*(run_alone(redemption) for redemption in group), return_exceptions=True)


# The activation of a whole group: the single path's conditional UPDATE, once per request (``picked`` finds each
# request's binding exactly as ``store.codes._activate`` does), then the events of the rows it changed, then their
# webhook deliveries (``store.webhooks.enqueue``'s statement, for many events). Data-modifying CTEs all run, once,
# on one snapshot; the foreign keys of the deliveries are checked at the end of the statement, after the events.
_REDEEM_GROUP = """
WITH wanted AS (
    SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])
        AS w(i, program_id, key, profile_pk, at, token_id, token_name)
), picked AS (
    SELECT w.*, (
        SELECT b.id FROM code_bindings b JOIN codes c ON c.id = b.code_id
        WHERE c.program_id = w.program_id AND c.code_key = w.key AND b.activated IS NULL
          AND (c.expire_date IS NULL OR c.expire_date > w.at)
          AND (w.profile_pk IS NULL OR b.profile_pk = w.profile_pk)
          AND EXISTS (SELECT 1 FROM programs g WHERE g.id = w.program_id AND g.active)
        ORDER BY b.id LIMIT 1) AS binding_id
    FROM wanted w
), activated AS (
    UPDATE code_bindings b SET activated = p.at
    FROM picked p
    WHERE b.id = p.binding_id AND b.activated IS NULL
    RETURNING p.i, p.program_id, b.code_id, b.profile_pk, p.at, p.token_id, p.token_name
), events AS (
    INSERT INTO code_events
        (program_id, code_id, time, event, token_id, token_name, details, profile_id, database_id)
    SELECT a.program_id, a.code_id, a.at, $8, a.token_id, a.token_name, NULL, pr.profile_id, pr.database_id
    FROM activated a JOIN profiles pr ON pr.id = a.profile_pk
    ORDER BY a.i
    RETURNING id, program_id, code_id, time
), deliveries AS (
    INSERT INTO webhook_deliveries (webhook_id, event_id, code_id, next_attempt, created)
    SELECT w.id, e.id, e.code_id, e.time, e.time
    FROM events e
    JOIN programs g ON g.id = e.program_id
    JOIN webhooks w ON w.account_id = g.account_id AND w.active
    JOIN webhook_events t ON t.webhook_id = w.id AND t.event_type = $9
    ORDER BY e.id, w.id
), counted AS (
    UPDATE codes c SET activated_count = c.activated_count + 1
    FROM activated a WHERE c.id = a.code_id
    RETURNING c.program_id, a.at, c.activated_count
), tallied AS (
    INSERT INTO program_days (program_id, day, shard, activated)
    SELECT program_id, at / $10, pg_backend_pid() % 64, count(*) FROM counted
    WHERE activated_count = 1
    GROUP BY program_id, at / $10 ORDER BY program_id, at / $10
    ON CONFLICT (program_id, day, shard) DO UPDATE SET activated = program_days.activated + excluded.activated
)
SELECT i FROM activated
"""


class Keyed(NamedTuple):
    """A request the group's statement may activate: its code's key, and whether another request of the group came
    first with the same key (it then runs after the statement, on the single path)."""

    key: str
    repeated: bool = False


#: what :func:`judge_activation` reads of a program's row, selected by the single path and by a group alike
JUDGED_COLUMNS = "id, account_id, case_sensitive, multiple_usage"


def judge_activation(program: Row | None, account_id: int | None, code: str, profile_pk: int | None) -> Outcome | str:
    """What the program's row (``id, account_id, case_sensitive, multiple_usage``, read under its share lock) says
    of an activation before any code is looked at, in the order of docs/api.md#order-of-checks: no such program
    for the account (NO_PROGRAM), a multiple-usage program without a profile (NEEDS_PROFILE) — else the code's key
    by the program's case rule (domain.codes.code_key). The program's ``active`` flag is part of the activating
    ``UPDATE``'s condition instead, since an inactive program still answers 404 for a code it does not hold."""
    if program is None or (account_id is not None and program["account_id"] != account_id):
        return Outcome.NO_PROGRAM
    if _flag(program["multiple_usage"]) and profile_pk is None:
        return Outcome.NEEDS_PROFILE
    return code_key(code, _flag(program["case_sensitive"]))


async def redeem_group(conn: Connection, group: list[Redemption]) -> tuple[list[Outcome | Keyed], set[int]]:
    """Judge and activate the group's requests in the caller's transaction: each request's verdict (an outcome
    already, or its key), and the positions (in ``group``) of the requests whose code was activated. Locks: see
    the module docstring."""
    rows = await conn.fetch(
        f"SELECT {JUDGED_COLUMNS} FROM programs WHERE id = ANY($1::bigint[]) ORDER BY id FOR KEY SHARE",
        sorted({redemption.program_id for redemption in group}),
    )
    programs = {row["id"]: row for row in rows}
    judged: list[Outcome | Keyed] = []
    held: set[tuple[int, str]] = set()
    for redemption in group:
        verdict = judge_activation(
            programs.get(redemption.program_id), redemption.account_id, redemption.code, redemption.profile_pk
        )
        if isinstance(verdict, Outcome):
            judged.append(verdict)
        else:
            name = (redemption.program_id, verdict)
            judged.append(Keyed(verdict, repeated=name in held))
            held.add(name)
    order = sorted(
        (i for i, verdict in enumerate(judged) if isinstance(verdict, Keyed) and not verdict.repeated),
        key=lambda i: (group[i].program_id, cast(Keyed, judged[i]).key),
    )
    if not order:
        return judged, set()
    keys = [cast(Keyed, judged[i]).key for i in order]
    # The codes first, in id order, as the single path locks its code (store.codes._activate): their
    # activated_count moves below, and two groups meet their common codes in one order.
    await conn.fetch(
        "SELECT c.id FROM codes c JOIN unnest($1::bigint[], $2::text[]) AS w(program_id, key) "
        "ON c.program_id = w.program_id AND c.code_key = w.key ORDER BY c.id FOR NO KEY UPDATE OF c",
        [group[i].program_id for i in order],
        keys,
    )
    rows = await conn.fetch(
        _REDEEM_GROUP,
        order,
        [group[i].program_id for i in order],
        keys,
        [group[i].profile_pk for i in order],
        [group[i].at for i in order],
        [group[i].actor.token_id for i in order],
        [group[i].actor.token_name for i in order],
        CodeEventKind.ACTIVATED.value,
        WEBHOOK_TYPES[CodeEventKind.ACTIVATED].value,
        MICROS_PER_DAY,
    )
    return judged, {row["i"] for row in rows}
