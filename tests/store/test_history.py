"""The codes' history in the store (docs/api.md#history), on SQLite and on PostgreSQL: each state change records its
event in the transaction that makes it, a refused or rolled-back change records nothing, and reading pages through
a code's events. (The race on one code is in ``test_concurrency.py``.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promocodes.models import Actor, CodeEvent, CodeEventKind, Outcome, Profile
from promocodes.store import Store
from tests.helpers import ACTOR, count_rows, save_profile

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
FUTURE = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
SHOP = Actor(token_id=7, token_name="shop")

CREATED, ATTACHED, ACTIVATED = CodeEventKind.CREATED, CodeEventKind.ATTACHED, CodeEventKind.ACTIVATED
DEACTIVATED, DETACHED, EXPIRY_CHANGED = CodeEventKind.DEACTIVATED, CodeEventKind.DETACHED, CodeEventKind.EXPIRY_CHANGED


async def world(store: Store, *codes: str, **settings: Any) -> tuple[int, int]:
    """A program holding ``codes`` (imported as the tests' actor) and a database: ``(program_id, db_id)``."""
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "Spring", **settings}, NOW)
    if codes:
        imported = await store.import_codes(program.id, [(code, code) for code in codes], NOW, actor=ACTOR)
        assert imported.inserted == frozenset(codes)
    return program.id, (await store.create_database(account_id, "main", NOW)).id


async def person(store: Store, db_id: int, name: str) -> Profile:
    return await save_profile(store, db_id, name[0] * 24, f"{name}@example.org", [], {}, NOW)


async def events(store: Store, program_id: int, code: str, after: int = 0, limit: int = 1000) -> list[CodeEvent]:
    found = await store.code_history(program_id, code, after, limit)
    assert found is not None, f"no code {code!r}"
    return found


async def kinds(store: Store, program_id: int, code: str) -> list[CodeEventKind]:
    return [event.event for event in await events(store, program_id, code)]


async def test_an_import_records_one_created_event_for_all_its_codes(store: Store) -> None:
    program_id, _ = await world(store)
    await store.import_codes(program_id, [("A", "A"), ("B", "B"), ("C", "C")], NOW, actor=SHOP)

    (created,) = await events(store, program_id, "A")
    assert (created.event, created.time, created.token_id, created.token_name) == (CREATED, NOW, 7, "shop")
    assert (created.profile_id, created.database_id, created.details) == (None, None, {"source": "import", "count": 3})
    assert await events(store, program_id, "B") == [created] == await events(store, program_id, "C")


async def test_the_created_event_counts_only_the_codes_that_import_created(store: Store) -> None:
    program_id, _ = await world(store, "A")
    (first,) = await events(store, program_id, "A")
    await store.import_codes(program_id, [("A", "A"), ("B", "B")], NOW, actor=ACTOR)  # A: a duplicate

    assert await events(store, program_id, "A") == [first]  # a duplicate is not created again
    (second,) = await events(store, program_id, "B")
    assert second.details == {"source": "import", "count": 1} and second.id > first.id


async def test_an_import_that_creates_nothing_records_nothing(store: Store, database_url: str) -> None:
    program_id, _ = await world(store, "A", codes_limit=2)
    await store.import_codes(program_id, [("B", "B"), ("C", "C")], NOW, actor=ACTOR)  # B fits, C is over the limit
    assert [event.details for event in await events(store, program_id, "B")] == [{"source": "import", "count": 1}]
    recorded = await count_rows(database_url, "code_events")
    assert recorded == 2

    assert (await store.import_codes(program_id, [("A", "A")], NOW, actor=ACTOR)).inserted == frozenset()  # duplicate
    assert (await store.import_codes(program_id, [("D", "D")], NOW, actor=ACTOR)).inserted == frozenset()  # limit
    assert await count_rows(database_url, "code_events") == recorded


