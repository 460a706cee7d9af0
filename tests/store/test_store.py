"""The shared storage suite: every operation of ``Store`` and each of its outcomes, on SQLite and on PostgreSQL.

Times are passed explicitly (``NOW``, ``PAST``, ``FUTURE``) so that expiry and ordering are deterministic.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promocodes.errors import BadRequest, Conflict, NotFound
from promocodes.models import (
    ImportOutcome,
    Match,
    MatchMode,
    Outcome,
    Principal,
    Profile,
    Program,
    ProgramStats,
    Role,
)
from promocodes.store import Store
from promocodes.store.profiles import ProfileData
from tests.helpers import ACTOR, save_profile

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=30)
LATER = NOW + timedelta(hours=1)


# --- helpers ---------------------------------------------------------------------------------------------------------


async def account(store: Store, name: str = "acme") -> int:
    return await store.ensure_account(name, NOW)


async def program(store: Store, account_id: int | None = None, **settings: Any) -> Program:
    if account_id is None:
        account_id = await account(store)
    settings.setdefault("name", "Spring")
    return await store.create_program(account_id, settings, NOW)


async def add_codes(store: Store, program_id: int, *codes: str, now: datetime = NOW) -> ImportOutcome:
    """Import codes of a case-sensitive program (the key is the code itself)."""
    return await store.import_codes(program_id, [(code, code) for code in codes], now, actor=ACTOR)


async def database(store: Store, account_id: int | None = None, name: str = "main") -> int:
    if account_id is None:
        account_id = await account(store)
    return (await store.create_database(account_id, name, NOW)).id


async def profile(
    store: Store,
    db_id: int,
    email: str | None = None,
    phones: tuple[str, ...] = (),
    fields: dict[str, Any] | None = None,
    now: datetime = NOW,
) -> Profile:
    digits = [(phone, "".join(ch for ch in phone if ch.isdigit())) for phone in phones]
    return await save_profile(store, db_id, secrets.token_hex(12), email, digits, fields or {}, now)


async def profiles(store: Store, db_id: int, count: int) -> list[int]:
    return [(await profile(store, db_id, f"user{index}@example.org")).pk for index in range(count)]


async def attach(
    store: Store,
    program_id: int,
    code: str,
    profile_pk: int,
    *,
    multiple: bool = False,
    create: bool = False,
    now: datetime = NOW,
) -> Outcome:
    return await store.attach_code(program_id, code, code, profile_pk, multiple, create, now, actor=ACTOR)


async def activate(store: Store, program_id: int, code: str, profile_pk: int | None = None) -> Outcome:
    return await store.activate(program_id, code, profile_pk, NOW, actor=ACTOR)


async def set_expiry(store: Store, program_id: int, code: str, when: datetime | None) -> Outcome:
    return await store.update_code(program_id, code, None, when, True, None, NOW, actor=ACTOR)


async def expire(store: Store, program_id: int, code: str) -> None:
    assert await set_expiry(store, program_id, code, PAST) is Outcome.DONE


async def stats(store: Store, program_id: int) -> ProgramStats:
    return await store.program_stats(program_id, NOW)


async def exported(store: Store, program_id: int, page_size: int = 5000) -> list[tuple[str, bool, bool]]:
    """``(code, attached?, activated?)`` for every code, in export order."""
    return [
        (item.code, item.attached is not None, item.activated is not None)
        async for item in store.export_codes(program_id, page_size=page_size)
    ]


async def world(store: Store, *codes: str, **settings: Any) -> tuple[int, int, int]:
    """An account with one program holding ``codes`` and one database: ``(account_id, program_id, db_id)``."""
    account_id = await account(store)
    created = await program(store, account_id, **settings)
    if codes:
        assert (await add_codes(store, created.id, *codes)).inserted == frozenset(codes)
    return account_id, created.id, await database(store, account_id)


# --- accounts and tokens ---------------------------------------------------------------------------------------------


async def test_ensure_account_is_idempotent(store: Store) -> None:
    first = await store.ensure_account("acme", NOW)
    assert await store.ensure_account("acme", LATER) == first
    other = await store.ensure_account("globex", NOW)
    assert other != first
    assert await store.find_account("acme") == first
    assert await store.find_account("globex") == other
    assert await store.find_account("nobody") is None


async def test_token_lifecycle(store: Store) -> None:
    account_id = await account(store)
    assert await store.count_tokens() == 0
    info = await store.create_token(account_id, "ci", Role.WRITE, "hash-1", NOW)
    assert (info.account_id, info.name, info.role, info.created, info.revoked) == (
        account_id,
        "ci",
        Role.WRITE,
        NOW,
        None,
    )
    assert await store.principal_for("hash-1") == Principal(
        account_id=account_id, role=Role.WRITE, token_id=info.id, token_name="ci"
    )
    assert await store.principal_for("unknown-hash") is None
    assert await store.count_tokens() == 1
    assert [token.id for token in await store.list_tokens(account_id)] == [info.id]


async def test_principal_for_ignores_revoked_tokens(store: Store) -> None:
    account_id = await account(store)
    kept = await store.create_token(account_id, "kept", Role.READ, "hash-kept", NOW)
    gone = await store.create_token(account_id, "gone", Role.ADMIN, "hash-gone", NOW)
    revoked = await store.revoke_token(account_id, gone.id, LATER)
    assert revoked is not None
    assert revoked.revoked == LATER
    assert await store.principal_for("hash-gone") is None
    principal = await store.principal_for("hash-kept")
    assert principal is not None
    assert principal.token_id == kept.id
    listed = {token.id: token.revoked for token in await store.list_tokens(account_id)}
    assert listed == {kept.id: None, gone.id: LATER}


async def test_revoke_token_is_idempotent(store: Store) -> None:
    account_id = await account(store)
    info = await store.create_token(account_id, "", Role.ADMIN, "hash", NOW)
    first = await store.revoke_token(account_id, info.id, LATER)
    again = await store.revoke_token(account_id, info.id, LATER + timedelta(days=1))
    assert first is not None
    assert again is not None
    assert again.revoked == first.revoked == LATER  # the first revocation time stays
    assert await store.principal_for("hash") is None


async def test_revoke_token_is_account_scoped(store: Store) -> None:
    owner = await account(store, "acme")
    stranger = await account(store, "globex")
    info = await store.create_token(owner, "", Role.ADMIN, "hash", NOW)
    assert await store.revoke_token(stranger, info.id, NOW) is None
    assert await store.principal_for("hash") is not None  # untouched
    assert await store.revoke_token(owner, info.id + 1000, NOW) is None
    assert await store.list_tokens(stranger) == []


# --- programs --------------------------------------------------------------------------------------------------------


async def test_create_program_defaults(store: Store) -> None:
    account_id = await account(store)
    created = await store.create_program(account_id, {"name": "Spring"}, NOW)
    assert created.account_id == account_id
    assert created.name == "Spring"
    assert (created.short_name, created.description) == ("", "")
    assert created.active is True
    assert created.multiple_usage is False
    assert created.case_sensitive is True
    assert created.create_on_attach is True
    assert created.generate_on_attach is False
    assert created.one_code_per_profile is False
    assert (created.codes_limit, created.template, created.valid_from, created.valid_to) == (None, None, None, None)
    assert created.created == NOW
    assert await store.get_program(account_id, created.id) == created


async def test_create_program_with_settings(store: Store) -> None:
    account_id = await account(store)
    settings = {
        "name": "Autumn",
        "short_name": "autumn_sale",
        "description": "Ten percent off",
        "active": False,
        "valid_from": PAST,
        "valid_to": FUTURE,
        "multiple_usage": True,
        "case_sensitive": False,
        "codes_limit": 10,
        "create_on_attach": False,
        "template": "AUT-####",
        "generate_on_attach": True,
        "one_code_per_profile": True,
    }
    created = await store.create_program(account_id, settings, NOW)
    for name, value in settings.items():
        assert getattr(created, name) == value, name
    assert await store.get_program(account_id, created.id) == created


async def test_get_program_of_another_account_is_none(store: Store) -> None:
    owner = await account(store, "acme")
    stranger = await account(store, "globex")
    created = await program(store, owner)
    assert await store.get_program(stranger, created.id) is None
    assert await store.get_program(owner, created.id + 1000) is None
    assert await store.program_account(created.id) == owner
    assert await store.program_account(created.id + 1000) is None


async def test_list_programs_is_ordered_and_account_scoped(store: Store) -> None:
    owner = await account(store, "acme")
    stranger = await account(store, "globex")
    first = await program(store, owner, name="A")
    foreign = await program(store, stranger, name="B")
    second = await program(store, owner, name="C")
    assert [p.id for p in await store.list_programs(owner)] == [first.id, second.id]
    assert [p.id for p in await store.list_programs(stranger)] == [foreign.id]
    assert await store.list_programs(await account(store, "empty")) == []


def accept(_: Program) -> bool:
    """A judge for ``update_program`` that accepts any change and needs no empty program."""
    return False


def needs_empty(_: Program) -> bool:
    return True


async def test_update_program_changes_only_given_fields(store: Store) -> None:
    owner = await account(store, "acme")
    created = await program(store, owner, codes_limit=5, description="old")
    updated = await store.update_program(
        owner, created.id, {"name": "Renamed", "codes_limit": None, "valid_to": FUTURE}, accept
    )
    assert updated is not None
    assert (updated.name, updated.codes_limit, updated.valid_to) == ("Renamed", None, FUTURE)
    assert updated.description == "old"
    assert updated.created == created.created
    assert await store.get_program(owner, created.id) == updated


async def test_update_program_of_another_account_is_none(store: Store) -> None:
    owner = await account(store, "acme")
    stranger = await account(store, "globex")
    created = await program(store, owner, name="Mine")
    assert await store.update_program(stranger, created.id, {"name": "Stolen"}, accept) is None
    assert await store.update_program(owner, created.id + 1000, {"name": "Nothing"}, accept) is None
    unchanged = await store.get_program(owner, created.id)
    assert unchanged is not None
    assert unchanged.name == "Mine"


async def test_update_program_judges_the_program_as_it_stands_and_writes_nothing_when_refused(store: Store) -> None:
    owner = await account(store)
    created = await program(store, owner, description="old")
    await store.update_program(owner, created.id, {"description": "current"}, accept)
    seen: list[Program] = []

    def refuse(current: Program) -> bool:
        seen.append(current)
        raise BadRequest("no")

    with pytest.raises(BadRequest):
        await store.update_program(owner, created.id, {"description": "new", "name": "X"}, refuse)
    assert [p.description for p in seen] == ["current"]  # the row as it stood, not as the caller last read it
    unchanged = await store.get_program(owner, created.id)
    assert unchanged is not None and (unchanged.name, unchanged.description) == ("Spring", "current")
    # A program that does not exist is None before any judging.
    assert await store.update_program(owner, created.id + 1000, {"name": "X"}, refuse) is None
    assert len(seen) == 1


async def test_delete_program_without_attached_codes(store: Store) -> None:
    owner, program_id, _ = await world(store, "A", "B")
    assert await store.delete_program(owner, program_id, False) is True
    assert await store.get_program(owner, program_id) is None
    assert await store.code_state(program_id, "A") is None
    assert await store.delete_program(owner, program_id, False) is None  # gone now


async def test_delete_program_refused_while_a_code_is_attached(store: Store) -> None:
    owner, program_id, db_id = await world(store, "A", "B")
    holder = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", holder.pk) is Outcome.DONE
    assert await store.delete_program(owner, program_id, False) is False
    assert await store.get_program(owner, program_id) is not None
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.attached_count == 1


async def test_update_only_if_empty_is_refused_while_the_program_holds_codes(store: Store) -> None:
    created = await program(store)
    changed = await store.update_program(created.account_id, created.id, {"case_sensitive": False}, needs_empty)
    assert changed is not None
    await add_codes(store, created.id, "A")
    refused = await store.update_program(created.account_id, created.id, {"case_sensitive": True}, needs_empty)
    assert refused is False
    unchanged = await store.get_program(created.account_id, created.id)
    assert unchanged is not None and unchanged.case_sensitive is False


async def test_delete_program_with_force(store: Store) -> None:
    owner, program_id, db_id = await world(store, "A", "B")
    holder = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", holder.pk) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    assert await store.delete_program(owner, program_id, True) is True
    assert await store.get_program(owner, program_id) is None
    assert await store.code_state(program_id, "A") is None
    # The profile survives and, its binding gone, can be deleted without force.
    assert await store.delete_profile(holder.pk, False, NOW, actor=ACTOR) is True


async def test_delete_program_of_another_account_is_none(store: Store) -> None:
    owner, program_id, _ = await world(store, "A")
    stranger = await account(store, "globex")
    assert await store.delete_program(stranger, program_id, True) is None
    assert await store.get_program(owner, program_id) is not None
    assert await store.code_state(program_id, "A") is not None


async def test_program_stats_of_an_empty_program(store: Store) -> None:
    _, program_id, _ = await world(store)
    assert await stats(store, program_id) == ProgramStats(total=0, free=0, attached=0, activated=0, expired=0)


async def test_program_stats_counts_overlap(store: Store) -> None:
    """Spec 8.6: free = unbound and unexpired; attached includes activated; expired whatever the other state."""
    _, program_id, db_id = await world(store, "FREE", "ATT", "ACT", "EXP-FREE", "EXP-ATT", "EXP-ACT")
    pks = await profiles(store, db_id, 4)
    for code, pk in zip(("ATT", "ACT", "EXP-ATT", "EXP-ACT"), pks, strict=True):
        assert await attach(store, program_id, code, pk) is Outcome.DONE
    assert await activate(store, program_id, "ACT") is Outcome.DONE
    assert await activate(store, program_id, "EXP-ACT") is Outcome.DONE
    for code in ("EXP-FREE", "EXP-ATT", "EXP-ACT"):
        await expire(store, program_id, code)
    assert await stats(store, program_id) == ProgramStats(total=6, free=1, attached=4, activated=2, expired=3)


async def test_program_stats_future_expiry_is_not_expired(store: Store) -> None:
    _, program_id, _ = await world(store, "A", "B")
    assert await set_expiry(store, program_id, "A", FUTURE) is Outcome.DONE
    assert await stats(store, program_id) == ProgramStats(total=2, free=2, attached=0, activated=0, expired=0)
    # Judged at the moment asked: after the expiry, A is expired and no longer free.
    later = await store.program_stats(program_id, FUTURE + timedelta(seconds=1))
    assert later == ProgramStats(total=2, free=1, attached=0, activated=0, expired=1)


async def test_program_stats_multiple_usage_counts_codes_not_bindings(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", "OTHER", multiple_usage=True)
    pks = await profiles(store, db_id, 3)
    for pk in pks:
        assert await attach(store, program_id, "UNI", pk, multiple=True) is Outcome.DONE
    assert await activate(store, program_id, "UNI", pks[0]) is Outcome.DONE
    assert await activate(store, program_id, "UNI", pks[1]) is Outcome.DONE
    assert await stats(store, program_id) == ProgramStats(total=2, free=1, attached=1, activated=1, expired=0)


async def test_program_stats_are_per_program(store: Store) -> None:
    account_id, program_id, _ = await world(store, "A", "B")
    other = await program(store, account_id, name="Other")
    await add_codes(store, other.id, "A")
    assert (await stats(store, program_id)).total == 2
    assert (await stats(store, other.id)).total == 1


# --- import ----------------------------------------------------------------------------------------------------------


async def test_import_inserts_and_reports_the_inserted_keys(store: Store) -> None:
    _, program_id, _ = await world(store)
    outcome = await add_codes(store, program_id, "A", "B", "C")
    assert outcome == ImportOutcome(inserted=frozenset({"A", "B", "C"}), considered=3)
    state = await store.code_state(program_id, "B")
    assert state is not None
    assert (state.code, state.program_id, state.created, state.expire_date) == ("B", program_id, NOW, None)
    assert (state.attached_count, state.activated_count, state.latest, state.own) == (0, 0, None, None)


async def test_import_skips_codes_the_program_holds(store: Store) -> None:
    _, program_id, _ = await world(store, "A", "B")
    outcome = await add_codes(store, program_id, "B", "C", "A")
    assert outcome == ImportOutcome(inserted=frozenset({"C"}), considered=3)
    assert (await stats(store, program_id)).total == 3
    state = await store.code_state(program_id, "B")
    assert state is not None
    assert state.created == NOW  # the original code, not replaced


async def test_import_of_a_batch_holding_some_held_codes_inserts_the_rest_in_input_order(store: Store) -> None:
    """The fast insert meets held keys midway (its second attempt then skips them): the outcome names exactly the
    new keys, and the new codes are stored in the order sent."""
    _, program_id, _ = await world(store, "K07", "K03", "K15")
    batch = [f"K{number:02d}" for number in (9, 7, 1, 15, 12, 3, 0, 4)]
    outcome = await add_codes(store, program_id, *batch)
    new = [code for code in batch if code not in {"K07", "K03", "K15"}]
    assert outcome == ImportOutcome(inserted=frozenset(new), considered=len(batch))
    assert [code for code, _, _ in await exported(store, program_id)] == ["K07", "K03", "K15", *new]
    assert (await stats(store, program_id)).total == 3 + len(new)


async def test_import_of_new_codes_keeps_the_order_sent(store: Store) -> None:
    _, program_id, _ = await world(store)
    batch = [f"C{(number * 7919) % 1000:03d}" for number in range(300)]  # distinct, far from sorted
    assert (await add_codes(store, program_id, *batch)).inserted == frozenset(batch)
    assert [code for code, _, _ in await exported(store, program_id, page_size=64)] == batch


async def test_import_compares_by_key(store: Store) -> None:
    _, program_id, _ = await world(store, case_sensitive=False)
    assert (await store.import_codes(program_id, [("Spring", "spring")], NOW, actor=ACTOR)).inserted == {"spring"}
    outcome = await store.import_codes(program_id, [("SPRING", "spring"), ("Summer", "summer")], NOW, actor=ACTOR)
    assert outcome.inserted == {"summer"}
    state = await store.code_state(program_id, "spring")
    assert state is not None
    assert state.code == "Spring"  # the first spelling is kept


async def test_same_code_in_two_programs(store: Store) -> None:
    account_id, program_id, _ = await world(store, "A")
    other = await program(store, account_id, name="Other")
    assert (await add_codes(store, other.id, "A")).inserted == {"A"}
    first, second = await store.code_state(program_id, "A"), await store.code_state(other.id, "A")
    assert first is not None
    assert second is not None
    assert first.id != second.id


async def test_import_stops_at_the_codes_limit(store: Store) -> None:
    _, program_id, _ = await world(store, codes_limit=3)
    outcome = await add_codes(store, program_id, "A", "B", "C", "D", "E")
    assert outcome == ImportOutcome(inserted=frozenset({"A", "B", "C"}), considered=3)
    assert (await stats(store, program_id)).total == 3
    assert await store.code_state(program_id, "D") is None
    full = await add_codes(store, program_id, "F")
    assert full == ImportOutcome(inserted=frozenset(), considered=0)
    assert (await stats(store, program_id)).total == 3


async def test_import_limit_counts_across_imports(store: Store) -> None:
    _, program_id, _ = await world(store, codes_limit=4)
    assert (await add_codes(store, program_id, "A", "B")).considered == 2
    outcome = await add_codes(store, program_id, "C", "D", "E", "F")
    assert outcome == ImportOutcome(inserted=frozenset({"C", "D"}), considered=2)
    assert (await stats(store, program_id)).total == 4


async def test_import_duplicates_use_no_room(store: Store) -> None:
    _, program_id, _ = await world(store, codes_limit=3)
    await add_codes(store, program_id, "A")
    outcome = await add_codes(store, program_id, "A", "B", "X", "C", "D")
    # Room for 2: "A" is a duplicate and takes none, so "B" and "X" fill it; "C" and "D" are beyond the limit.
    assert outcome == ImportOutcome(inserted=frozenset({"B", "X"}), considered=3)
    assert [code for code, _, _ in await exported(store, program_id)] == ["A", "B", "X"]


async def test_import_all_duplicates_at_the_limit(store: Store) -> None:
    _, program_id, _ = await world(store, codes_limit=2)
    await add_codes(store, program_id, "A", "B")
    outcome = await add_codes(store, program_id, "A", "B")
    assert outcome.inserted == frozenset()
    assert (await stats(store, program_id)).total == 2


async def test_import_limit_raised_later(store: Store) -> None:
    account_id, program_id, _ = await world(store, codes_limit=1)
    await add_codes(store, program_id, "A", "B")
    assert await store.update_program(account_id, program_id, {"codes_limit": 3}, accept) is not None
    outcome = await add_codes(store, program_id, "B", "C", "D")
    assert outcome == ImportOutcome(inserted=frozenset({"B", "C"}), considered=2)


# --- code_state ------------------------------------------------------------------------------------------------------


async def test_code_state_unknown_or_in_another_program(store: Store) -> None:
    account_id, program_id, _ = await world(store, "A")
    other = await program(store, account_id, name="Other")
    assert await store.code_state(program_id, "NOPE") is None
    assert await store.code_state(other.id, "A") is None


async def test_code_state_reports_the_binding(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    bob = await profile(store, db_id, "bob@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    state = await store.code_state(program_id, "A", ann.pk)
    assert state is not None
    assert state.latest is not None
    assert (state.latest.profile_pk, state.latest.profile_id, state.latest.database_id) == (
        ann.pk,
        ann.profile_id,
        db_id,
    )
    assert (state.latest.attached, state.latest.activated) == (NOW, None)
    assert state.own == state.latest
    assert state.attached_count == 1
    other_view = await store.code_state(program_id, "A", bob.pk)
    assert other_view is not None
    assert other_view.own is None
    assert other_view.latest == state.latest
    anonymous = await store.code_state(program_id, "A")
    assert anonymous is not None
    assert anonymous.own is None


async def test_code_state_of_a_universal_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    first, second = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "UNI", first, multiple=True, now=NOW) is Outcome.DONE
    assert await attach(store, program_id, "UNI", second, multiple=True, now=LATER) is Outcome.DONE
    assert await store.activate(program_id, "UNI", first, LATER, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "UNI", first)
    assert state is not None
    assert (state.attached_count, state.activated_count, state.last_activated) == (2, 1, LATER)
    assert state.latest is not None
    assert state.latest.profile_pk == second  # the most recent binding
    assert state.own is not None
    assert (state.own.profile_pk, state.own.activated) == (first, LATER)


# --- activate --------------------------------------------------------------------------------------------------------


async def test_activate_an_attached_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await store.activate(program_id, "A", None, LATER, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.latest is not None
    assert (state.latest.activated, state.activated_count, state.last_activated) == (LATER, 1, LATER)
    assert state.attached_count == 1


async def test_activate_with_the_bound_profile(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A", ann.pk) is Outcome.DONE


async def test_activate_unknown_code(store: Store) -> None:
    _, program_id, _ = await world(store, "A")
    assert await activate(store, program_id, "NOPE") is Outcome.NO_CODE


async def test_activate_a_free_code_is_not_attached(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await activate(store, program_id, "A") is Outcome.NOT_ATTACHED
    assert await activate(store, program_id, "A", ann.pk) is Outcome.NOT_ATTACHED
    assert (await stats(store, program_id)).activated == 0


async def test_activate_twice_is_already_activated(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await store.activate(program_id, "A", None, NOW, actor=ACTOR) is Outcome.DONE
    assert await store.activate(program_id, "A", None, LATER, actor=ACTOR) is Outcome.ALREADY_ACTIVATED
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.last_activated == NOW  # the second call changed nothing


async def test_activate_an_expired_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    await expire(store, program_id, "A")
    assert await activate(store, program_id, "A") is Outcome.EXPIRED
    assert await activate(store, program_id, "A", ann.pk) is Outcome.EXPIRED
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.activated_count == 0


async def test_activate_expires_at_the_exact_moment(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await set_expiry(store, program_id, "A", LATER) is Outcome.DONE
    assert await store.activate(program_id, "A", None, LATER, actor=ACTOR) is Outcome.EXPIRED
    assert await store.activate(program_id, "A", None, LATER - timedelta(microseconds=1), actor=ACTOR) is Outcome.DONE


async def test_activate_naming_another_profile(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    bob = await profile(store, db_id, "bob@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A", bob.pk) is Outcome.ATTACHED_ELSEWHERE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.activated_count == 0
    assert await activate(store, program_id, "A", ann.pk) is Outcome.DONE


async def test_activate_a_universal_code_per_binding(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    first, second, stranger = await profiles(store, db_id, 3)
    assert await attach(store, program_id, "UNI", first, multiple=True) is Outcome.DONE
    assert await attach(store, program_id, "UNI", second, multiple=True) is Outcome.DONE
    assert await activate(store, program_id, "UNI", first) is Outcome.DONE
    assert await activate(store, program_id, "UNI", first) is Outcome.ALREADY_ACTIVATED
    assert await activate(store, program_id, "UNI", stranger) is Outcome.ATTACHED_ELSEWHERE
    assert await activate(store, program_id, "UNI", second) is Outcome.DONE
    state = await store.code_state(program_id, "UNI")
    assert state is not None
    assert state.activated_count == 2


# --- update_code -----------------------------------------------------------------------------------------------------


async def test_update_sets_and_clears_the_expiry(store: Store) -> None:
    _, program_id, _ = await world(store, "A")
    assert await set_expiry(store, program_id, "A", FUTURE) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.expire_date == FUTURE
    assert await set_expiry(store, program_id, "A", None) is Outcome.DONE
    cleared = await store.code_state(program_id, "A")
    assert cleared is not None
    assert cleared.expire_date is None


async def test_update_unknown_code(store: Store) -> None:
    _, program_id, _ = await world(store, "A")
    assert await set_expiry(store, program_id, "NOPE", FUTURE) is Outcome.NO_CODE
    assert await store.update_code(program_id, "NOPE", None, None, False, True, NOW, actor=ACTOR) is Outcome.NO_CODE
    assert await store.update_code(program_id, "NOPE", None, None, False, False, NOW, actor=ACTOR) is Outcome.NO_CODE


async def test_update_expiry_keeps_the_activation(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    assert await set_expiry(store, program_id, "A", PAST) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.expire_date, state.activated_count, state.attached_count) == (PAST, 1, 1)


async def test_update_activation_is_judged_against_the_new_expiry(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    await expire(store, program_id, "A")
    assert await activate(store, program_id, "A") is Outcome.EXPIRED
    # A future expiry revives the code, and the activation in the same call sees it.
    assert await store.update_code(program_id, "A", None, FUTURE, True, True, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.expire_date, state.activated_count) == (FUTURE, 1)


async def test_update_clearing_the_expiry_allows_activation(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    await expire(store, program_id, "A")
    assert await store.update_code(program_id, "A", None, None, True, True, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.expire_date, state.activated_count) == (None, 1)


async def test_update_failed_activation_keeps_the_old_expiry(store: Store) -> None:
    """All or nothing: a past expiry makes the activation fail, and then the expiry is not applied either."""
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await set_expiry(store, program_id, "A", FUTURE) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, PAST, True, True, NOW, actor=ACTOR) is Outcome.EXPIRED
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.expire_date, state.activated_count) == (FUTURE, 0)


@pytest.mark.parametrize("case", ["free", "activated", "elsewhere"])
async def test_update_refused_activation_applies_no_expiry(store: Store, case: str) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    bob = await profile(store, db_id, "bob@example.org")
    named: int | None = None
    if case != "free":
        assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    if case == "activated":
        assert await activate(store, program_id, "A") is Outcome.DONE
    if case == "elsewhere":
        named = bob.pk
    expected = {
        "free": Outcome.NOT_ATTACHED,
        "activated": Outcome.ALREADY_ACTIVATED,
        "elsewhere": Outcome.ATTACHED_ELSEWHERE,
    }[case]
    assert await store.update_code(program_id, "A", named, FUTURE, True, True, NOW, actor=ACTOR) is expected
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.expire_date is None


async def test_update_refused_deactivation_applies_no_expiry(store: Store) -> None:
    """Spec 8.5.2: if any part fails, nothing is applied — also when the failing part is a deactivation."""
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    bob = await profile(store, db_id, "bob@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    outcome = await store.update_code(program_id, "A", bob.pk, FUTURE, True, False, NOW, actor=ACTOR)
    assert outcome is Outcome.ATTACHED_ELSEWHERE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.expire_date, state.activated_count) == (None, 1)


async def test_update_deactivates(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    assert await store.update_code(program_id, "A", None, None, False, False, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.activated_count, state.last_activated, state.attached_count) == (0, None, 1)
    assert state.latest is not None
    assert state.latest.profile_pk == ann.pk  # still bound
    assert await activate(store, program_id, "A") is Outcome.DONE  # and activatable again


async def test_update_deactivate_with_the_bound_profile(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    assert await store.update_code(program_id, "A", ann.pk, FUTURE, True, False, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.activated_count, state.expire_date) == (0, FUTURE)


async def test_update_deactivate_of_a_code_never_activated_is_unchanged(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, None, False, False, NOW, actor=ACTOR) is Outcome.UNCHANGED
    assert await store.update_code(program_id, "A", ann.pk, None, False, False, NOW, actor=ACTOR) is Outcome.UNCHANGED
    assert await store.update_code(program_id, "B", None, None, False, False, NOW, actor=ACTOR) is Outcome.UNCHANGED
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.attached_count, state.activated_count) == (1, 0)


async def test_update_deactivate_one_binding_of_a_universal_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    first, second = await profiles(store, db_id, 2)
    for pk in (first, second):
        assert await attach(store, program_id, "UNI", pk, multiple=True) is Outcome.DONE
        assert await activate(store, program_id, "UNI", pk) is Outcome.DONE
    assert await store.update_code(program_id, "UNI", first, None, False, False, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "UNI", second)
    assert state is not None
    assert state.activated_count == 1
    assert state.own is not None
    assert state.own.activated == NOW


# --- attach_code -----------------------------------------------------------------------------------------------------


async def test_attach_a_free_personal_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    state = await store.code_state(program_id, "A", ann.pk)
    assert state is not None
    assert state.attached_count == 1
    assert state.own is not None
    assert (state.own.attached, state.own.activated) == (NOW, None)
    assert await stats(store, program_id) == ProgramStats(total=2, free=1, attached=1, activated=0, expired=0)


async def test_attach_to_the_same_profile_is_unchanged(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await attach(store, program_id, "A", ann.pk, now=LATER) is Outcome.UNCHANGED
    state = await store.code_state(program_id, "A", ann.pk)
    assert state is not None
    assert state.attached_count == 1
    assert state.own is not None
    assert state.own.attached == NOW  # not re-bound


async def test_attach_a_code_held_by_another_profile(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    bob = await profile(store, db_id, "bob@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await attach(store, program_id, "A", bob.pk) is Outcome.ATTACHED_ELSEWHERE
    assert await attach(store, program_id, "A", bob.pk, create=True) is Outcome.ATTACHED_ELSEWHERE
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.attached_count == 1
    assert state.latest is not None
    assert state.latest.profile_pk == ann.pk


async def test_attach_an_expired_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    await expire(store, program_id, "A")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.EXPIRED
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.attached_count, state.latest) == (0, None)


async def test_attach_unknown_code_without_create(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "NEW", ann.pk) is Outcome.NO_CODE
    assert await store.code_state(program_id, "NEW") is None
    assert (await stats(store, program_id)).total == 1


async def test_attach_unknown_code_with_create(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", case_sensitive=False)
    ann = await profile(store, db_id, "ann@example.org")
    outcome = await store.attach_code(program_id, "New-Code", "new-code", ann.pk, False, True, NOW, actor=ACTOR)
    assert outcome is Outcome.DONE
    state = await store.code_state(program_id, "new-code", ann.pk)
    assert state is not None
    assert (state.code, state.created, state.attached_count) == ("New-Code", NOW, 1)
    assert state.own is not None
    assert (await stats(store, program_id)).total == 2


async def test_attach_with_create_at_the_limit(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B", codes_limit=2)
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "NEW", ann.pk, create=True) is Outcome.LIMIT_REACHED
    assert await store.code_state(program_id, "NEW") is None
    assert (await stats(store, program_id)).total == 2
    # An existing code needs no room: it is attached even at the limit.
    assert await attach(store, program_id, "A", ann.pk, create=True) is Outcome.DONE


async def test_attach_with_create_counts_against_the_limit(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", codes_limit=2)
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "NEW", ann, create=True) is Outcome.DONE
    assert await attach(store, program_id, "NEWER", bob, create=True) is Outcome.LIMIT_REACHED
    assert (await add_codes(store, program_id, "MORE")).inserted == frozenset()
    assert (await stats(store, program_id)).total == 2


async def test_attach_universal_code_to_many_profiles(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    pks = await profiles(store, db_id, 3)
    for pk in pks:
        assert await attach(store, program_id, "UNI", pk, multiple=True) is Outcome.DONE
    for pk in pks:
        assert await attach(store, program_id, "UNI", pk, multiple=True) is Outcome.UNCHANGED
    state = await store.code_state(program_id, "UNI")
    assert state is not None
    assert state.attached_count == 3
    assert state.latest is not None
    assert state.latest.profile_pk == pks[-1]
    assert await stats(store, program_id) == ProgramStats(total=1, free=0, attached=1, activated=0, expired=0)


async def test_attach_universal_code_refusals(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True, codes_limit=1)
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "NOPE", ann.pk, multiple=True) is Outcome.NO_CODE
    assert await attach(store, program_id, "NEW", ann.pk, multiple=True, create=True) is Outcome.LIMIT_REACHED
    await expire(store, program_id, "UNI")
    assert await attach(store, program_id, "UNI", ann.pk, multiple=True) is Outcome.EXPIRED
    state = await store.code_state(program_id, "UNI")
    assert state is not None
    assert state.attached_count == 0


async def test_attach_universal_code_with_create(store: Store) -> None:
    _, program_id, db_id = await world(store, multiple_usage=True)
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "UNI", ann, multiple=True, create=True) is Outcome.DONE
    assert await attach(store, program_id, "UNI", bob, multiple=True, create=True) is Outcome.DONE
    state = await store.code_state(program_id, "UNI")
    assert state is not None
    assert state.attached_count == 2
    assert (await stats(store, program_id)).total == 1


# --- attach_from_pool ------------------------------------------------------------------------------------------------


async def test_pool_hands_out_the_oldest_free_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "C1", "A2", "B3")
    first, second, third, fourth = await profiles(store, db_id, 4)
    assert await store.attach_from_pool(program_id, first, False, NOW, actor=ACTOR) == "C1"
    assert await store.attach_from_pool(program_id, second, False, NOW, actor=ACTOR) == "A2"
    assert await store.attach_from_pool(program_id, third, False, NOW, actor=ACTOR) == "B3"
    assert await store.attach_from_pool(program_id, fourth, False, NOW, actor=ACTOR) is None
    state = await store.code_state(program_id, "A2")
    assert state is not None
    assert state.latest is not None
    assert (state.latest.profile_pk, state.latest.attached) == (second, NOW)


async def test_pool_skips_expired_and_attached_codes(store: Store) -> None:
    _, program_id, db_id = await world(store, "OLD", "HELD", "FRESH", "LAST")
    ann, bob, carl = await profiles(store, db_id, 3)
    await expire(store, program_id, "OLD")
    assert await attach(store, program_id, "HELD", ann) is Outcome.DONE
    assert await set_expiry(store, program_id, "FRESH", FUTURE) is Outcome.DONE  # not expired yet: handed out
    assert await store.attach_from_pool(program_id, bob, False, NOW, actor=ACTOR) == "FRESH"
    assert await store.attach_from_pool(program_id, carl, False, NOW, actor=ACTOR) == "LAST"
    old = await store.code_state(program_id, "OLD")
    assert old is not None
    assert old.attached_count == 0


async def test_pool_of_an_empty_program(store: Store) -> None:
    _, program_id, db_id = await world(store)
    ann = await profile(store, db_id, "ann@example.org")
    assert await store.attach_from_pool(program_id, ann.pk, False, NOW, actor=ACTOR) is None
    assert await store.attach_from_pool(program_id, ann.pk, True, NOW, actor=ACTOR) is None


async def test_pool_only_expired_codes_left(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    await expire(store, program_id, "A")
    assert await store.attach_from_pool(program_id, ann.pk, False, NOW, actor=ACTOR) is None


async def test_pool_one_per_profile_returns_the_held_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B", "C")
    ann, bob = await profiles(store, db_id, 2)
    assert await store.attach_from_pool(program_id, ann, True, NOW, actor=ACTOR) == "A"
    assert await store.attach_from_pool(program_id, ann, True, LATER, actor=ACTOR) == "A"
    held = await store.code_state(program_id, "A", ann)
    assert held is not None
    assert held.own is not None
    assert (held.attached_count, held.own.attached) == (1, NOW)
    assert (await stats(store, program_id)).free == 2  # nothing new was bound
    assert await store.attach_from_pool(program_id, bob, True, NOW, actor=ACTOR) == "B"
    # Without the setting, a profile may take several codes.
    assert await store.attach_from_pool(program_id, ann, False, NOW, actor=ACTOR) == "C"


async def test_pool_one_per_profile_returns_a_code_attached_by_name(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "B", ann.pk) is Outcome.DONE
    assert await store.attach_from_pool(program_id, ann.pk, True, NOW, actor=ACTOR) == "B"
    assert (await stats(store, program_id)).free == 1


async def test_pool_one_per_profile_looks_only_at_this_program(store: Store) -> None:
    account_id, program_id, db_id = await world(store, "A")
    other = await program(store, account_id, name="Other")
    await add_codes(store, other.id, "X")
    ann = await profile(store, db_id, "ann@example.org")
    assert await store.attach_from_pool(other.id, ann.pk, True, NOW, actor=ACTOR) == "X"
    assert await store.attach_from_pool(program_id, ann.pk, True, NOW, actor=ACTOR) == "A"


# --- detach ----------------------------------------------------------------------------------------------------------


async def test_detach_returns_the_code_to_the_pool(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B")
    ann, bob = await profiles(store, db_id, 2)
    assert await store.attach_from_pool(program_id, ann, False, NOW, actor=ACTOR) == "A"
    assert await store.detach(program_id, "A", ann, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "A", ann)
    assert state is not None
    assert (state.attached_count, state.latest, state.own) == (0, None, None)
    assert (await stats(store, program_id)).free == 2
    assert await store.attach_from_pool(program_id, bob, False, NOW, actor=ACTOR) == "A"  # the oldest free again


async def test_detach_unknown_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await store.detach(program_id, "NOPE", ann.pk, NOW, actor=ACTOR) is Outcome.NO_CODE


async def test_detach_a_free_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await store.detach(program_id, "A", ann.pk, NOW, actor=ACTOR) is Outcome.NOT_ATTACHED
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert state.attached_count == 0


async def test_detach_from_another_profile(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "A", ann) is Outcome.DONE
    assert await store.detach(program_id, "A", bob, NOW, actor=ACTOR) is Outcome.ATTACHED_ELSEWHERE
    state = await store.code_state(program_id, "A", ann)
    assert state is not None
    assert state.attached_count == 1
    assert state.own is not None  # still Ann's
    assert (await stats(store, program_id)).free == 0


async def test_detach_a_code_bound_to_several_profiles(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    ann, bob = await profiles(store, db_id, 2)
    for pk in (ann, bob):
        assert await attach(store, program_id, "UNI", pk, multiple=True) is Outcome.DONE
    assert await store.detach(program_id, "UNI", ann, NOW, actor=ACTOR) is Outcome.SEVERAL_PROFILES
    state = await store.code_state(program_id, "UNI", ann)
    assert state is not None
    assert state.attached_count == 2
    assert state.own is not None


async def test_detach_a_universal_code_with_one_binding(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "UNI", ann.pk, multiple=True) is Outcome.DONE
    assert await store.detach(program_id, "UNI", ann.pk, NOW, actor=ACTOR) is Outcome.DONE
    state = await store.code_state(program_id, "UNI")
    assert state is not None
    assert (state.attached_count, state.latest) == (0, None)


async def test_detach_an_activated_code_is_refused(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "A", ann) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    assert await store.detach(program_id, "A", ann, NOW, actor=ACTOR) is Outcome.ALREADY_ACTIVATED
    state = await store.code_state(program_id, "A", ann)
    assert state is not None
    assert (state.attached_count, state.activated_count) == (1, 1)  # the count was put back
    assert state.own is not None
    assert state.own.activated == NOW
    assert await store.attach_from_pool(program_id, bob, False, NOW, actor=ACTOR) is None  # not back in the pool
    # A second refused detach still finds the same state.
    assert await store.detach(program_id, "A", ann, NOW, actor=ACTOR) is Outcome.ALREADY_ACTIVATED
    assert await store.detach(program_id, "A", bob, NOW, actor=ACTOR) is Outcome.ATTACHED_ELSEWHERE
    again = await store.code_state(program_id, "A")
    assert again is not None
    assert again.attached_count == 1


async def test_detach_after_deactivation(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await activate(store, program_id, "A") is Outcome.DONE
    assert await store.update_code(program_id, "A", None, None, False, False, NOW, actor=ACTOR) is Outcome.DONE
    assert await store.detach(program_id, "A", ann.pk, NOW, actor=ACTOR) is Outcome.DONE


# --- export ----------------------------------------------------------------------------------------------------------


async def test_export_in_creation_order_with_states(store: Store) -> None:
    _, program_id, db_id = await world(store, "Z", "A", "M")
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "A", ann) is Outcome.DONE
    assert await attach(store, program_id, "M", bob) is Outcome.DONE
    assert await activate(store, program_id, "M") is Outcome.DONE
    items = [item async for item in store.export_codes(program_id)]
    assert [item.code for item in items] == ["Z", "A", "M"]
    assert [(item.attached, item.activated) for item in items] == [(None, None), (NOW, None), (NOW, NOW)]


async def test_export_of_an_empty_program(store: Store) -> None:
    _, program_id, _ = await world(store)
    assert await exported(store, program_id) == []


async def test_export_is_per_program(store: Store) -> None:
    account_id, program_id, _ = await world(store, "A", "B")
    other = await program(store, account_id, name="Other")
    await add_codes(store, other.id, "C", "A")
    assert [code for code, _, _ in await exported(store, program_id)] == ["A", "B"]
    assert [code for code, _, _ in await exported(store, other.id)] == ["C", "A"]


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 7])
async def test_export_pages_across_boundaries(store: Store, count: int) -> None:
    _, program_id, db_id = await world(store)
    codes = [f"CODE-{index:02d}" for index in range(count)]
    if codes:
        await add_codes(store, program_id, *codes)
    # Another program's codes interleave with these ids and must not show up.
    other = await program(store, await account(store), name="Other")
    await add_codes(store, other.id, "OTHER-1", "OTHER-2")
    if codes:
        await add_codes(store, program_id, "LAST")
        codes.append("LAST")
        ann = await profile(store, db_id, "ann@example.org")
        assert await attach(store, program_id, codes[-1], ann.pk) is Outcome.DONE
    listing = await exported(store, program_id, page_size=2)
    assert [code for code, _, _ in listing] == codes
    assert [attached for _, attached, _ in listing] == [code == "LAST" for code in codes]


async def test_export_of_codes_scattered_among_other_programs_codes(store: Store) -> None:
    """The program's codes lie in runs between long runs of another program's: small pages over wide gaps."""
    account_id, program_id, _ = await world(store)
    other = await program(store, account_id, name="Other")
    mine: list[str] = []
    for run in range(6):
        codes = [f"M{run}-{index}" for index in range(run % 3 + 1)]  # runs of 1 to 3 codes
        await add_codes(store, program_id, *codes)
        mine += codes
        await add_codes(store, other.id, *[f"O{run}-{index}" for index in range(40 * run + 1)])
    pages = [page async for page in store.export_batches(program_id, page_size=2)]
    assert all(1 <= len(page) <= 2 for page in pages)
    assert [row[1] for page in pages for row in page] == mine
    assert [item.code async for item in store.export_codes(other.id, page_size=7)] == [
        f"O{run}-{index}" for run in range(6) for index in range(40 * run + 1)
    ]


async def test_an_export_lists_the_codes_held_when_it_began_as_each_page_finds_them(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B", "C", "D", "E")
    ann = await profile(store, db_id, "ann@example.org")
    pages = store.export_batches(program_id, page_size=1)
    first = await anext(pages)  # the next page may be read ahead already; the fourth is not
    await add_codes(store, program_id, "F")  # created after the export began: not listed
    assert await attach(store, program_id, "D", ann.pk) is Outcome.DONE  # on a page not read yet: shown
    rest = [row async for page in pages for row in page]
    assert [row[1] for row in [*first, *rest]] == ["A", "B", "C", "D", "E"]
    assert [row[2] is not None for row in rest] == [False, False, True, False]


async def test_export_page_keyset(store: Store) -> None:
    _, program_id, _ = await world(store, "A", "B", "C")
    first = await store.export_page(program_id, 0, 2)
    assert [item.code for item in first] == ["A", "B"]
    rest = await store.export_page(program_id, first[-1].id, 2)
    assert [item.code for item in rest] == ["C"]
    assert await store.export_page(program_id, rest[-1].id, 2) == []


async def test_export_universal_code_shows_latest_times(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "UNI", ann, multiple=True, now=NOW) is Outcome.DONE
    assert await attach(store, program_id, "UNI", bob, multiple=True, now=LATER) is Outcome.DONE
    assert await store.activate(program_id, "UNI", ann, LATER, actor=ACTOR) is Outcome.DONE
    (item,) = [item async for item in store.export_codes(program_id)]
    assert (item.code, item.attached, item.activated) == ("UNI", LATER, LATER)


# --- databases and profiles ------------------------------------------------------------------------------------------


async def test_databases_are_account_scoped(store: Store) -> None:
    owner = await account(store, "acme")
    stranger = await account(store, "globex")
    first = await store.create_database(owner, "main", NOW)
    second = await store.create_database(owner, "second", NOW)
    foreign = await store.create_database(stranger, "theirs", NOW)
    assert (first.name, first.created) == ("main", NOW)
    assert [d.id for d in await store.list_databases(owner)] == [first.id, second.id]
    assert await store.get_database(owner, first.id) == first
    assert await store.get_database(owner, foreign.id) is None
    assert await store.get_database(stranger, foreign.id) == foreign


async def test_save_profile_creates(store: Store) -> None:
    db_id = await database(store)
    saved = await save_profile(
        store,
        db_id,
        "65a1f0c2e4b0a1b2c3d4e5f6",
        "Ann@Example.org",
        [("+7 (900) 000-00-00", "79000000000")],
        {"crm": "A-1", "age": 42},
        NOW,
    )
    assert (saved.database_id, saved.profile_id, saved.email) == (db_id, "65a1f0c2e4b0a1b2c3d4e5f6", "Ann@Example.org")
    assert saved.phones == ["+7 (900) 000-00-00"]
    assert saved.fields == {"crm": "A-1", "age": 42}
    assert (saved.created, saved.updated) == (NOW, NOW)
    found = await store.find_profiles(db_id, Match(MatchMode.PROFILE_ID, "65a1f0c2e4b0a1b2c3d4e5f6"))
    assert found == [saved]


async def test_save_profile_updates_and_replaces_the_lookups(store: Store) -> None:
    db_id = await database(store)
    first = await profile(store, db_id, "ann@example.org", ("+1 555 0100",), {"crm": "A-1"})
    updated = await save_profile(
        store, db_id, first.profile_id, "anne@example.org", [("+1 555 0199", "15550199")], {"tier": "gold"}, LATER
    )
    assert (updated.pk, updated.profile_id, updated.created, updated.updated) == (
        first.pk,
        first.profile_id,
        NOW,
        LATER,
    )
    assert (updated.email, updated.phones, updated.fields) == ("anne@example.org", ["+1 555 0199"], {"tier": "gold"})
    assert await store.find_profiles(db_id, Match(MatchMode.EMAIL, "ann@example.org")) == []
    assert await store.find_profiles(db_id, Match(MatchMode.PHONE, "15550100")) == []
    assert await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "A-1", "crm")) == []
    for match in (
        Match(MatchMode.EMAIL, "anne@example.org"),
        Match(MatchMode.PHONE, "15550199"),
        Match(MatchMode.CUSTOM, "gold", "tier"),
    ):
        assert [p.pk for p in await store.find_profiles(db_id, match)] == [first.pk], match


async def test_upsert_profile_creates_then_updates_what_the_match_finds(store: Store) -> None:
    db_id = await database(store)
    by_email = Match(MatchMode.EMAIL, "ann@example.org")
    seen: list[list[Profile]] = []

    def build(found: list[Profile]) -> ProfileData:
        seen.append(found)
        tier = "gold" if found else "new"
        profile_id = found[0].profile_id if found else "a" * 24
        return ProfileData(profile_id, "Ann@Example.org", [("+1 555 0100", "15550100")], {"tier": tier})

    created = await store.upsert_profile(db_id, by_email, build, NOW)
    updated = await store.upsert_profile(db_id, by_email, build, LATER)

    assert seen == [[], [created]]
    assert (updated.pk, updated.profile_id, updated.created, updated.updated) == (created.pk, "a" * 24, NOW, LATER)
    assert updated.fields == {"tier": "gold"}
    assert await store.find_profiles(db_id, by_email, limit=5) == [updated]
    assert await store.find_profiles(db_id, Match(MatchMode.PHONE, "15550100")) == [updated]


async def test_upsert_profile_writes_nothing_when_build_refuses(store: Store) -> None:
    db_id = await database(store)
    ann = await profile(store, db_id, "ann@example.org", fields={"tier": "new"})
    await profile(store, db_id, "ann@example.org")
    seen: list[list[Profile]] = []

    def refuse(found: list[Profile]) -> ProfileData:
        seen.append(found)
        raise Conflict("several")

    with pytest.raises(Conflict):
        await store.upsert_profile(db_id, Match(MatchMode.EMAIL, "ann@example.org"), refuse, LATER)
    with pytest.raises(Conflict):
        await store.upsert_profile(db_id, Match(MatchMode.EMAIL, "bob@example.org"), refuse, LATER)
    assert [len(found) for found in seen] == [2, 0]  # up to two: enough to tell one from several
    assert await store.find_profiles(db_id, Match(MatchMode.EMAIL, "bob@example.org")) == []
    assert (await store.find_profiles(db_id, Match(MatchMode.PROFILE_ID, ann.profile_id)))[0] == ann


async def test_save_profile_without_email(store: Store) -> None:
    db_id = await database(store)
    saved = await profile(store, db_id, None, ("+44 20 7946 0000",))
    assert saved.email is None
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.PHONE, "442079460000"))] == [saved.pk]


@pytest.mark.parametrize("mode", [MatchMode.EMAIL, MatchMode.EMAIL_PROFILE])
async def test_find_profiles_by_email_ignores_case(store: Store, mode: MatchMode) -> None:
    db_id = await database(store)
    ann = await profile(store, db_id, " Ann@Example.ORG ")
    await profile(store, db_id, "bob@example.org")
    found = await store.find_profiles(db_id, Match(mode, "ann@example.org"))
    assert [p.pk for p in found] == [ann.pk]
    assert await store.find_profiles(db_id, Match(mode, "nobody@example.org")) == []


async def test_find_profiles_by_profile_id(store: Store) -> None:
    db_id = await database(store)
    ann = await profile(store, db_id, "ann@example.org")
    await profile(store, db_id, "bob@example.org")
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.PROFILE_ID, ann.profile_id))] == [ann.pk]
    assert await store.find_profiles(db_id, Match(MatchMode.PROFILE_ID, "0" * 24)) == []


async def test_find_profiles_by_phone_digits(store: Store) -> None:
    db_id = await database(store)
    ann = await profile(store, db_id, "ann@example.org", ("+7 (900) 000-00-00", "8-800-555-35-35"))
    await profile(store, db_id, "bob@example.org", ("+7 900 111 11 11",))
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.PHONE, "79000000000"))] == [ann.pk]
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.PHONE, "88005553535"))] == [ann.pk]
    assert await store.find_profiles(db_id, Match(MatchMode.PHONE, "7900000000")) == []  # digits compared whole


async def test_find_profiles_by_custom_field_text_form(store: Store) -> None:
    db_id = await database(store)
    ann = await profile(store, db_id, "ann@example.org", fields={"crm": 42, "vip": True, "code": "A-1", "ratio": 1.5})
    bob = await profile(store, db_id, "bob@example.org", fields={"crm": "42", "vip": False})
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "42", "crm"))] == [ann.pk, bob.pk]
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "true", "vip"))] == [ann.pk]
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "false", "vip"))] == [bob.pk]
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "A-1", "code"))] == [ann.pk]
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "1.5", "ratio"))] == [ann.pk]
    assert await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "42", "other")) == []  # the name matters
    assert await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "a-1", "code")) == []  # values compared exactly


async def test_find_profiles_is_database_scoped_and_limited(store: Store) -> None:
    account_id = await account(store)
    first_db = await database(store, account_id, "first")
    second_db = await database(store, account_id, "second")
    ones = [await profile(store, first_db, "same@example.org", ("+1 555 0100",), {"k": "v"}) for _ in range(3)]
    other = await profile(store, second_db, "same@example.org", ("+1 555 0100",), {"k": "v"})
    for match in (
        Match(MatchMode.EMAIL, "same@example.org"),
        Match(MatchMode.PHONE, "15550100"),
        Match(MatchMode.CUSTOM, "v", "k"),
    ):
        assert [p.pk for p in await store.find_profiles(first_db, match)] == [ones[0].pk, ones[1].pk], match
        assert [p.pk for p in await store.find_profiles(first_db, match, limit=5)] == [p.pk for p in ones], match
        assert [p.pk for p in await store.find_profiles(second_db, match)] == [other.pk], match
    by_id = Match(MatchMode.PROFILE_ID, other.profile_id)
    assert await store.find_profiles(first_db, by_id) == []


async def test_delete_profile_without_codes(store: Store) -> None:
    db_id = await database(store)
    ann = await profile(store, db_id, "ann@example.org", ("+1 555 0100",), {"k": "v"})
    assert await store.delete_profile(ann.pk, False, NOW, actor=ACTOR) is True
    assert await store.find_profiles(db_id, Match(MatchMode.EMAIL, "ann@example.org")) == []
    assert await store.find_profiles(db_id, Match(MatchMode.PHONE, "15550100")) == []
    assert await store.find_profiles(db_id, Match(MatchMode.CUSTOM, "v", "k")) == []


async def test_delete_profile_refused_while_holding_codes(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await attach(store, program_id, "A", ann.pk) is Outcome.DONE
    assert await store.delete_profile(ann.pk, False, NOW, actor=ACTOR) is False
    assert [p.pk for p in await store.find_profiles(db_id, Match(MatchMode.EMAIL, "ann@example.org"))] == [ann.pk]
    state = await store.code_state(program_id, "A", ann.pk)
    assert state is not None
    assert state.own is not None


async def test_delete_profile_with_force_returns_codes_to_the_pool(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B")
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "A", ann) is Outcome.DONE
    assert await store.delete_profile(ann, True, NOW, actor=ACTOR) is True
    assert await store.find_profiles(db_id, Match(MatchMode.EMAIL, "user0@example.org")) == []
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.attached_count, state.latest) == (0, None)
    assert await store.attach_from_pool(program_id, bob, False, NOW, actor=ACTOR) == "A"


async def test_delete_profile_with_force_keeps_a_profile_holding_a_redeemed_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "A", "B", "C")
    ann, bob = await profiles(store, db_id, 2)
    assert await attach(store, program_id, "A", ann) is Outcome.DONE
    assert await attach(store, program_id, "B", ann) is Outcome.DONE
    assert await activate(store, program_id, "A", ann) is Outcome.DONE
    assert await store.delete_profile(ann, True, NOW, actor=ACTOR) is False
    redeemed = await store.code_state(program_id, "A", ann)
    assert redeemed is not None and redeemed.own is not None and redeemed.own.activated is not None
    kept = await store.code_state(program_id, "B", ann)
    assert kept is not None and kept.own is not None  # refused as a whole: the unredeemed code stays bound too
    assert await store.attach_from_pool(program_id, bob, False, NOW, actor=ACTOR) == "C"
    assert await store.attach_from_pool(program_id, bob, False, NOW, actor=ACTOR) is None


async def test_import_into_a_deleted_program_is_not_found(store: Store) -> None:
    gone = await program(store)
    assert await store.delete_program(gone.account_id, gone.id, True) is True
    with pytest.raises(NotFound):
        await add_codes(store, gone.id, "A")


async def test_attach_for_a_deleted_profile_is_a_conflict_and_changes_nothing(store: Store) -> None:
    _, program_id, db_id = await world(store, "A")
    ann = await profile(store, db_id, "ann@example.org")
    assert await store.delete_profile(ann.pk, False, NOW, actor=ACTOR) is True
    with pytest.raises(Conflict):
        await attach(store, program_id, "A", ann.pk)
    state = await store.code_state(program_id, "A")
    assert state is not None and state.attached_count == 0


async def test_delete_profile_with_force_keeps_other_bindings_of_a_universal_code(store: Store) -> None:
    _, program_id, db_id = await world(store, "UNI", multiple_usage=True)
    ann, bob = await profiles(store, db_id, 2)
    for pk in (ann, bob):
        assert await attach(store, program_id, "UNI", pk, multiple=True) is Outcome.DONE
    assert await store.delete_profile(ann, True, NOW, actor=ACTOR) is True
    state = await store.code_state(program_id, "UNI", bob)
    assert state is not None
    assert state.attached_count == 1
    assert state.own is not None
    assert await store.detach(program_id, "UNI", bob, NOW, actor=ACTOR) is Outcome.DONE


# --- ids are never reused ---------------------------------------------------------------------------------------------


async def delete_row(store: Store, table: str, row_id: int) -> None:
    """Delete one row directly (databases, tokens and accounts have no delete operation yet; webhooks will)."""

    async def delete(conn: Any) -> None:
        deleted = await conn.fetchval(f"DELETE FROM {table} WHERE id = $1 RETURNING id", row_id)
        assert deleted == row_id

    await store._run(delete)


async def test_a_deleted_program_id_is_never_handed_out_again(store: Store) -> None:
    """An old client's ``loyalty_id`` must never come to name a different program."""
    owner = await account(store)
    await program(store, owner, name="A")
    newest = await program(store, owner, name="B")
    assert await store.delete_program(owner, newest.id, False) is True
    assert (await program(store, owner, name="C")).id > newest.id


