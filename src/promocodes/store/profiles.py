"""Profile databases and profiles (docs/api.md#profile-matching): the operations of :class:`ProfileStore`, the
look-ups for each matching mode, what a profile is written with (:class:`ProfileData`) and the advisory lock on the
identifying key that keeps concurrent imports of one profile from creating two."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from promocodes.domain.fields import field_text
from promocodes.domain.times import from_micros, to_micros
from promocodes.models import Actor, Database, Match, MatchMode, Outcome, Profile
from promocodes.store.base import Connection, StoreBase, _Rollback, operation, read_operation
from promocodes.store.events import Tally, bump, record_released
from promocodes.store.rows import _profile, _time

# Profile lookups, one per matching mode. `email` and `email_profile` read the same field: this server keeps no
# separate subscriptions, so "profile email or email subscription" and "profile email only" coincide.
_PROFILE_LOOKUPS: Mapping[MatchMode, str] = {
    MatchMode.EMAIL: "SELECT * FROM profiles WHERE database_id = $1 AND email_key = $2",
    MatchMode.EMAIL_PROFILE: "SELECT * FROM profiles WHERE database_id = $1 AND email_key = $2",
    MatchMode.PROFILE_ID: "SELECT * FROM profiles WHERE database_id = $1 AND profile_id = $2",
    MatchMode.PHONE: """
        SELECT * FROM profiles WHERE id IN (
            SELECT profile_pk FROM profile_phones WHERE database_id = $1 AND digits = $2)""",
    MatchMode.CUSTOM: """
        SELECT * FROM profiles WHERE id IN (
            SELECT profile_pk FROM profile_fields WHERE database_id = $1 AND value = $2 AND name = $3)""",
}


# The field whose value a match compares, for the import lock: the email modes read one field and share a lock.
_LOOKUP_FIELDS: Mapping[MatchMode, str] = {
    MatchMode.EMAIL: "email",
    MatchMode.EMAIL_PROFILE: "email",
    MatchMode.PROFILE_ID: "profile_id",
    MatchMode.PHONE: "phone",
    MatchMode.CUSTOM: "field",
}


class ProfileData(NamedTuple):
    """What a profile is written with. ``phones`` are ``(as given, digits)``; custom fields are indexed by their
    text form (:func:`field_text`) so that ``custom`` matching finds ``42`` and ``"42"`` alike."""

    profile_id: str
    email: str | None
    phones: Sequence[tuple[str, str]]
    fields: Mapping[str, Any]


class HeldCode(NamedTuple):
    """A code a profile holds (one binding): its program, the code as stored, when this profile attached and
    activated it, and the code's expiry (None: it never expires)."""

    loyalty_id: int
    program_name: str
    code: str
    attached: datetime
    activated: datetime | None
    expire_date: datetime | None


