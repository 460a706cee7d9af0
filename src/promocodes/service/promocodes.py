"""The promo-code operations and their rules (docs/api.md#promo-code-methods): the seven of Altcraft, and a code's
history. No SQL here: the store makes each state change atomically, with its history event, and reports an
:class:`~promocodes.models.Outcome`; this module decides what is allowed before asking, and what each outcome means
to the caller. Each change names the caller (``principal.actor``) for the history (docs/api.md#history)."""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import NamedTuple

import msgspec

from promocodes.domain.codes import WHITE_SPACE, clean_code, clean_codes, code_key, code_keys
from promocodes.domain.templates import Template
from promocodes.domain.times import format_rfc3339, from_micros, parse_rfc3339, utcnow
from promocodes.errors import BadRequest, Conflict, LimitExceeded, NotFound, PromocodeError
from promocodes.models import Actor, CodeEvent, CodeState, Generation, ImportOutcome, Outcome, Principal, Program
from promocodes.schemas import (
    MAX_RETURNED_CODES,
    ActivateRequest,
    AttachRequest,
    AttachResult,
    CodeReport,
    CodeRequest,
    DetachRequest,
    ExportItem,
    GenerateRequest,
    GenerateResult,
    HistoryEvent,
    HistoryRequest,
    ImportItem,
    ImportRequest,
    ImportResult,
    ProfileSelector,
    ProgramRef,
    UpdateRequest,
)
from promocodes.service.idempotency import NOT_FINAL, NotFinal, final
from promocodes.service.profiles import ProfileLookup, ProfileService, lookup_from
from promocodes.service.programs import ProgramService, missing_program
from promocodes.store import Store

DUPLICATED = "Promocode duplicated"  # literal text documented by Altcraft
LIMIT_TEXT = "Program limit exceeded"
IN_THREAD_ITEMS = 10_000  # import batches larger than this are judged and reported off the event loop
GENERATION_ATTEMPTS = 16  # a template at most 1/1000 full collides this often with odds below 1e-48
# docs/api.md#generate: a program may hold at most this share of the codes a template can make, so that a fresh
# draw collides with a held code at most once in a thousand tries.
KEY_SPACE_SHARE = 1000


# The error each refused write reports (docs/api.md#error-codes: 404 for a missing code, 409 for a forbidding state).
_REFUSALS: dict[Outcome, tuple[type[PromocodeError], str]] = {
    Outcome.NOT_ATTACHED: (Conflict, "Promo code is not attached to any profile"),
    Outcome.ATTACHED_ELSEWHERE: (Conflict, "Promo code is attached to another profile"),
    Outcome.SEVERAL_PROFILES: (Conflict, "Promo code is attached to several profiles and cannot be detached"),
    Outcome.ALREADY_ACTIVATED: (Conflict, "Promo code already activated"),
    Outcome.EXPIRED: (Conflict, "Promo code expired"),
    Outcome.LIMIT_REACHED: (LimitExceeded, LIMIT_TEXT),
}


def needs_profile(program_id: int) -> BadRequest:
    """A universal code is activated per binding: the request must say whose (docs/api.md#activate)."""
    return BadRequest(
        f"Program {program_id} has multiple-usage codes: identify the profile (`db_id` and matching fields)"
    )


def _fail(outcome: Outcome, code: str, program_id: int) -> PromocodeError:
    if outcome is Outcome.NO_CODE:
        return NotFound(f"Promo code {code!r} not found in program {program_id}")
    if outcome is Outcome.PROGRAM_INACTIVE:
        return Conflict(f"Program {program_id} is inactive")
    if outcome is Outcome.NO_PROGRAM:
        return missing_program(program_id)
    if outcome is Outcome.NEEDS_PROFILE:
        return needs_profile(program_id)
    error, text = _REFUSALS[outcome]
    return error(text)


# The answers of the writes: what each store outcome means to the caller. Pure, because each also runs inside the
# store's transaction, to keep the answer of a request with an idempotency key (docs/api.md#idempotent-retries).


def _succeeded(allowed: tuple[Outcome, ...], code: str, program_id: int, outcome: Outcome) -> None:
    if outcome not in allowed:
        raise _fail(outcome, code, program_id)