async def test_a_deleted_profile_id_is_never_handed_out_again(store: Store) -> None:
    db_id = await database(store)
    await profile(store, db_id, "ann@example.org")
    newest = await profile(store, db_id, "bob@example.org")
    assert await store.delete_profile(newest.pk, False, NOW, actor=ACTOR) is True
    assert (await profile(store, db_id, "carol@example.org")).pk > newest.pk


async def test_deleted_database_token_and_account_ids_are_never_handed_out_again(store: Store) -> None:
    owner = await account(store, "acme")
    await database(store, owner, "first")
    newest_db = await database(store, owner, "second")
    await delete_row(store, "databases", newest_db)
    assert await database(store, owner, "third") > newest_db

    await store.create_token(owner, "a", Role.READ, "hash-a", NOW)
    newest_token = await store.create_token(owner, "b", Role.READ, "hash-b", NOW)
    await delete_row(store, "tokens", newest_token.id)
    assert (await store.create_token(owner, "c", Role.READ, "hash-c", NOW)).id > newest_token.id

    newest_account = await account(store, "globex")
    await delete_row(store, "accounts", newest_account)
    assert await account(store, "initech") > newest_account


async def test_codes_are_never_stored_under_a_case_setting_that_changed_meanwhile(store: Store) -> None:
    """The service makes the keys under the setting it read; if ``case_sensitive`` changed before the insert
    takes the program row, the insert is refused whole instead of storing keys no look-up would find."""
    created = await program(store, case_sensitive=True)
    assert await store.update_program(created.account_id, created.id, {"case_sensitive": False}, needs_empty)
    holder = await profile(store, await database(store, created.account_id), "ann@example.org")
    with pytest.raises(Conflict, match="case sensitivity"):
        await store.import_codes(created.id, [("Spring", "Spring")], NOW, case_sensitive=True, actor=ACTOR)
    with pytest.raises(Conflict, match="case sensitivity"):
        await store.attach_code(created.id, "Spring", "Spring", holder.pk, False, True, NOW, True, actor=ACTOR)
    assert (await store.program_stats(created.id, NOW)).total == 0
    outcome = await store.import_codes(created.id, [("Spring", "spring")], NOW, case_sensitive=False, actor=ACTOR)
    assert outcome.inserted == {"spring"}


