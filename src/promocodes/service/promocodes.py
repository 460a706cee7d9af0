"""The promo-code operations and their rules (docs/api.md#promo-code-methods): the seven of Altcraft, and a code's
history. No SQL here: the store makes each state change atomically, with its history event, and reports an
:class:`~promocodes.models.Outcome`; this module decides what is allowed before asking, and what each outcome means
to the caller. Each change names the caller (``principal.actor``) for the history (docs/api.md#history)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import NamedTuple

import msgspec

from promocodes.domain.codes import WHITE_SPACE, clean_code, code_key
from promocodes.domain.templates import Template
from promocodes.domain.times import format_rfc3339, parse_rfc3339, utcnow
from promocodes.errors import BadRequest, Conflict, LimitExceeded, NotFound, PromocodeError
from promocodes.models import Actor, CodeEvent, CodeState, ImportOutcome, Outcome, Principal, Program
from promocodes.schemas import (
    ActivateRequest,
    AttachRequest,
    AttachResult,
    CodeReport,
    CodeRequest,
    DetachRequest,
    ExportItem,
    HistoryEvent,
    HistoryRequest,
    ImportItem,
    ImportRequest,
    ImportResult,
    ProfileSelector,
    ProgramRef,
    UpdateRequest,
)
from promocodes.service.profiles import ProfileLookup, ProfileService, lookup_from
from promocodes.service.programs import ProgramService
from promocodes.store import Store

DUPLICATED = "Promocode duplicated"  # literal text documented by Altcraft
LIMIT_TEXT = "Program limit exceeded"
IN_THREAD_ITEMS = 10_000  # import batches larger than this are judged and reported off the event loop
GENERATION_ATTEMPTS = 16  # a template at most 1/1000 full collides this often with odds below 1e-48


# The error each refused write reports (docs/api.md#error-codes: 404 for a missing code, 409 for a forbidding state).
_REFUSALS: dict[Outcome, tuple[type[PromocodeError], str]] = {
    Outcome.NOT_ATTACHED: (Conflict, "Promo code is not attached to any profile"),
    Outcome.ATTACHED_ELSEWHERE: (Conflict, "Promo code is attached to another profile"),
    Outcome.SEVERAL_PROFILES: (Conflict, "Promo code is attached to several profiles and cannot be detached"),
    Outcome.ALREADY_ACTIVATED: (Conflict, "Promo code already activated"),
    Outcome.EXPIRED: (Conflict, "Promo code expired"),
    Outcome.LIMIT_REACHED: (LimitExceeded, LIMIT_TEXT),
}


def _fail(outcome: Outcome, code: str, program_id: int) -> PromocodeError:
    if outcome is Outcome.NO_CODE:
        return NotFound(f"Promo code {code!r} not found in program {program_id}")
    error, text = _REFUSALS[outcome]
    return error(text)


class PromocodeService:
    def __init__(self, store: Store, programs: ProgramService, profiles: ProfileService) -> None:
        self.store = store
        self.programs = programs
        self.profiles = profiles

    async def _profile_pk(self, principal: Principal, program: Program, lookup: ProfileLookup | None) -> int | None:
        """The profile named by the request, if any. A universal code is activated per binding, so for a
        ``multiple_usage`` program the profile is required (docs/api.md#activate)."""
        if lookup is not None:
            return (await self.profiles.resolve(principal, lookup)).pk
        if program.multiple_usage:
            raise BadRequest(
                f"Program {program.id} has multiple-usage codes: identify the profile (`db_id` and matching fields)"
            )
        return None

    async def _require_code(self, program: Program, code: str) -> None:
        """404 for a code the program does not hold: objects are checked before their state
        (docs/api.md#order-of-checks)."""
        if await self.store.code_state(program.id, code_key(code, program.case_sensitive)) is None:
            raise _fail(Outcome.NO_CODE, code, program.id)

    # --- import -------------------------------------------------------------------------------------------------

    async def import_codes(self, principal: Principal, request: ImportRequest) -> ImportResult:
        """Each item is judged on its own and answered in input order (docs/api.md#import); the request as a whole
        succeeds. The second occurrence of a code in one request is a duplicate.

        A large batch is judged and reported in a worker thread: a million codes cost seconds of Python, which
        on the event loop would stall every other request of the process meanwhile."""
        if not request.codes:
            raise BadRequest("Field `codes` must hold at least one code")
        program = await self.programs.program(principal, request.loyalty_id)
        in_thread = len(request.codes) > IN_THREAD_ITEMS
        judge = functools.partial(_judge, request.codes, program.case_sensitive)
        judged = await asyncio.to_thread(judge) if in_thread else judge()
        outcome = await self.store.import_codes(
            program.id, judged.unique, utcnow(), program.case_sensitive, actor=principal.actor
        )
        report = functools.partial(_report, request.codes, judged, outcome)
        return await asyncio.to_thread(report) if in_thread else report()

    # --- get ----------------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, request: CodeRequest) -> CodeReport:
        code = clean_code(request.code)
        program = await self.programs.program(principal, request.loyalty_id)
        state = await self.store.code_state(program.id, code_key(code, program.case_sensitive))
        if state is None:
            raise _fail(Outcome.NO_CODE, code, program.id)
        return code_report(program, state, utcnow())

    # --- activate and update ------------------------------------------------------------------------------------

    async def activate(self, principal: Principal, request: ActivateRequest) -> None:
        """Redeem a code (docs/api.md#activate): attached, not activated, not expired, in an active program. A second
        activation is 409, never a silent success, so a shop can refuse the discount."""
        code = clean_code(request.code)
        lookup = _optional_lookup(request)
        program = await self.programs.program(principal, request.loyalty_id)
        profile_pk = await self._profile_pk(principal, program, lookup)
        if not program.active:
            await self._require_code(program, code)
            raise Conflict(f"Program {program.id} is inactive")
        outcome = await self.store.activate(
            program.id, code_key(code, program.case_sensitive), profile_pk, utcnow(), actor=principal.actor
        )
        if outcome is not Outcome.DONE:
            raise _fail(outcome, code, program.id)

    async def update(self, principal: Principal, request: UpdateRequest) -> None:
        """Change the expiry and/or the activation, all or nothing (docs/api.md#update)."""
        code = clean_code(request.code)
        activated = None if request.activated is msgspec.UNSET else request.activated
        set_expiry = request.expire_date is not msgspec.UNSET
        if activated is None and not set_expiry:
            raise BadRequest("Nothing to update: give `activated` and/or `expire_date`")
        expire_date: datetime | None = None
        if isinstance(request.expire_date, str) and request.expire_date.strip():
            expire_date = parse_rfc3339(request.expire_date, "expire_date")
        lookup = _optional_lookup(request)
        program = await self.programs.program(principal, request.loyalty_id)
        profile_pk = await self._profile_pk(principal, program, lookup) if activated is not None else None
        if activated and not program.active:
            await self._require_code(program, code)
            raise Conflict(f"Program {program.id} is inactive")
        outcome = await self.store.update_code(
            program.id,
            code_key(code, program.case_sensitive),
            profile_pk,
            expire_date,
            set_expiry,
            activated,
            utcnow(),
            actor=principal.actor,
        )
        if outcome not in (Outcome.DONE, Outcome.UNCHANGED):
            raise _fail(outcome, code, program.id)

    # --- attach and detach --------------------------------------------------------------------------------------

    async def attach(self, principal: Principal, request: AttachRequest) -> AttachResult:
        """Bind the named code, or one from the pool, to a profile (docs/api.md#attach)."""
        # An empty `<code/>` in XML or `code=` in a form means "no code", as an absent one does.
        code = clean_code(request.code) if request.code and request.code.strip(WHITE_SPACE) else None
        lookup = lookup_from(request)
        program = await self.programs.program(principal, request.loyalty_id)
        profile = await self.profiles.resolve(principal, lookup)
        now = utcnow()
        if not program.issuing_allowed(now):
            if code is not None and not program.create_on_attach:
                await self._require_code(program, code)
            state = "inactive" if not program.active else "outside its validity range"
            raise Conflict(f"Program {program.id} is {state}: no codes can be attached")
        actor = principal.actor
        if code is not None:
            return AttachResult(code=await self._attach_code(program, code, profile.pk, now, actor))
        picked = await self.store.attach_from_pool(
            program.id, profile.pk, program.one_code_per_profile, now, actor=actor
        )
        if picked is not None:
            return AttachResult(code=picked)
        if program.generate_on_attach and program.template:
            template = Template(program.template)
            return AttachResult(code=await self._attach_generated(program, template, profile.pk, actor))
        raise Conflict("No free promo codes")

    async def _attach_code(self, program: Program, code: str, profile_pk: int, now: datetime, actor: Actor) -> str:
        key = code_key(code, program.case_sensitive)
        outcome = await self.store.attach_code(
            program.id,
            code,
            key,
            profile_pk,
            program.multiple_usage,
            program.create_on_attach,
            now,
            program.case_sensitive,
            actor=actor,
        )
        if outcome not in (Outcome.DONE, Outcome.UNCHANGED):
            raise _fail(outcome, code, program.id)
        if program.case_sensitive:
            return code
        # Answer with the spelling the program stores, which may differ in case from the one asked for.
        state = await self.store.code_state(program.id, key)
        return state.code if state is not None else code

    async def _attach_generated(self, program: Program, template: Template, profile_pk: int, actor: Actor) -> str:
        """No free code: make one from the template. A collision with an existing code is retried with a new
        draw; the store's claim makes sure even a collision is never bound twice."""
        for _ in range(GENERATION_ATTEMPTS):
            code = template.generate()
            key = code_key(code, program.case_sensitive)
            outcome = await self.store.attach_code(
                program.id,
                code,
                key,
                profile_pk,
                program.multiple_usage,
                True,
                utcnow(),
                program.case_sensitive,
                actor=actor,
            )
            if outcome is Outcome.DONE:
                return code
            if outcome is Outcome.LIMIT_REACHED:
                raise _fail(outcome, code, program.id)
        raise Conflict(f"Could not generate a free code from template {template.pattern!r}; widen the template")

    async def detach(self, principal: Principal, request: DetachRequest) -> None:
        """Unbind a code from exactly the resolved profile; a redeemed code is a record and never returns to the
        pool (docs/api.md#detach)."""
        code = clean_code(request.code)
        lookup = lookup_from(request)
        program = await self.programs.program(principal, request.loyalty_id)
        profile = await self.profiles.resolve(principal, lookup)
        outcome = await self.store.detach(
            program.id, code_key(code, program.case_sensitive), profile.pk, utcnow(), actor=principal.actor
        )
        if outcome is Outcome.ALREADY_ACTIVATED:
            raise Conflict("Promo code is activated and cannot be detached")
        if outcome is not Outcome.DONE:
            raise _fail(outcome, code, program.id)

    # --- history ------------------------------------------------------------------------------------------------

    async def history(self, principal: Principal, request: HistoryRequest) -> list[HistoryEvent]:
        """The code's events, oldest first, after the event id ``after`` (docs/api.md#history). The code is found
        as ``get`` finds it, and an unknown one is 404 like there."""
        code = clean_code(request.code)
        program = await self.programs.program(principal, request.loyalty_id)
        events = await self.store.code_history(
            program.id, code_key(code, program.case_sensitive), request.after, request.limit
        )
        if events is None:
            raise _fail(Outcome.NO_CODE, code, program.id)
        return [history_event(event) for event in events]

    # --- export -------------------------------------------------------------------------------------------------

    async def export(self, principal: Principal, request: ProgramRef) -> AsyncIterator[ExportItem]:
        """Check access now, then stream: the caller gets an iterator whose memory does not grow with the
        program (docs/api.md#export_all)."""
        program = await self.programs.program(principal, request.loyalty_id)
        return _export_items(self.store, program.id)


async def _export_items(store: Store, program_id: int) -> AsyncIterator[ExportItem]:
    async for item in store.export_codes(program_id):
        export = ExportItem(code=item.code)
        if item.attached is not None:
            export.attached = format_rfc3339(item.attached)
        if item.activated is not None:
            export.activated = format_rfc3339(item.activated)
        yield export


class _Judged(NamedTuple):
    """An import batch judged item by item: the cleaned code and its key, or the error that refuses it; the first
    occurrence of each key, in order (what the store is asked to insert), and where it stands in that list."""

    verdicts: list[tuple[str, str] | PromocodeError]
    unique: list[tuple[str, str]]
    first_index: dict[str, int]


def _judge(codes: list[str], case_sensitive: bool) -> _Judged:
    verdicts: list[tuple[str, str] | PromocodeError] = []
    first_index: dict[str, int] = {}
    unique: list[tuple[str, str]] = []
    for raw in codes:
        try:
            code = clean_code(raw)
        except PromocodeError as error:
            verdicts.append(error)
            continue
        key = code_key(code, case_sensitive)
        verdicts.append((code, key))
        if key not in first_index:
            first_index[key] = len(unique)
            unique.append((code, key))
    return _Judged(verdicts, unique, first_index)


def _report(codes: list[str], judged: _Judged, outcome: ImportOutcome) -> ImportResult:
    """Import's answer: one item per code sent, in order, with the counters."""
    items: list[ImportItem] = []
    seen: set[str] = set()
    counts = {"inserted": 0, "duplicated": 0, "discarded": 0}
    for raw, verdict in zip(codes, judged.verdicts, strict=True):
        if isinstance(verdict, PromocodeError):
            items.append(ImportItem(code=raw, error=verdict.code, error_text=verdict.text))
            continue
        code, key = verdict
        if key in seen or (judged.first_index[key] < outcome.considered and key not in outcome.inserted):
            counts["duplicated"] += 1
            items.append(ImportItem(code=code, error=500, error_text=DUPLICATED))
        elif key in outcome.inserted:
            counts["inserted"] += 1
            items.append(ImportItem(code=code, error=0, error_text=""))
        else:
            counts["discarded"] += 1
            items.append(ImportItem(code=code, error=LimitExceeded.code, error_text=LIMIT_TEXT))
        seen.add(key)
    return ImportResult(
        data=items,
        discarded_by_limit=counts["discarded"],
        duplicated=counts["duplicated"],
        inserted=counts["inserted"],
    )


def _optional_lookup(selector: ProfileSelector) -> ProfileLookup | None:
    """activate and update take a profile only when the request names one."""
    return lookup_from(selector) if selector.names_a_profile() else None


def code_report(program: Program, state: CodeState, now: datetime) -> CodeReport:
    """``get``'s answer (docs/api.md#get): ``expired`` equals ``expire_date`` once it has passed; a universal
    code shows its latest binding, is activated when any binding is, and adds the totals."""
    expired = state.is_expired(now)
    latest = state.latest
    report = CodeReport(
        created=format_rfc3339(state.created),
        is_attached=latest is not None,
        is_activated=state.activated_count > 0,
        is_expired=expired,
        attached=format_rfc3339(latest.attached if latest else None),
        activated=format_rfc3339(state.last_activated),
        expired=format_rfc3339(state.expire_date) if expired else "",
        expire_date=format_rfc3339(state.expire_date),
        loyalty_id=program.id,
        code=state.code,
    )
    if latest is not None:
        report.database_id = latest.database_id
        report.profile_id = latest.profile_id
    if program.multiple_usage:
        report.attached_count = state.attached_count
        report.activated_count = state.activated_count
    return report


def history_event(event: CodeEvent) -> HistoryEvent:
    """One item of ``history``'s answer (docs/api.md#history): no profile concerned is ``""`` and ``null``, as
    text and numbers are shown empty elsewhere; ``details`` is always an object."""
    return HistoryEvent(
        id=event.id,
        time=format_rfc3339(event.time),
        event=event.event.value,
        profile_id=event.profile_id or "",
        database_id=event.database_id,
        token_name=event.token_name,
        details=event.details,
    )