def _profile_key(database_id: int, match: Match) -> int:
    """The 64-bit key :meth:`ProfileStore.upsert_profile` locks: a hash of the database, the field and the value."""
    name = [database_id, "profile", _LOOKUP_FIELDS[match.mode], match.field_name or "", match.value]
    digest = hashlib.blake2b(msgspec.json.encode(name), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _find_profiles(conn: Connection, database_id: int, match: Match, limit: int, lock: str = "") -> list[Profile]:
    args: list[Any] = [database_id, match.value]
    if match.mode is MatchMode.CUSTOM:
        args.append(match.field_name)
    rows = await conn.fetch(f"{_PROFILE_LOOKUPS[match.mode]} ORDER BY id LIMIT {int(limit)}{lock}", *args)
    return [_profile(row) for row in rows]


async def _write_profile(
    conn: Connection, database_id: int, existing_pk: int | None, data: ProfileData, at: int
) -> Profile:
    """Insert the profile (``existing_pk`` None) or replace its data, with its phone and field look-up rows."""
    phones_json = msgspec.json.encode([given for given, _ in data.phones]).decode()
    fields_json = msgspec.json.encode(data.fields).decode()
    email_key = None if data.email is None else data.email.strip().casefold()
    if existing_pk is None:
        row = await conn.fetchrow(
            "INSERT INTO profiles (database_id, profile_id, email, email_key, phones, fields, created, updated) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING *",
            database_id,
            data.profile_id,
            data.email,
            email_key,
            phones_json,
            fields_json,
            at,
        )
    else:
        row = await conn.fetchrow(
            "UPDATE profiles SET email = $2, email_key = $3, phones = $4, fields = $5, updated = $6 "
            "WHERE id = $1 RETURNING *",
            existing_pk,
            data.email,
            email_key,
            phones_json,
            fields_json,
            at,
        )
        await conn.fetchval("DELETE FROM profile_phones WHERE profile_pk = $1 RETURNING 1", existing_pk)
        await conn.fetchval("DELETE FROM profile_fields WHERE profile_pk = $1 RETURNING 1", existing_pk)
    pk = row["id"]
    for _, digits in data.phones:
        await conn.fetchval(
            "INSERT INTO profile_phones (profile_pk, database_id, digits) VALUES ($1, $2, $3) RETURNING 1",
            pk,
            database_id,
            digits,
        )
    for name, value in data.fields.items():
        await conn.fetchval(
            "INSERT INTO profile_fields (profile_pk, database_id, name, value) VALUES ($1, $2, $3, $4) RETURNING 1",
            pk,
            database_id,
            name,
            field_text(value),
        )
    return _profile(row)


class ProfileStore(StoreBase):
    """Profile databases and their profiles: created, looked up by a match, written under the key lock, deleted."""

    @operation
    async def create_database(self, conn: Connection, account_id: int, name: str, now: datetime) -> Database:
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO databases (account_id, name, created) VALUES ($1, $2, $3) RETURNING id, name, created",
                account_id,
                name,
                to_micros(now),
            )
            return Database(id=row["id"], name=row["name"], created=_time(row["created"]))

    @read_operation
    async def list_databases(self, conn: Connection, account_id: int) -> list[Database]:
        rows = await conn.fetch("SELECT id, name, created FROM databases WHERE account_id = $1 ORDER BY id", account_id)
        return [Database(id=row["id"], name=row["name"], created=_time(row["created"])) for row in rows]

    @read_operation
    async def get_database(self, conn: Connection, account_id: int, database_id: int) -> Database | None:
        row = await conn.fetchrow(
            "SELECT id, name, created FROM databases WHERE id = $1 AND account_id = $2", database_id, account_id
        )
        return None if row is None else Database(id=row["id"], name=row["name"], created=_time(row["created"]))

    @read_operation
    async def find_profiles(self, conn: Connection, database_id: int, match: Match, limit: int = 2) -> list[Profile]:
        """Profiles of the database that the match names; ``limit`` 2 is enough to tell "one" from "several"."""
        return await _find_profiles(conn, database_id, match, limit)

    @read_operation
    async def profile_codes(self, conn: Connection, profile_pk: int, limit: int) -> list[HeldCode]:
        """The codes the profile holds, the latest bound first, at most ``limit`` of them: its bindings through
        their index on the profile (``code_bindings_profile``), joined to each code and its program."""
        rows = await conn.fetch(
            "SELECT c.program_id, p.name, c.code, b.attached, b.activated, c.expire_date "
            "FROM code_bindings b JOIN codes c ON c.id = b.code_id JOIN programs p ON p.id = c.program_id "
            "WHERE b.profile_pk = $1 ORDER BY b.id DESC LIMIT $2",
            profile_pk,
            limit,
        )
        return [
            HeldCode(
                loyalty_id=row["program_id"],
                program_name=row["name"],
                code=row["code"],
                attached=_time(row["attached"]),
                activated=from_micros(row["activated"]),
                expire_date=from_micros(row["expire_date"]),
            )
            for row in rows
        ]

    @operation
    async def upsert_profile(
        self,
        conn: Connection,
        database_id: int,
        match: Match,
        build: Callable[[list[Profile]], ProfileData],
        now: datetime,
    ) -> Profile:
        """Create the profile the match names, or rewrite the one it finds, as ONE operation: find, decide, write.

        ``build`` is the service's rule, called inside the transaction with what the match finds (up to two
        profiles, enough to tell one from several); it raises to refuse (nothing is written) or returns the data
        to write: into the profile found, or into a new one when none was.

        Lock: first a transaction-level lock on the identifying key — the database, the field the match reads
        (``email`` and ``email_profile`` read the same one, so they share it) and the normalised value: an
        advisory lock (``pg_advisory_xact_lock``) on a hash of the three on PostgreSQL, held to commit. Concurrent
        imports of one key therefore run one after the other; the look-up that follows is a fresh READ COMMITTED
        snapshot, so the second import finds the profile the first created and updates it instead of creating a
        duplicate. Different keys hash to different locks and do not wait for each other (a rare collision of two
        hashes only makes two imports wait in turn). On SQLite the write transaction (``BEGIN IMMEDIATE``) is
        already exclusive, and the look-up runs inside it.

        The profiles found are locked too (``lock_row``), so that a concurrent delete (which takes ``lock_for_delete``
        on the row) either lands first, and the look-up no longer finds the profile, or waits for this update.
        """
        async with conn.transaction():
            await conn.lock_key(_profile_key(database_id, match))
            found = await _find_profiles(conn, database_id, match, 2, conn.lock_row)
            data = build(found)
            return await _write_profile(conn, database_id, found[0].pk if found else None, data, to_micros(now))

    @operation
    async def delete_profile(
        self, conn: Connection, profile_pk: int, force: bool, now: datetime, *, actor: Actor
    ) -> bool:
        """Delete a profile (True), or refuse while it holds codes (False); with ``force``, refuse only while it
        holds activated codes.

        Without ``force`` the ``DELETE`` carries "holds no code" as its condition. With it, the profile's
        unactivated bindings go first and each code's ``attached_count`` drops in the same transaction, so personal
        codes return to the pool consistently; each code released records ``detached`` with
        ``{"reason": "profile deleted"}`` (docs/api.md#history), undone with the rest when the delete is refused.

        Locks: the profile row first (``lock_for_delete``), which waits for attaches in flight (their binding's
        foreign key holds the row); the condition is then judged on a fresh snapshot, so such an attach makes the
        delete refuse instead of failing on the foreign key. With ``force``, the programs of the codes to release
        are then taken (``share_row``) before any code row, as every writer of events does (see ``store.codes``):
        no new binding can appear meanwhile (the profile row is held), and a forced ``programs/delete`` either
        runs first — its cascade removes those bindings — or waits for this transaction. Then the codes to release
        (``lock_row``) and their bindings (``lock_for_delete``): a ``detach`` or ``activate`` of one of them that is
        in flight is waited for, and the statements after the locks read its outcome — a binding it removed or
        activated is no longer among those released, so no code's count is decremented twice (which broke its
        CHECK) and no released code gets a second ``detached`` event. With the rows held, the set released,
        recorded and deleted is the same in every statement that follows. The program counters of the codes released
        (``store.events.bump``) come last."""
        try:
            async with conn.transaction():
                await conn.fetchval(f"SELECT id FROM profiles WHERE id = $1{conn.lock_for_delete}", profile_pk)
                if force:
                    await conn.fetch(
                        "SELECT id FROM programs WHERE id IN ("
                        "  SELECT c.program_id FROM code_bindings b JOIN codes c ON c.id = b.code_id"
                        f"  WHERE b.profile_pk = $1 AND b.activated IS NULL) ORDER BY id{conn.share_row}",
                        profile_pk,
                    )
                    # Then the codes, then the bindings, in that order (as every writer does). A detach or an
                    # activation in flight on one of them is waited for here; each later statement reads what it
                    # committed, so a code it released meanwhile is left out instead of released a second time.
                    await conn.fetch(
                        "SELECT id FROM codes WHERE id IN ("
                        "  SELECT code_id FROM code_bindings WHERE profile_pk = $1 AND activated IS NULL)"
                        f" ORDER BY id{conn.lock_row}",
                        profile_pk,
                    )
                    await conn.fetch(
                        "SELECT id FROM code_bindings WHERE profile_pk = $1 AND activated IS NULL"
                        f" ORDER BY id{conn.lock_for_delete}",
                        profile_pk,
                    )
                    await record_released(conn, profile_pk, to_micros(now), actor)
                    # Only bindings that were never activated go: a redeemed code is a record and never returns
                    # to the pool (docs/api.md#detach), so a profile holding one stays, force or not.
                    dropped = await conn.fetch(
                        "UPDATE codes SET attached_count = attached_count - 1 WHERE id IN ("
                        "  SELECT code_id FROM code_bindings WHERE profile_pk = $1 AND activated IS NULL)"
                        " RETURNING program_id, attached_count",
                        profile_pk,
                    )
                    # A code whose count fell to 0 is free again: the program's statistics count it released, one
                    # counter write per program, in program order (store.events.bump).
                    released = Counter(row["program_id"] for row in dropped if row["attached_count"] == 0)
                    at = to_micros(now)
                    for program_id in sorted(released):
                        await bump(conn, program_id, at, Tally(detached=released[program_id]))
                    await conn.fetch(
                        "DELETE FROM code_bindings WHERE profile_pk = $1 AND activated IS NULL RETURNING id", profile_pk
                    )
                deleted = await conn.fetchval(
                    "DELETE FROM profiles WHERE id = $1 AND NOT EXISTS ("
                    "  SELECT 1 FROM code_bindings WHERE profile_pk = $1) RETURNING id",
                    profile_pk,
                )
                if deleted is None:
                    raise _Rollback(Outcome.ALREADY_ACTIVATED)  # refused: the released bindings come back too
                return True
        except _Rollback:
            return False