def _generation_answer(
    request: GenerateRequest, pattern: str, key_space: int, generation: Generation
) -> GenerateResult:
    """Generate's answer, or its refusal: past the key-space guard (400) or the program's limit (402)."""
    if generation.outcome is Outcome.KEY_SPACE_FULL:
        held = generation.wanted - request.count
        raise BadRequest(
            f"Template `{pattern}` can make {key_space} codes, and a program may hold at most a "
            f"thousandth of them, {generation.allowed}: {request.count} asked for plus {held} held that match "
            f"it make {generation.wanted}. Use a longer template"
        )
    if generation.outcome is Outcome.LIMIT_REACHED:
        held = generation.wanted - request.count
        raise LimitExceeded(
            f"{LIMIT_TEXT}: {request.count} codes asked for plus {held} held make {generation.wanted}, "
            f"over the program's codes_limit of {generation.allowed}; nothing was generated"
        )
    result = GenerateResult(generated=request.count, template=pattern)
    if request.return_codes:
        result.codes = generation.codes
    return result


def _attached(answered: str, code: str, program_id: int, outcome: Outcome) -> AttachResult:
    _succeeded((Outcome.DONE, Outcome.UNCHANGED), code, program_id, outcome)
    return AttachResult(code=answered)


def _picked(generating: bool, picked: str | None) -> AttachResult | NotFinal:
    if picked is not None:
        return AttachResult(code=picked)
    if generating:
        return NOT_FINAL  # the pool is empty: a code is generated next
    raise Conflict("No free promo codes")


def _generated(code: str, program_id: int, outcome: Outcome) -> AttachResult | NotFinal:
    if outcome is Outcome.DONE:
        return AttachResult(code=code)
    if outcome is Outcome.LIMIT_REACHED:
        raise _fail(outcome, code, program_id)
    return NOT_FINAL  # the draw collided with a code held elsewhere: nothing changed, draw again