async def test_get_reads_the_program_and_the_code_in_one_look_up(store: Store) -> None:
    """``program_and_code_state``: the account's program (another account's is None, like a missing one) and the
    code as the program's case rule finds it — the same state ``code_state`` reads by key."""
    acme = await account(store)
    exact = await program(store, acme, name="Exact", case_sensitive=True)
    folding = await program(store, acme, name="Folding", case_sensitive=False)
    await store.import_codes(exact.id, [("Spring-1", "Spring-1")], NOW, actor=ACTOR)
    await store.import_codes(folding.id, [("Spring-1", "spring-1")], NOW, actor=ACTOR)
    db_id = await database(store, acme)
    holder = await save_profile(store, db_id, "d" * 24, "holder@example.org", [], {}, NOW)
    await store.attach_code(folding.id, "Spring-1", "spring-1", holder.pk, False, False, NOW, actor=ACTOR)

    found = await store.program_and_code_state(acme, folding.id, "SPRING-1")
    assert found is not None
    found_program, state = found
    assert found_program == folding
    assert state == await store.code_state(folding.id, "spring-1")
    assert state is not None and state.code == "Spring-1" and state.latest is not None
    assert state.latest.profile_pk == holder.pk

    assert await store.program_and_code_state(acme, exact.id, "SPRING-1") == (exact, None)
    found = await store.program_and_code_state(acme, exact.id, "Spring-1")
    assert found is not None and found[1] == await store.code_state(exact.id, "Spring-1")
    other = await account(store, "other")
    assert await store.program_and_code_state(other, folding.id, "Spring-1") is None
    assert await store.program_and_code_state(acme, folding.id + exact.id + 1, "Spring-1") is None