async def test_attach_activate_deactivate_detach_each_record_their_event(store: Store) -> None:
    program_id, db_id = await world(store, "A")
    ann = await person(store, db_id, "ann")

    assert await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP) is Outcome.DONE
    assert await store.activate(program_id, "A", None, LATER, actor=SHOP) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, None, False, False, LATER, actor=SHOP) is Outcome.DONE
    assert await store.detach(program_id, "A", ann.pk, LATER, actor=SHOP) is Outcome.DONE

    created, *changes = await events(store, program_id, "A")
    assert created.event is CREATED and created.token_name == ACTOR.token_name
    assert [(e.event, e.time, e.profile_id, e.database_id, e.token_id, e.token_name, e.details) for e in changes] == [
        (ATTACHED, NOW, ann.profile_id, db_id, 7, "shop", {}),
        (ACTIVATED, LATER, ann.profile_id, db_id, 7, "shop", {}),
        (DEACTIVATED, LATER, ann.profile_id, db_id, 7, "shop", {}),
        (DETACHED, LATER, ann.profile_id, db_id, 7, "shop", {}),
    ]
    assert [event.id for event in [created, *changes]] == sorted(event.id for event in [created, *changes])


async def test_an_expiry_change_records_the_old_and_the_new_value(store: Store) -> None:
    program_id, _ = await world(store, "A")
    assert await store.update_code(program_id, "A", None, FUTURE, True, None, NOW, actor=SHOP) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, FUTURE, True, None, NOW, actor=SHOP) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, None, True, None, NOW, actor=SHOP) is Outcome.DONE
    assert await store.update_code(program_id, "A", None, None, True, None, NOW, actor=SHOP) is Outcome.DONE

    changes = [(e.event, e.profile_id, e.details) for e in (await events(store, program_id, "A"))[1:]]
    assert changes == [  # the second and the fourth change nothing, so they record nothing
        (EXPIRY_CHANGED, None, {"old": None, "new": "2025-12-31T23:59:59Z"}),
        (EXPIRY_CHANGED, None, {"old": "2025-12-31T23:59:59Z", "new": None}),
    ]


async def test_an_update_doing_two_things_records_two_events_in_order(store: Store) -> None:
    program_id, db_id = await world(store, "A")
    ann = await person(store, db_id, "ann")
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=ACTOR)
    assert await store.update_code(program_id, "A", None, FUTURE, True, True, NOW, actor=SHOP) is Outcome.DONE
    assert await kinds(store, program_id, "A") == [CREATED, ATTACHED, EXPIRY_CHANGED, ACTIVATED]


async def test_refused_changes_record_nothing(store: Store, database_url: str) -> None:
    program_id, db_id = await world(store, "A", "B", "FREE")
    ann, bob = await person(store, db_id, "ann"), await person(store, db_id, "bob")
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=ACTOR)
    await store.activate(program_id, "A", None, NOW, actor=ACTOR)
    await store.attach_code(program_id, "B", "B", ann.pk, False, False, NOW, actor=ACTOR)
    history = {code: await events(store, program_id, code) for code in ("A", "B", "FREE")}
    recorded = await count_rows(database_url, "code_events")

    assert await store.activate(program_id, "A", None, NOW, actor=SHOP) is Outcome.ALREADY_ACTIVATED
    assert await store.detach(program_id, "A", ann.pk, NOW, actor=SHOP) is Outcome.ALREADY_ACTIVATED
    assert await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP) is Outcome.UNCHANGED
    assert await store.attach_code(program_id, "B", "B", bob.pk, False, False, NOW, actor=SHOP) is not Outcome.DONE
    assert await store.detach(program_id, "B", bob.pk, NOW, actor=SHOP) is Outcome.ATTACHED_ELSEWHERE
    assert await store.detach(program_id, "FREE", ann.pk, NOW, actor=SHOP) is Outcome.NOT_ATTACHED
    assert await store.activate(program_id, "FREE", None, NOW, actor=SHOP) is Outcome.NOT_ATTACHED
    # deactivating a code that is not activated changes nothing, so it records nothing
    assert await store.update_code(program_id, "B", None, None, False, False, NOW, actor=SHOP) is Outcome.UNCHANGED
    # all or nothing: the activation is refused, so the new expiry and its event are undone
    refused = await store.update_code(program_id, "FREE", None, FUTURE, True, True, NOW, actor=SHOP)
    assert refused is Outcome.NOT_ATTACHED

    assert {code: await events(store, program_id, code) for code in history} == history
    assert await count_rows(database_url, "code_events") == recorded


