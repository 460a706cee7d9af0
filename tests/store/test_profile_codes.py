"""The codes a profile holds (``Store.profile_codes``, the console's profile page: docs/console.md#profiles), on
SQLite and on PostgreSQL: every binding of the profile with its program and dates, the latest first, bounded by the
limit, and nothing of another profile's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promocodes.models import Outcome
from promocodes.store import Store
from promocodes.store.profiles import HeldCode
from tests.helpers import ACTOR, save_profile

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
EXPIRY = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)


async def test_a_profile_holds_its_bindings_latest_first_with_their_programs_and_dates(store: Store) -> None:
    account_id = await store.ensure_account("acme", NOW)
    spring = await store.create_program(account_id, {"name": "Spring"}, NOW)
    shared = await store.create_program(account_id, {"name": "Shared", "multiple_usage": True}, NOW)
    await store.import_codes(spring.id, [(code, code) for code in ("S-1", "S-2", "S-3")], NOW, actor=ACTOR)
    await store.import_codes(shared.id, [("ALL", "ALL")], NOW, actor=ACTOR)
    db_id = (await store.create_database(account_id, "main", NOW)).id
    ann = await save_profile(store, db_id, "a" * 24, "ann@example.org", [], {}, NOW)
    bob = await save_profile(store, db_id, "b" * 24, "bob@example.org", [], {}, NOW)
    assert await store.update_code(spring.id, "S-1", None, EXPIRY, True, None, NOW, actor=ACTOR) is Outcome.DONE
    for minutes, program, code, profile in (
        (1, spring, "S-1", ann),
        (2, spring, "S-2", bob),
        (3, shared, "ALL", ann),
        (4, shared, "ALL", bob),
    ):
        at = NOW + timedelta(minutes=minutes)
        attached = await store.attach_code(
            program.id, code, code, profile.pk, program.multiple_usage, False, at, actor=ACTOR
        )
        assert attached is Outcome.DONE
    activated_at = NOW + timedelta(minutes=5)
    assert await store.activate(spring.id, "S-1", ann.pk, activated_at, actor=ACTOR) is Outcome.DONE

    held = await store.profile_codes(ann.pk, 10)
    assert held == [
        HeldCode(shared.id, "Shared", "ALL", NOW + timedelta(minutes=3), None, None),
        HeldCode(spring.id, "Spring", "S-1", NOW + timedelta(minutes=1), activated_at, EXPIRY),
    ]
    assert [item.code for item in await store.profile_codes(bob.pk, 10)] == ["ALL", "S-2"]
    assert await store.profile_codes(ann.pk, 1) == held[:1]
    assert await store.profile_codes(ann.pk + bob.pk + 100, 10) == []
