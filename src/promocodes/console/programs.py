"""The console's program pages (docs/console.md#programs): create, edit, pause or activate, delete; one program's
figures and charts; generate, export, and import by uploading a file.

Every change goes through the same services as the API, with the signed-in token's principal, after the form's
CSRF token and the role the API asks for the same change: program settings need ``manage`` (an ``admin`` token, as
``programs/create|update|delete``), codes need ``change codes`` (``write`` or ``admin``, as ``import`` and
``generate``). A form forged for a weaker token is refused by :func:`authorize` whatever the page offered.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import dataclasses
import functools
import io
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from promocodes.console.charts import Charts, charts
from promocodes.console.session import Session
from promocodes.console.views import PREFIX, convert, read_form, render, status_of
from promocodes.domain.codes import CodeColumn
from promocodes.domain.times import utcnow
from promocodes.errors import BadRequest, Forbidden, PayloadTooLarge, PromocodeError, RequestTimeout
from promocodes.models import SETTINGS, Capability, Principal, Setting
from promocodes.schemas import (
    GenerateRequest,
    ImportRequest,
    ProgramCreate,
    ProgramDelete,
    ProgramRef,
    ProgramUpdate,
    ProgramView,
    Stats,
)
from promocodes.service.auth import authorize
from promocodes.service.programs import program_view

if TYPE_CHECKING:
    from promocodes.console.routes import Console

#: the longest range the charts draw, in days (a year, leap day included)
MAX_CHART_DAYS = 366
#: the range drawn when none is asked for: the last 30 days, today included
DEFAULT_CHART_DAYS = 30
#: codes per import call of an upload: one transaction each, and what the upload holds in memory at most
UPLOAD_BATCH = 10_000
#: the invalid lines an upload's answer describes (the count covers them all)
UPLOAD_SHOWN_ERRORS = 5
#: how far into a file an upload looks for signs of a binary file before it imports anything
UPLOAD_SNIFF_BYTES = 64 * 1024
_FIELD = re.compile(r"`(\w+)`|\$\.(\w+)")
_DONE = {
    "created": "The program was created.",
    "updated": "The settings were saved.",
    "unchanged": "Nothing was changed.",
    "paused": "The program was paused: attach hands out no code until it is activated again.",
    "activated": "The program was activated.",
}


def _field_of(error: PromocodeError) -> str:
    """The setting a validation error names (``Field `name` …`` from the service, ``$.name`` from the decoder), so
    the form shows it next to that field; "" when it names none."""
    names = {setting.name for setting in SETTINGS}
    for match in _FIELD.finditer(error.text):
        name = match.group(1) or match.group(2)
        if name in names:
            return name
    # The template's own checks (domain/templates.py) speak of "Template …": the only setting that is one.
    return "template" if error.text.startswith("Template") else ""


def _form_value(setting: Setting, shown: Any) -> str:
    """A setting as its form field shows it: dates as ``datetime-local`` (UTC), counts as digits, none as ""."""
    if shown is None:
        return ""
    if setting.kind is datetime:
        return str(shown).removesuffix("Z")[:19]
    return str(shown)


def _from_form(setting: Setting, form: dict[str, str]) -> Any:
    """A setting from its form field, in the API's wire form (the service then parses and checks it exactly as
    for ``programs/create``): an unticked box is false, an empty count or date is none."""
    if setting.kind is bool:
        return form.get(setting.name) in ("on", "true", "1")
    value = form.get(setting.name, "")
    if setting.kind is int:
        value = value.strip()
        if not value:
            return None
        if not re.fullmatch(r"-?\d{1,18}", value):
            raise BadRequest(f"Field `{setting.name}` must be a whole number")
        return int(value)
    if setting.kind is datetime:
        value = value.strip()
        if not value:
            return ""
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"Field `{setting.name}`: give a date and time such as 2026-12-31T23:59") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # the form's dates are UTC, as its label says
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"Field `{name}`: give a date such as 2026-05-31") from None


def chart_range(query: dict[str, str], today: date) -> tuple[date, date]:
    """The charts' days from the form's ``from`` and ``to`` (either may be left out): by default the last
    :data:`DEFAULT_CHART_DAYS` days to today; at most :data:`MAX_CHART_DAYS` days, ``from`` not after ``to``."""
    last = _day(query["to"], "to") if query.get("to") else today
    first = _day(query["from"], "from") if query.get("from") else last - timedelta(days=DEFAULT_CHART_DAYS - 1)
    if first > last:
        raise BadRequest("Field `from` must not be later than `to`")
    if (last - first).days + 1 > MAX_CHART_DAYS:
        raise BadRequest(f"The charts show at most {MAX_CHART_DAYS} days: shorten the range")
    return first, last


@dataclass
class UploadReport:
    """What an upload did: the import counters summed over its batches, and the first invalid lines."""

    inserted: int = 0
    duplicated: int = 0
    discarded_by_limit: int = 0
    invalid: int = 0
    lines: int = 0
    errors: list[str] = field(default_factory=list)
    #: why the upload stopped before the end of the file ("" when it was read to the end)
    stopped: str = ""


class _Upload:
    """An upload parsed as it arrives (``multipart/form-data``): the CSRF field first, then the file, decoded as
    UTF-8 and cut into CSV rows line by line, the codes gathered into batches for the import service.

    Memory holds one network chunk, one partial line and one batch, whatever the file's size."""

    def __init__(self, csrf_valid: Callable[[str | None], bool]) -> None:
        self.csrf_valid = csrf_valid
        self.checked = False
        self.csrf = bytearray()
        self.part = ""
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.disposition = ""
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.partial = ""
        self.column = CodeColumn()
        self.pending: list[str] = []
        self.line_numbers: list[int] = []
        self.lines = 0
        self.file_bytes = 0
        self.sniffed = bytearray()
        self.had_file = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.part, self.disposition = "", ""

    def _header_end(self) -> None:
        if bytes(self.header_field).lower() == b"content-disposition":
            self.disposition = self.header_value.decode("latin-1")
        self.header_field.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.part = options.get(b"name", b"").decode("latin-1")
        if self.part == "file":
            # The CSRF field comes first in the form: a file before a valid token is refused unread.
            if not self.checked:
                raise Forbidden(_STALE_FORM)
            self.had_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part == "csrf":
            self.csrf.extend(data[start:end])
            if len(self.csrf) > 1024:
                raise Forbidden(_STALE_FORM)
        elif self.part == "file":
            chunk = data[start:end]
            self.file_bytes += len(chunk)
            if len(self.sniffed) < UPLOAD_SNIFF_BYTES:
                self.sniffed.extend(chunk[: UPLOAD_SNIFF_BYTES - len(self.sniffed)])
                if b"\x00" in self.sniffed:
                    raise BadRequest("The file is not a text file (it holds NUL bytes): upload a CSV or text file")
            self._text(self._decode(chunk))

    def _part_end(self) -> None:
        if self.part == "csrf":
            self.checked = self.csrf_valid(self.csrf.decode("utf-8", "replace"))
            if not self.checked:
                raise Forbidden(_STALE_FORM)
        elif self.part == "file":
            self._text(self._decode(b"", final=True))
            if self.partial:
                self._rows([self.partial])
                self.partial = ""
        self.part = ""

    def _decode(self, chunk: bytes, final: bool = False) -> str:
        try:
            return self.decoder.decode(chunk, final=final)
        except UnicodeDecodeError as error:
            line = self.lines + chunk[: error.start].count(b"\n") + 1
            raise BadRequest(
                f"Line {line} of the file is not UTF-8: save the file as UTF-8 and upload it again"
            ) from None

    def _text(self, text: str) -> None:
        if not text:
            return
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        if len(self.partial) > 64 * 1024:
            raise BadRequest(f"Line {self.lines + 1} of the file is longer than 64 KiB: that is no promo code")
        self._rows(lines)

    def _rows(self, lines: list[str]) -> None:
        for row in csv.reader(line.rstrip("\r") for line in lines):
            self.lines += 1
            code = self.column.code(row)
            if code is not None:
                self.pending.append(code)
                self.line_numbers.append(self.lines)

    def take(self) -> tuple[list[str], list[int]]:
        """The next batch: at most :data:`UPLOAD_BATCH` codes, with their line numbers."""
        batch, numbers = self.pending[:UPLOAD_BATCH], self.line_numbers[:UPLOAD_BATCH]
        del self.pending[:UPLOAD_BATCH], self.line_numbers[:UPLOAD_BATCH]
        return batch, numbers