async def test_attach_without_a_free_code_records_nothing(store: Store) -> None:
    program_id, db_id = await world(store, "ONLY")
    ann, bob = await person(store, db_id, "ann"), await person(store, db_id, "bob")
    assert await store.attach_from_pool(program_id, ann.pk, False, NOW, actor=SHOP) == "ONLY"
    history = await events(store, program_id, "ONLY")

    assert await store.attach_from_pool(program_id, bob.pk, False, NOW, actor=SHOP) is None
    assert await events(store, program_id, "ONLY") == history
    assert [(e.event, e.profile_id, e.token_name) for e in history[1:]] == [(ATTACHED, ann.profile_id, "shop")]


async def test_handing_back_the_code_a_profile_holds_records_nothing(store: Store) -> None:
    program_id, db_id = await world(store, "A", "B", one_code_per_profile=True)
    ann = await person(store, db_id, "ann")
    assert await store.attach_from_pool(program_id, ann.pk, True, NOW, actor=SHOP) == "A"
    assert await store.attach_from_pool(program_id, ann.pk, True, NOW, actor=SHOP) == "A"
    assert await kinds(store, program_id, "A") == [CREATED, ATTACHED]
    assert await kinds(store, program_id, "B") == [CREATED]


async def test_a_code_created_on_attach_records_created_then_attached(store: Store) -> None:
    program_id, db_id = await world(store)
    ann = await person(store, db_id, "ann")
    assert await store.attach_code(program_id, "NEW", "NEW", ann.pk, False, True, NOW, actor=SHOP) is Outcome.DONE

    created, attached = await events(store, program_id, "NEW")
    assert (created.event, created.details, created.profile_id, created.token_name) == (
        CREATED,
        {"source": "attach"},
        None,
        "shop",
    )
    assert (attached.event, attached.profile_id, attached.database_id) == (ATTACHED, ann.profile_id, db_id)


async def test_a_universal_code_records_each_binding(store: Store) -> None:
    program_id, db_id = await world(store, "UNI", multiple_usage=True)
    ann, bob = await person(store, db_id, "ann"), await person(store, db_id, "bob")
    for holder in (ann, bob):
        assert (
            await store.attach_code(program_id, "UNI", "UNI", holder.pk, True, False, NOW, actor=SHOP) is Outcome.DONE
        )
    assert await store.attach_code(program_id, "UNI", "UNI", ann.pk, True, False, NOW, actor=SHOP) is not Outcome.DONE
    assert await store.activate(program_id, "UNI", bob.pk, NOW, actor=SHOP) is Outcome.DONE

    history = [(e.event, e.profile_id) for e in (await events(store, program_id, "UNI"))[1:]]
    assert history == [(ATTACHED, ann.profile_id), (ATTACHED, bob.profile_id), (ACTIVATED, bob.profile_id)]


async def test_a_deleted_profile_keeps_its_ids_in_the_history(store: Store) -> None:
    """A forced delete releases the profile's codes, each with a `detached` event; the events, those and the ones
    before, keep the profile's ids after the profile is gone."""
    program_id, db_id = await world(store, "A", "B")
    ann = await person(store, db_id, "ann")
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP)
    await store.attach_code(program_id, "B", "B", ann.pk, False, False, NOW, actor=SHOP)
    await store.detach(program_id, "B", ann.pk, NOW, actor=SHOP)

    assert await store.delete_profile(ann.pk, True, LATER, actor=SHOP) is True

    a = [(e.event, e.time, e.profile_id, e.database_id, e.details) for e in (await events(store, program_id, "A"))[1:]]
    assert a == [
        (ATTACHED, NOW, ann.profile_id, db_id, {}),
        (DETACHED, LATER, ann.profile_id, db_id, {"reason": "profile deleted"}),
    ]
    b = [(e.event, e.profile_id, e.database_id) for e in (await events(store, program_id, "B"))[1:]]
    assert b == [(ATTACHED, ann.profile_id, db_id), (DETACHED, ann.profile_id, db_id)]