def _detached(code: str, program_id: int, outcome: Outcome) -> None:
    if outcome is Outcome.ALREADY_ACTIVATED:
        raise Conflict("Promo code is activated and cannot be detached")
    _succeeded((Outcome.DONE,), code, program_id, outcome)


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
            raise needs_profile(program.id)
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
        report = final(functools.partial(_report, request.codes, judged), in_thread=in_thread)
        outcome = await self.store.import_codes(
            program.id, judged.unique, utcnow(), program.case_sensitive, actor=principal.actor
        )
        return await asyncio.to_thread(report, outcome) if in_thread else report(outcome)

    # --- generate -----------------------------------------------------------------------------------------------

    async def generate(
        self, principal: Principal, request: GenerateRequest, progress: Callable[[int], None] | None = None
    ) -> GenerateResult:
        """Make exactly ``count`` new codes from a template, or none (docs/api.md#generate). ``progress``, when
        given, is told the number of codes each batch draws, as it draws them (the command line's progress bar)."""
        generation, answer = await self._generate(principal, request, progress)
        return answer(generation)

    async def generate_streamed(
        self, principal: Principal, request: GenerateRequest, progress: Callable[[int], None] | None = None
    ) -> tuple[GenerateResult, AsyncIterator[str]]:
        """:meth:`generate`, then the new codes in creation order, read back page by page after the commit, so
        that a million of them never sit in memory at once (the command line's ``-o``)."""
        generation, answer = await self._generate(principal, request, progress)
        return answer(generation), _generated_codes(self.store, request.loyalty_id, generation)

    async def _generate(
        self, principal: Principal, request: GenerateRequest, progress: Callable[[int], None] | None
    ) -> tuple[Generation, Callable[[Generation], GenerateResult]]:
        if request.return_codes and request.count > MAX_RETURNED_CODES:
            raise BadRequest(
                f"Field `return_codes` needs `count` of at most {MAX_RETURNED_CODES}; {request.count} were asked for"
            )
        # A template sent is a field: judged before the program is looked up (docs/api.md#order-of-checks). An
        # empty one (`<template/>` in XML, `template=` in a form) means "none", as an absent one does.
        template = Template(request.template) if request.template else None
        program = await self.programs.program(principal, request.loyalty_id)
        if template is None:
            if not program.template:
                raise BadRequest(f"Field `template` is required: program {program.id} has no template of its own")
            template = Template(program.template)
        case_sensitive = program.case_sensitive
        key_space = template.key_space_in(case_sensitive)

        def draw(count: int) -> tuple[list[str], list[str]]:
            codes = template.generate_many(count)
            if progress is not None:
                progress(count)
            return codes, [code_key(code, case_sensitive) for code in codes]

        answer = final(functools.partial(_generation_answer, request, template.pattern, key_space))
        generation = await self.store.generate_codes(
            program.id,
            range(request.count),
            draw,
            template.key_pattern(case_sensitive),
            key_space // KEY_SPACE_SHARE,
            utcnow(),
            case_sensitive,
            request.return_codes,
            actor=principal.actor,
        )
        return generation, answer

    # --- get ----------------------------------------------------------------------------------------------------

    async def get(self, principal: Principal, request: CodeRequest) -> CodeReport:
        code = clean_code(request.code)
        found = await self.store.program_and_code_state(principal.account_id, request.loyalty_id, code)
        if found is None:
            raise missing_program(request.loyalty_id)
        program, state = found
        if state is None:
            raise _fail(Outcome.NO_CODE, code, program.id)
        return code_report(program, state, utcnow())

    # --- activate and update ------------------------------------------------------------------------------------

    async def activate(self, principal: Principal, request: ActivateRequest) -> None:
        """Redeem a code (docs/api.md#activate): attached, not activated, not expired, in an active program. A second
        activation is 409, never a silent success, so a shop can refuse the discount.

        The store judges the whole request in the activation's transaction — the program (404), its rule for
        multiple-usage codes (400), the code (404), the program's state and the code's (409) — so a checkout costs
        one operation (and may share its transaction with others, ``store.redemptions``). A request naming a
        profile reads the program first, so that a missing program is reported before a missing profile."""
        code = clean_code(request.code)
        lookup = _optional_lookup(request)
        profile_pk = None
        if lookup is not None:
            await self.programs.program(principal, request.loyalty_id)
            profile_pk = (await self.profiles.resolve(principal, lookup)).pk
        answer = final(functools.partial(_succeeded, (Outcome.DONE,), code, request.loyalty_id))
        answer(
            await self.store.activate(
                request.loyalty_id, code, profile_pk, utcnow(), actor=principal.actor, account_id=principal.account_id
            )
        )

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
        answer = final(functools.partial(_succeeded, (Outcome.DONE, Outcome.UNCHANGED), code, program.id))
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
        answer(outcome)

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
            return await self._attach_code(program, code, profile.pk, now, actor)
        template = program.template if program.generate_on_attach else None
        answer = final(functools.partial(_picked, bool(template)))
        picked = answer(
            await self.store.attach_from_pool(program.id, profile.pk, program.one_code_per_profile, now, actor=actor)
        )
        if isinstance(picked, AttachResult):
            return picked
        assert template, "the pool's answer is final unless a code is to be generated"
        return await self._attach_generated(program, Template(template), profile.pk, actor)

    async def _attach_code(
        self, program: Program, code: str, profile_pk: int, now: datetime, actor: Actor
    ) -> AttachResult:
        key = code_key(code, program.case_sensitive)
        answered = code
        if not program.case_sensitive:
            # The answer names the code as the program stores it, which may differ in case from the one asked for.
            # Read before the write, so that the answer is known inside the transaction that keeps it
            # (docs/api.md#idempotent-retries); a code this attach creates is stored as asked.
            state = await self.store.code_state(program.id, key)
            answered = state.code if state is not None else code
        answer = final(functools.partial(_attached, answered, code, program.id))
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
        return answer(outcome)

    async def _attach_generated(
        self, program: Program, template: Template, profile_pk: int, actor: Actor
    ) -> AttachResult:
        """No free code: make one from the template. A collision with an existing code is retried with a new
        draw; the store's claim makes sure even a collision is never bound twice."""
        for _ in range(GENERATION_ATTEMPTS):
            code = template.generate()
            key = code_key(code, program.case_sensitive)
            answer = final(functools.partial(_generated, code, program.id))
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
            generated = answer(outcome)
            if isinstance(generated, AttachResult):
                return generated
        raise Conflict(f"Could not generate a free code from template {template.pattern!r}; widen the template")

    async def detach(self, principal: Principal, request: DetachRequest) -> None:
        """Unbind a code from exactly the resolved profile; a redeemed code is a record and never returns to the
        pool (docs/api.md#detach)."""
        code = clean_code(request.code)
        lookup = lookup_from(request)
        program = await self.programs.program(principal, request.loyalty_id)
        profile = await self.profiles.resolve(principal, lookup)
        answer = final(functools.partial(_detached, code, program.id))
        answer(
            await self.store.detach(
                program.id, code_key(code, program.case_sensitive), profile.pk, utcnow(), actor=principal.actor
            )
        )

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

    async def export(self, principal: Principal, request: ProgramRef) -> AsyncIterator[list[ExportItem]]:
        """Check access now, then stream: the caller gets an iterator of pages whose memory does not grow with the
        program (docs/api.md#export_all); what an export sees is said in ``Store.export_batches``."""
        program = await self.programs.program(principal, request.loyalty_id)
        return _export_pages(self.store, program.id)