_STALE_FORM = "The form has expired or did not come from this console: load the page and try again"


class ProgramPages:
    """The program pages' handlers, over the console's sessions and the API's services."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.services = console.pipeline.services
        self.settings = console.pipeline.settings

    def routes(self) -> list[Route]:
        signed_in = self.console._signed_in
        return [
            Route("/programs/new", signed_in(self.new_form), methods=["GET"]),
            Route("/programs/new", signed_in(self.create), methods=["POST"]),
            Route("/programs/{loyalty_id:int}", signed_in(self.program), methods=["GET"]),
            Route("/programs/{loyalty_id:int}/edit", signed_in(self.edit_form), methods=["GET"]),
            Route("/programs/{loyalty_id:int}/edit", signed_in(self.edit), methods=["POST"]),
            Route("/programs/{loyalty_id:int}/active", signed_in(self.set_active), methods=["POST"]),
            Route("/programs/{loyalty_id:int}/delete", signed_in(self.delete_form), methods=["GET"]),
            Route("/programs/{loyalty_id:int}/delete", signed_in(self.delete), methods=["POST"]),
            Route("/programs/{loyalty_id:int}/generate", signed_in(self.generate), methods=["POST"]),
            Route("/programs/{loyalty_id:int}/export", signed_in(self.export), methods=["GET"]),
            Route("/programs/{loyalty_id:int}/import", signed_in(self.upload), methods=["POST"]),
        ]

    # --- shared ---------------------------------------------------------------------------------------------

    def _context(self, request: Request, session: Session, principal: Principal, **page: Any) -> dict[str, Any]:
        return self.console._context(request, session, principal, **page)

    async def _checked_form(
        self, request: Request, session: Session, principal: Principal, need: Capability
    ) -> dict[str, str]:
        """The posted form, once its CSRF token and the role are known good; nothing is looked at before."""
        form = await read_form(request)
        if not self.console.signer.csrf_valid(session, form.get("csrf")):
            raise Forbidden(_STALE_FORM)
        authorize(principal, need)
        return form

    async def _view(self, request: Request, principal: Principal, stats: bool = True) -> ProgramView:
        """The program, with its statistics as ``programs/get`` answers them unless ``stats`` is false (they cost
        a count of its expired codes: docs/console.md#speed)."""
        loyalty_id = request.path_params["loyalty_id"]
        if not stats:
            return program_view(await self.services.programs.program(principal, loyalty_id))
        return await self.services.programs.get(principal, ProgramRef(loyalty_id=loyalty_id))

    def _redirect(self, loyalty_id: int, **query: str) -> RedirectResponse:
        tail = "" if not query else "?" + "&".join(f"{name}={value}" for name, value in query.items())
        return RedirectResponse(f"{PREFIX}/programs/{loyalty_id}{tail}", status_code=303)

    # --- one program ----------------------------------------------------------------------------------------

    async def program(self, request: Request, session: Session, principal: Principal) -> Response:
        return await self.program_page(request, session, principal)

    async def program_page(
        self,
        request: Request,
        session: Session,
        principal: Principal,
        status: int = 200,
        **page: Any,
    ) -> Response:
        """The program page: figures, charts over the asked range, settings, the code search and the forms that
        add or take codes. A bad range is shown next to the range form, over the default range."""
        view = await self._view(request, principal)
        query = dict(request.query_params)
        today = utcnow().date()
        try:
            first, last = chart_range(query, today)
            range_error = ""
        except BadRequest as error:
            first, last = chart_range({}, today)
            range_error, status = error.text, 400
        history = await self.services.programs.history(principal, view.id, first, last)
        stats = (
            view.stats if isinstance(view.stats, Stats) else Stats(total=0, free=0, attached=0, activated=0, expired=0)
        )
        drawn: Charts = charts(stats, history)
        done = _DONE.get(query.get("done", ""), "")
        for name in ("generated", "imported"):
            if query.get(name, "").isdigit():
                done = f"{int(query[name])} codes were {name}."
        settings = [(setting.name, getattr(view, setting.name), setting.description) for setting in SETTINGS]
        context = self._context(
            request,
            session,
            principal,
            title=view.name,
            program=view,
            settings=settings,
            charts=drawn,
            first=first.isoformat(),
            last=last.isoformat(),
            max_days=MAX_CHART_DAYS,
            range_error=range_error,
            done=done,
            upload_limit=self.settings.max_body_bytes,
            **page,
        )
        return render("program.html", context, status)

    # --- create, edit, pause, delete ------------------------------------------------------------------------

    def _form_page(
        self,
        request: Request,
        session: Session,
        principal: Principal,
        values: dict[str, str],
        program: ProgramView | None,
        error: PromocodeError | None = None,
    ) -> Response:
        field_name = "" if error is None else _field_of(error)
        context = self._context(
            request,
            session,
            principal,
            title=f"Edit {program.name}" if program else "New program",
            program=program,
            settings=SETTINGS,
            values=values,
            field_errors={field_name: error.text} if error is not None and field_name else {},
            error=error.text if error is not None and not field_name else "",
        )
        return render("program_form.html", context, 200 if error is None else status_of(error))

    async def new_form(self, request: Request, session: Session, principal: Principal) -> Response:
        authorize(principal, Capability.MANAGE)
        values = {s.name: _form_value(s, s.default) if not s.required else "" for s in SETTINGS}
        return self._form_page(request, session, principal, values, None)

    async def create(self, request: Request, session: Session, principal: Principal) -> Response:
        form = await self._checked_form(request, session, principal, Capability.MANAGE)
        try:
            fields = {setting.name: _from_form(setting, form) for setting in SETTINGS}
            created = await self.services.programs.create(principal, convert(fields, ProgramCreate))
        except BadRequest as error:
            return self._form_page(request, session, principal, _echo(form), None, error)
        return self._redirect(created.id, done="created")

    async def edit_form(self, request: Request, session: Session, principal: Principal) -> Response:
        authorize(principal, Capability.MANAGE)
        view = await self._view(request, principal, stats=False)
        values = {s.name: _form_value(s, getattr(view, s.name)) for s in SETTINGS}
        return self._form_page(request, session, principal, values, view)

    async def edit(self, request: Request, session: Session, principal: Principal) -> Response:
        """Save the settings the form changed (only those: an untouched ``case_sensitive`` of a program holding
        codes is not sent, so it is not refused)."""
        form = await self._checked_form(request, session, principal, Capability.MANAGE)
        view = await self._view(request, principal, stats=False)
        try:
            wanted = {setting.name: _from_form(setting, form) for setting in SETTINGS}
            changes = {name: value for name, value in wanted.items() if not _same(value, getattr(view, name))}
            if not changes:
                return self._redirect(view.id, done="unchanged")
            await self.services.programs.update(principal, convert({"loyalty_id": view.id, **changes}, ProgramUpdate))
        except BadRequest as error:
            return self._form_page(request, session, principal, _echo(form), view, error)
        return self._redirect(view.id, done="updated")

    async def set_active(self, request: Request, session: Session, principal: Principal) -> Response:
        form = await self._checked_form(request, session, principal, Capability.MANAGE)
        active = form.get("active") == "1"
        loyalty_id = request.path_params["loyalty_id"]
        await self.services.programs.update(
            principal, convert({"loyalty_id": loyalty_id, "active": active}, ProgramUpdate)
        )
        return self._redirect(loyalty_id, done="activated" if active else "paused")

    async def delete_form(self, request: Request, session: Session, principal: Principal) -> Response:
        """The confirmation: what the delete takes with it, in counts."""
        authorize(principal, Capability.MANAGE)
        view = await self._view(request, principal)
        context = self._context(request, session, principal, title=f"Delete {view.name}?", program=view)
        return render("program_delete.html", context)

    async def delete(self, request: Request, session: Session, principal: Principal) -> Response:
        """Delete, with ``force`` only when the confirmation showed attached codes: a code bound after the page
        was shown makes the delete refuse (409) instead of taking it unseen."""
        form = await self._checked_form(request, session, principal, Capability.MANAGE)
        loyalty_id = request.path_params["loyalty_id"]
        force = form.get("force") == "1"
        await self.services.programs.delete(principal, ProgramDelete(loyalty_id=loyalty_id, force=force))
        return RedirectResponse(f"{PREFIX}/programs?deleted={loyalty_id}", status_code=303)

    # --- codes in and out -----------------------------------------------------------------------------------

    async def generate(self, request: Request, session: Session, principal: Principal) -> Response:
        form = await self._checked_form(request, session, principal, Capability.WRITE_CODES)
        loyalty_id = request.path_params["loyalty_id"]
        asked = convert({"loyalty_id": loyalty_id, "count": form.get("count", "").strip()}, GenerateRequest)
        result = await self.services.promocodes.generate(principal, asked)
        return self._redirect(loyalty_id, generated=str(result.generated))

    async def export(self, request: Request, session: Session, principal: Principal) -> Response:
        """Every code as CSV (``code,attached,activated``), streamed page by page from the export service: memory
        holds one page whatever the program's size."""
        loyalty_id = request.path_params["loyalty_id"]
        pages = await self.services.promocodes.export(principal, ProgramRef(loyalty_id=loyalty_id))

        async def lines() -> AsyncIterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["code", "attached", "activated"])
            async for page in pages:  # one page of the export at a time
                writer.writerows([item.code, item.attached or "", item.activated or ""] for item in page)
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        headers = {
            "content-disposition": f'attachment; filename="program-{loyalty_id}-codes.csv"',
            "cache-control": "no-store",
        }
        return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)

    async def upload(self, request: Request, session: Session, principal: Principal) -> Response:
        """Import the codes of an uploaded file (docs/console.md#import-by-upload), read as it arrives: the role,
        the program, the declared size and the form's CSRF field are checked before any line of the file is read;
        then every :data:`UPLOAD_BATCH` codes go to the import service (one transaction each)."""
        wants_json = request.headers.get("x-requested-with") == "XMLHttpRequest"
        authorize(principal, Capability.WRITE_CODES)
        view = await self._view(request, principal, stats=False)
        try:
            report = await self._import_stream(request, session, principal, view.id)
        except PromocodeError as error:
            if wants_json:
                return JSONResponse({"error": error.text}, status_code=status_of(error))
            raise
        if wants_json:
            return JSONResponse(dataclasses.asdict(report))  # what upload.js reads
        context = self._context(
            request, session, principal, title=f"Import into {view.name}", program=view, report=report
        )
        return render("program_import.html", context)

    async def _import_stream(
        self, request: Request, session: Session, principal: Principal, loyalty_id: int
    ) -> UploadReport:
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise BadRequest("Upload the file with the form (multipart/form-data)")
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            raise BadRequest("An upload must say its size (Content-Length)")
        limit = self.settings.max_body_bytes
        if int(declared) > limit:
            raise PayloadTooLarge(f"The file is larger than the upload limit of {limit // (1024 * 1024)} MiB")
        upload = _Upload(lambda token: self.console.signer.csrf_valid(session, token))
        parser = MultipartParser(boundary, cast(Any, upload.callbacks()))
        report = UploadReport()
        started = False
        received = 0
        stream = request.stream().__aiter__()
        while True:
            try:
                chunk = await _next_chunk(stream, self.settings.body_timeout)
            except StopAsyncIteration:
                break
            except ClientDisconnect:
                report.stopped = "the upload was cut off"
                return report
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"The file is larger than the upload limit of {limit // (1024 * 1024)} MiB")
            stopped = _parse(functools.partial(parser.write, chunk), started)
            if stopped:
                report.stopped = stopped
                return report
            # A binary file is refused before any import: the first batch waits until the sniffed bytes are in.
            while len(upload.pending) >= UPLOAD_BATCH and (started or len(upload.sniffed) >= UPLOAD_SNIFF_BYTES):
                started = True
                await self._import_batch(principal, loyalty_id, upload, report)
        stopped = _parse(parser.finalize, started)
        if stopped:
            report.stopped = stopped
            return report
        if not upload.had_file:
            raise BadRequest("Choose a file to upload")
        while upload.pending:
            await self._import_batch(principal, loyalty_id, upload, report)
        report.lines = upload.lines
        return report

    async def _import_batch(self, principal: Principal, loyalty_id: int, upload: _Upload, report: UploadReport) -> None:
        codes, numbers = upload.take()
        result = await self.services.promocodes.import_codes(
            principal, ImportRequest(loyalty_id=loyalty_id, codes=codes)
        )
        report.inserted += result.inserted
        report.duplicated += result.duplicated
        report.discarded_by_limit += result.discarded_by_limit
        for item, number in zip(result.data, numbers, strict=True):
            if item.error == BadRequest.code:
                report.invalid += 1
                if len(report.errors) < UPLOAD_SHOWN_ERRORS:
                    report.errors.append(f"line {number}: {item.error_text}")
        report.lines = upload.lines


def _parse(step: Callable[[], object], started: bool) -> str:
    """Run one step of the multipart parser: "" when it went well; why the upload stops when batches were imported
    already (they stay: docs/console.md#import-by-upload); else the refusal is raised and nothing was imported."""
    try:
        step()
    except MultipartParseError:
        error: PromocodeError = BadRequest("The upload is not a well-formed form (multipart/form-data)")
    except PromocodeError as refused:
        error = refused
    else:
        return ""
    if not started:
        raise error
    return error.text


async def _next_chunk(stream: AsyncIterator[bytes], timeout: float) -> bytes:
    """The next chunk of the body, or 408 when the client sends nothing for ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await stream.__anext__()
    except TimeoutError:
        raise RequestTimeout(f"The upload sent nothing for {timeout:g} seconds") from None


def _same(wanted: Any, current: Any) -> bool:
    """Whether a setting from the form equals the program's (none and "" alike: both mean "not set")."""
    return ("" if wanted is None else wanted) == ("" if current is None else current)


def _echo(form: dict[str, str]) -> dict[str, str]:
    """The form's fields as sent, to show them again with the error."""
    return {setting.name: form.get(setting.name, "") for setting in SETTINGS}
