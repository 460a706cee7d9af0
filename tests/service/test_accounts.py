"""The operations the command line reaches the database through (``service.accounts``, ``service.migrations`` and
``TokenService.count_all``), on both adapters: it acts as the administrator of the account a command names."""

from __future__ import annotations

from pathlib import Path

import pytest

from promocodes.errors import BadRequest, NotFound
from promocodes.models import Principal, Role
from promocodes.schemas import ProgramCreate
from promocodes.service import Services
from promocodes.store import Store, open_store
from promocodes.store.migrations import migration_files

pytestmark = pytest.mark.anyio


async def test_an_account_is_found_by_name_as_its_administrator(store: Store) -> None:
    services = Services(store)
    assert await services.accounts.find_admin("acme") is None
    with pytest.raises(NotFound, match="Account 'acme' not found"):
        await services.accounts.admin("acme")
    created = await services.accounts.ensure_admin("acme")
    assert created.role is Role.ADMIN
    assert await services.accounts.ensure_admin("acme") == created  # created once, found after
    assert await services.accounts.find_admin("acme") == created
    assert await services.accounts.admin("acme") == created
    assert await services.accounts.find_admin("other") is None


@pytest.mark.parametrize("name", ["", "   ", "\t"])
async def test_an_account_is_never_created_without_a_name(store: Store, name: str) -> None:
    services = Services(store)
    with pytest.raises(BadRequest, match="Account name must not be empty"):
        await services.accounts.ensure_admin(name)
    with pytest.raises(BadRequest, match="Account name must not be empty"):
        await services.tokens.issue(name, Role.ADMIN)
    assert await services.accounts.find_admin(name) is None
    assert await services.accounts.find_admin("") is None


async def test_surrounding_white_space_is_not_part_of_an_account_name(store: Store) -> None:
    services = Services(store)
    assert await services.accounts.ensure_admin("  acme ") == await services.accounts.admin("acme")


async def test_a_program_leads_to_the_administrator_of_its_account(store: Store) -> None:
    services = Services(store)
    acme = await services.accounts.ensure_admin("acme")
    await services.accounts.ensure_admin("other")
    program = await services.programs.create(acme, ProgramCreate(name="Spring"))
    assert await services.accounts.program_admin(program.id) == Principal(acme.account_id, Role.ADMIN)
    with pytest.raises(NotFound, match=f"Program {program.id + 1} not found"):
        await services.accounts.program_admin(program.id + 1)


async def test_count_all_counts_the_tokens_of_every_account(store: Store) -> None:
    services = Services(store)
    assert await services.tokens.count_all() == 0
    await services.tokens.issue("acme", Role.ADMIN)
    await services.tokens.issue("other", Role.READ)
    assert await services.tokens.count_all() == 2


async def test_migrations_report_what_is_applied_and_apply_what_is_pending(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/new.db")
    await store.open()
    try:
        services = Services(store)
        versions = [version for version, _ in migration_files("sqlite")]
        assert await services.migrations.status() == ([], versions)
        assert await services.migrations.apply() == versions
        assert await services.migrations.status() == (versions, [])
        assert await services.migrations.apply() == []  # up to date: nothing left to apply
    finally:
        await store.close()