async def _generated_codes(store: Store, program_id: int, generation: Generation) -> AsyncIterator[str]:
    """The codes a generation made: the program's codes in its id range, page by page."""
    after_id = generation.after_id
    while after_id < generation.last_id:
        page = await store.export_page(program_id, after_id, 5000)
        for item in page:
            if item.id > generation.last_id:
                return
            yield item.code
        if not page:
            return
        after_id = page[-1].id


async def _export_pages(store: Store, program_id: int) -> AsyncIterator[list[ExportItem]]:
    async for rows in store.export_batches(program_id):
        # One struct per code made by map (no Python frame per row); only the rows with a time — codes ever
        # attached, usually few — are then made again with their times formatted.
        items = list(map(ExportItem, map(_CODE, rows)))
        if set(map(_TIMES, rows)) != {(None, None)}:
            for index, (_, code, attached, activated) in enumerate(rows):
                if attached is not None or activated is not None:
                    items[index] = _export_item(code, attached, activated)
        yield items


_CODE, _TIMES = operator.itemgetter(1), operator.itemgetter(2, 3)  # of an export row: id, code, attached, activated


def _export_item(code: str, attached: int | None, activated: int | None) -> ExportItem:
    item = ExportItem(code=code)
    if attached is not None:
        item.attached = format_rfc3339(from_micros(attached))
    if activated is not None:
        item.activated = format_rfc3339(from_micros(activated))
    return item


class _Judged(NamedTuple):
    """An import batch judged item by item: the cleaned code, or the error that refuses it; the keys of the valid
    items, in order; the first occurrence of each key, in order (what the store is asked to insert); and where each
    key's first occurrence stands in that list."""

    verdicts: list[str | BadRequest]
    keys: list[str]
    unique: list[tuple[str, str]]
    first_index: dict[str, int]

    def all_distinct_and_valid(self) -> bool:
        """No item refused, no key twice: the items are exactly the rows handed to the store, in order."""
        return len(self.unique) == len(self.verdicts)


def _judge(codes: list[str], case_sensitive: bool) -> _Judged:
    # Batch calls (domain.codes.clean_codes, code_keys) rather than a function call per code: a million-code
    # import is judged at C speed when its codes are valid and distinct, the usual case.
    verdicts = clean_codes(codes)
    valid = [verdict for verdict in verdicts if type(verdict) is str]
    keys = code_keys(valid, case_sensitive)
    # A dict keeps the LAST index of a repeated key; when no key repeats that is also the first.
    first_index = dict(zip(keys, range(len(keys)), strict=True))
    if len(first_index) == len(keys):
        return _Judged(verdicts, keys, list(zip(valid, keys, strict=True)), first_index)
    first_index.clear()
    unique: list[tuple[str, str]] = []
    for code, key in zip(valid, keys, strict=True):
        if key not in first_index:
            first_index[key] = len(unique)
            unique.append((code, key))
    return _Judged(verdicts, keys, unique, first_index)


def _report(codes: list[str], judged: _Judged, outcome: ImportOutcome) -> ImportResult:
    """Import's answer: one item per code sent, in order, with the counters."""
    if judged.all_distinct_and_valid() and len(outcome.inserted) == len(judged.unique):
        # Every item stored (the usual answer): no per-item judgement to make.
        stored = [ImportItem(code=code, error=0, error_text="") for code, _ in judged.unique]
        return ImportResult(data=stored, discarded_by_limit=0, duplicated=0, inserted=len(stored))
    items: list[ImportItem] = []
    seen: set[str] = set()
    counts = {"inserted": 0, "duplicated": 0, "discarded": 0}
    keys = iter(judged.keys)
    for raw, verdict in zip(codes, judged.verdicts, strict=True):
        if isinstance(verdict, BadRequest):
            items.append(ImportItem(code=raw, error=verdict.code, error_text=verdict.text))
            continue
        code, key = verdict, next(keys)
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