async def test_a_refused_profile_delete_records_nothing(store: Store) -> None:
    program_id, db_id = await world(store, "A", "B")
    ann = await person(store, db_id, "ann")
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=SHOP)
    await store.attach_code(program_id, "B", "B", ann.pk, False, False, NOW, actor=SHOP)
    await store.activate(program_id, "B", None, NOW, actor=SHOP)  # a redeemed code: the profile stays

    assert await store.delete_profile(ann.pk, True, LATER, actor=SHOP) is False
    assert await kinds(store, program_id, "A") == [CREATED, ATTACHED]


async def test_paging_with_limit_and_after(store: Store) -> None:
    program_id, db_id = await world(store, "A", "OTHER")
    ann = await person(store, db_id, "ann")
    for _ in range(3):
        await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=ACTOR)
        await store.detach(program_id, "A", ann.pk, NOW, actor=ACTOR)
    await store.attach_code(program_id, "OTHER", "OTHER", ann.pk, False, False, NOW, actor=ACTOR)  # not A's
    everything = await events(store, program_id, "A")
    assert [e.event for e in everything] == [CREATED] + [ATTACHED, DETACHED] * 3

    pages, after = [], 0
    while page := await events(store, program_id, "A", after=after, limit=3):
        pages.append(page)
        after = page[-1].id
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [event for page in pages for event in page] == everything
    assert await events(store, program_id, "A", after=everything[0].id, limit=1) == everything[1:2]
    assert await events(store, program_id, "A", after=everything[-1].id) == []


async def test_history_of_an_unknown_code_is_none(store: Store) -> None:
    program_id, _ = await world(store, "A")
    other, _ = await world(store)
    assert await store.code_history(program_id, "NOPE", 0, 100) is None
    assert await store.code_history(other, "A", 0, 100) is None  # another program's code
    assert await store.code_history(program_id, "A", 0, 100) is not None


async def test_a_change_that_fails_inside_its_transaction_leaves_no_event_and_no_change(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event and the change are one transaction: a failure after the event was written (here, forced) undoes
    both."""
    program_id, db_id = await world(store, "A")
    ann = await person(store, db_id, "ann")
    await store.attach_code(program_id, "A", "A", ann.pk, False, False, NOW, actor=ACTOR)
    before = await events(store, program_id, "A")

    import promocodes.store.codes as codes

    original = codes.record

    async def record_then_fail(*args: Any, **kwargs: Any) -> int:
        await original(*args, **kwargs)
        raise RuntimeError("forced failure after the event was written")

    monkeypatch.setattr(codes, "record", record_then_fail)
    with pytest.raises(RuntimeError, match="forced"):
        await store.activate(program_id, "A", None, NOW, actor=SHOP)
    with pytest.raises(RuntimeError, match="forced"):
        await store.update_code(program_id, "A", None, FUTURE, True, None, NOW, actor=SHOP)
    with pytest.raises(RuntimeError, match="forced"):
        await store.detach(program_id, "A", ann.pk, NOW, actor=SHOP)
    monkeypatch.undo()

    assert await events(store, program_id, "A") == before
    state = await store.code_state(program_id, "A")
    assert state is not None
    assert (state.attached_count, state.activated_count, state.expire_date) == (1, 0, None)


async def test_an_import_that_fails_inside_its_transaction_leaves_no_event_and_no_code(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    program_id, _ = await world(store)
    import promocodes.store.codes as codes

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("forced failure after the codes were written")

    monkeypatch.setattr(codes, "set_details", fail)
    with pytest.raises(RuntimeError, match="forced"):
        await store.import_codes(program_id, [("A", "A")], NOW, actor=SHOP)
    monkeypatch.undo()

    assert await store.code_state(program_id, "A") is None
    await store.import_codes(program_id, [("A", "A")], NOW, actor=SHOP)
    (created,) = await events(store, program_id, "A")
    assert created.details == {"source": "import", "count": 1}
