"""Programs (the ``loyalty_id`` containers, docs/api.md#program-settings) and their statistics
(docs/api.md#program-statistics)."""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Any, Literal

import msgspec

from promocodes.domain.templates import Template
from promocodes.domain.times import format_rfc3339, parse_rfc3339, utcnow
from promocodes.errors import BadRequest, Conflict, NotFound
from promocodes.models import PROGRAM_SETTINGS, SETTINGS, Principal, Program, ProgramHistory, Setting
from promocodes.schemas import (
    ProgramCreate,
    ProgramDelete,
    ProgramRef,
    ProgramSettings,
    ProgramUpdate,
    ProgramView,
    Stats,
)
from promocodes.service.idempotency import final
from promocodes.store import Store


def _shown(setting: Setting, value: Any) -> Any:
    return format_rfc3339(value) if setting.kind is datetime else value


def missing_program(program_id: int) -> NotFound:
    """The 404 of a program the caller's account does not hold: another account's program looks just the same."""
    return NotFound(f"Program {program_id} not found")


def program_view(program: Program, stats: Stats | None = None) -> ProgramView:
    return ProgramView(
        id=program.id,
        **{setting.name: _shown(setting, getattr(program, setting.name)) for setting in SETTINGS},
        created=format_rfc3339(program.created),
        stats=msgspec.UNSET if stats is None else stats,
    )


def _parsed(setting: Setting, value: Any) -> Any:
    """One given setting, parsed: "" and null clear an optional text or date, a date is read as RFC 3339, and
    surrounding white space is removed from required text (a name of spaces is then refused as empty)."""
    if setting.kind not in (str, datetime):
        return value
    if setting.optional:
        value = value or None
    elif isinstance(value, str):
        value = value.strip()
    if setting.kind is datetime and value is not None:
        value = parse_rfc3339(value, setting.name)
    return value


def _given_settings(request: ProgramSettings) -> dict[str, Any]:
    """The settings the request gives, parsed."""
    return {
        setting.name: _parsed(setting, getattr(request, setting.name))
        for setting in SETTINGS
        if getattr(request, setting.name) is not msgspec.UNSET
    }


def _check(settings: dict[str, Any]) -> None:
    """Rules on the settings as they will stand after the change (so an update is checked as a whole)."""
    if not settings.get("name"):
        raise BadRequest("Field `name` must not be empty")
    if any(char.isspace() for char in settings.get("short_name") or ""):
        raise BadRequest("Field `short_name` must not contain spaces; use underscores")
    if settings.get("template") is not None:
        Template(settings["template"])  # raises BadRequest naming what is wrong
    if settings.get("generate_on_attach") and settings.get("template") is None:
        raise BadRequest("Field `generate_on_attach` needs a `template` to generate codes from")
    valid_from: datetime | None = settings.get("valid_from")
    valid_to: datetime | None = settings.get("valid_to")
    if valid_from is not None and valid_to is not None and valid_from > valid_to:
        raise BadRequest("Field `valid_from` must not be later than `valid_to`")


def _updated(program_id: int, updated: Program | Literal[False] | None) -> ProgramView:
    """``programs/update``'s answer to the store's result (pure: it also runs inside the store's transaction, to keep
    the answer of a request with an idempotency key, docs/api.md#idempotent-retries)."""
    if updated is None:
        raise missing_program(program_id)
    if updated is False:
        raise Conflict("`case_sensitive` cannot change while the program holds codes")
    return program_view(updated)


def _deleted(program_id: int, deleted: bool | None) -> None:
    """``programs/delete``'s answer to the store's result (pure, as :func:`_updated`)."""
    if deleted is None:
        raise missing_program(program_id)
    if not deleted:
        raise Conflict(f"Program {program_id} still holds attached codes; pass force: true to delete it")


class ProgramService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def program(self, principal: Principal, program_id: int) -> Program:
        """The caller's program; another account's program is reported exactly like a missing one."""
        program = await self.store.get_program(principal.account_id, program_id)
        if program is None:
            raise missing_program(program_id)
        return program

    async def create(self, principal: Principal, request: ProgramCreate) -> ProgramView:
        settings = _given_settings(request)
        _check(settings)
        answer = final(program_view)
        return answer(await self.store.create_program(principal.account_id, settings, utcnow()))

    async def list(self, principal: Principal) -> list[ProgramView]:
        return [program_view(program) for program in await self.store.list_programs(principal.account_id)]

    async def get(self, principal: Principal, request: ProgramRef) -> ProgramView:
        program = await self.program(principal, request.loyalty_id)
        stats = await self.store.program_stats(program.id, utcnow())
        return program_view(program, Stats(**msgspec.structs.asdict(stats)))

    async def history(self, principal: Principal, program_id: int, first: date, last: date) -> ProgramHistory:
        """The program's counters per UTC day from ``first`` to ``last`` (docs/console.md#one-program): what its
        charts are drawn from. The caller bounds the range (the console: at most a year)."""
        program = await self.program(principal, program_id)
        return await self.store.program_history(program.id, first, last)

    async def update(self, principal: Principal, request: ProgramUpdate) -> ProgramView:
        changes = _given_settings(request)
        if not changes:
            raise BadRequest("Nothing to update: give at least one program setting")

        def judge(current: Program) -> bool:
            """Check the settings as they will stand (raises BadRequest); True when the program must be empty.
            Called by the store on the locked row, inside the transaction that writes."""
            _check({**{name: getattr(current, name) for name in PROGRAM_SETTINGS}, **changes})
            # Stored comparison keys were made under the old setting: changing it would strand existing codes, so
            # it may change only while the program is empty.
            return "case_sensitive" in changes and changes["case_sensitive"] != current.case_sensitive

        answer = final(functools.partial(_updated, request.loyalty_id))
        return answer(await self.store.update_program(principal.account_id, request.loyalty_id, changes, judge))

    async def delete(self, principal: Principal, request: ProgramDelete) -> None:
        answer = final(functools.partial(_deleted, request.loyalty_id))
        answer(await self.store.delete_program(principal.account_id, request.loyalty_id, request.force))
