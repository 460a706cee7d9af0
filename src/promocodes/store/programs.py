"""Programs (docs/api.md#program-settings) and their statistics (docs/api.md#program-statistics): the operations
of :class:`ProgramStore`, with the locks that keep a settings change, a delete and the imports and attaches in
flight consistent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Literal

from promocodes.domain.times import to_micros
from promocodes.models import PROGRAM_SETTINGS, Program, ProgramDay, ProgramHistory, ProgramStats
from promocodes.store.base import Connection, StoreBase, operation, read_operation
from promocodes.store.rows import _PROGRAM_COLUMNS, _program, _setting_value


class ProgramStore(StoreBase):
    """Programs: created, read, listed, changed under their rules, deleted, counted."""

    @operation
    async def create_program(
        self, conn: Connection, account_id: int, settings: Mapping[str, Any], now: datetime
    ) -> Program:
        names = [name for name in PROGRAM_SETTINGS if name in settings]
        columns = ", ".join(["account_id", "created", *names])
        placeholders = ", ".join(f"${index}" for index in range(1, len(names) + 3))
        values = [_setting_value(name, settings[name]) for name in names]
        async with conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO programs ({columns}) VALUES ({placeholders}) RETURNING {_PROGRAM_COLUMNS}",
                account_id,
                to_micros(now),
                *values,
            )
            return _program(row)

    @read_operation
    async def get_program(self, conn: Connection, account_id: int, program_id: int) -> Program | None:
        """The program, or None when it does not exist OR belongs to another account (the two look alike)."""
        row = await conn.fetchrow(
            f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE id = $1 AND account_id = $2", program_id, account_id
        )
        return None if row is None else _program(row)

    @read_operation
    async def program_account(self, conn: Connection, program_id: int) -> int | None:
        """The account owning a program, for the command line, which acts for whichever account that is."""
        account_id: int | None = await conn.fetchval("SELECT account_id FROM programs WHERE id = $1", program_id)
        return account_id

    @read_operation
    async def list_programs(self, conn: Connection, account_id: int) -> list[Program]:
        rows = await conn.fetch(
            f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE account_id = $1 ORDER BY id", account_id
        )
        return [_program(row) for row in rows]

    @operation
    async def update_program(
        self,
        conn: Connection,
        account_id: int,
        program_id: int,
        changes: Mapping[str, Any],
        judge: Callable[[Program], bool],
    ) -> Program | Literal[False] | None:
        """Apply the changes if ``judge`` accepts them; None when the account has no such program; False when the
        program must be empty for them and holds codes.

        ``judge`` is the service's rule, called with the program as it stands right before the write: it raises
        (nothing is written) to refuse the changes, and returns True when they need an empty program.

        Lock: the program row first (``lock_row``: ``FOR NO KEY UPDATE`` on PostgreSQL), held to commit. Two
        concurrent updates therefore run one after the other, and the second is judged on the row the first wrote,
        so two changes that are each valid alone cannot together break a rule (say one turns ``generate_on_attach``
        on while the other clears the template). The same lock waits for imports in flight, which hold the row from
        their first statement to commit (see :meth:`CodeStore.import_codes`); the emptiness check then reads a fresh
        snapshot, so an import either lands first (and a change that needs an empty program is refused) or runs
        after the update. Attaches share the row with ``share_row``, which this lock does not wait for: a settings
        change does not stall them.
        """
        async with conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE id = $1 AND account_id = $2{conn.lock_row}",
                program_id,
                account_id,
            )
            if row is None:
                return None
            if judge(_program(row)) and await conn.fetchval(
                "SELECT 1 FROM codes WHERE program_id = $1 LIMIT 1", program_id
            ):
                return False
            # Column names come only from the fixed PROGRAM_SETTINGS list, never from the request.
            names = [name for name in PROGRAM_SETTINGS if name in changes]
            assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(names, start=2))
            row = await conn.fetchrow(
                f"UPDATE programs SET {assignments} WHERE id = $1 RETURNING {_PROGRAM_COLUMNS}",
                program_id,
                *[_setting_value(name, changes[name]) for name in names],
            )
            return _program(row)

    @operation
    async def delete_program(self, conn: Connection, account_id: int, program_id: int, force: bool) -> bool | None:
        """Delete the program with its codes: True; False when refused; None when the account has no such program.

        Without ``force`` the ``DELETE`` carries the condition "holds no attached code". Lock: the program row
        first (``lock_for_delete``), which waits for the attaches in flight (each holds ``share_row`` on it); the
        ``DELETE`` then runs with a fresh snapshot, so an attach either lands first (and the delete is refused) or
        finds the program gone (and reports the code missing). Without that lock the ``DELETE``'s snapshot would
        predate the attach, and the cascade would erase a code the attach had just reported bound."""
        async with conn.transaction():
            await conn.fetchval(
                f"SELECT id FROM programs WHERE id = $1 AND account_id = $2{conn.lock_for_delete}",
                program_id,
                account_id,
            )
            deleted = await conn.fetchval(
                "DELETE FROM programs WHERE id = $1 AND account_id = $2 AND ($3 OR NOT EXISTS ("
                "  SELECT 1 FROM codes WHERE program_id = $1 AND attached_count > 0)) RETURNING id",
                program_id,
                account_id,
                force,
            )
            if deleted is not None:
                return True
            exists = await conn.fetchval(
                "SELECT 1 FROM programs WHERE id = $1 AND account_id = $2", program_id, account_id
            )
            return False if exists else None

    @read_operation
    async def program_stats(self, conn: Connection, program_id: int, now: datetime) -> ProgramStats:
        """The program's statistics (docs/api.md#program-statistics) from counters and one index, never from a
        scan of its codes: ONE statement, so every part is read from one snapshot.

        - ``total``: ``programs.code_count``, kept by every insert of codes under the program lock;
        - ``attached`` / ``activated``: the sums of the program's ``program_days`` rows (attached - detached,
          activated - deactivated), written by each change in its transaction (``store.events.bump``) — a few rows
          per day of the program's life;
        - ``expired``, and the expired among the unattached: they depend on ``now``, so they are counted, as an
          index-only range of ``codes_expiry`` (codes with an expiry only, carrying ``attached_count``);
        - ``free`` = total - attached - expired unattached codes."""
        row = await conn.fetchrow(
            """
            SELECT p.code_count AS total, d.attached, d.activated, e.expired, e.expired_free
            FROM programs p,
                 (SELECT COALESCE(sum(attached - detached), 0) AS attached,
                         COALESCE(sum(activated - deactivated), 0) AS activated
                  FROM program_days WHERE program_id = $1) AS d,
                 (SELECT count(*) AS expired,
                         COALESCE(sum(CASE WHEN attached_count = 0 THEN 1 ELSE 0 END), 0) AS expired_free
                  FROM codes WHERE program_id = $1 AND expire_date IS NOT NULL AND expire_date <= $2) AS e
            WHERE p.id = $1
            """,
            program_id,
            to_micros(now),
        )
        if row is None:
            return ProgramStats(total=0, free=0, attached=0, activated=0, expired=0)
        total, attached = int(row["total"]), int(row["attached"])
        return ProgramStats(
            total=total,
            free=total - attached - int(row["expired_free"]),
            attached=attached,
            activated=int(row["activated"]),
            expired=int(row["expired"]),
        )

    @read_operation
    async def program_history(self, conn: Connection, program_id: int, first: date, last: date) -> ProgramHistory:
        """The program's counters per UTC day from ``first`` to ``last`` (inclusive), and their sums before
        ``first`` — ONE statement over the ``program_days`` primary key (program, day, shard): at most a row per
        shard per day, whatever the number of codes."""
        first_day, last_day = _day_number(first), _day_number(last)
        rows = await conn.fetch(
            f"""
            SELECT CASE WHEN day < $2 THEN $2 - 1 ELSE day END AS day, {_SUMS}
            FROM program_days WHERE program_id = $1 AND day <= $3
            GROUP BY CASE WHEN day < $2 THEN $2 - 1 ELSE day END
            """,
            program_id,
            first_day,
            last_day,
        )
        found = {int(row["day"]): row for row in rows}

        def day(number: int) -> ProgramDay:
            row = found.get(number)
            when = _EPOCH + timedelta(days=number)
            if row is None:
                return ProgramDay(day=when)
            return ProgramDay(when, *(int(row[name]) for name in _COUNTERS))

        return ProgramHistory(before=day(first_day - 1), days=[day(n) for n in range(first_day, last_day + 1)])


_EPOCH = date(1970, 1, 1)
_COUNTERS = ("created", "attached", "detached", "activated", "deactivated")
_SUMS = ", ".join(f"sum({name}) AS {name}" for name in _COUNTERS)


def _day_number(day: date) -> int:
    """``program_days.day`` of a date: days since 1970-01-01 (UTC)."""
    return (day - _EPOCH).days
