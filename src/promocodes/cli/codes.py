"""``promocodes import``, ``promocodes export`` and ``promocodes generate``: codes in and out of a program, in files
or streams; and ``promocodes history``: what happened to one code."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import io
import itertools
import operator
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from promocodes.cli.common import (
    DEFAULT_DATABASE_URL,
    AsJson,
    DatabaseUrl,
    command,
    err,
    out,
    print_json,
    services,
)
from promocodes.domain.codes import CodeColumn
from promocodes.schemas import MAX_GENERATED, ExportItem, GenerateRequest, HistoryRequest, ImportRequest, ProgramRef


@command
async def import_codes(
    file: Annotated[Path, typer.Argument(help="CSV (a `code` column, else the first one) or one code per line.")],
    program: Annotated[int, typer.Option("--program", help="The program (loyalty_id) to import into.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Codes per transaction.")] = 10_000,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Import codes from a file, with a progress bar; prints the inserted, duplicated and discarded counts."""
    if not file.is_file():
        raise ValueError(f"No such file: {file}")
    total_lines = _count_utf8_lines(file)
    counts = {"inserted": 0, "duplicated": 0, "discarded_by_limit": 0, "invalid": 0}
    async with services(database_url) as svc:
        principal = await svc.accounts.program_admin(program)
        with (
            file.open("r", encoding="utf-8-sig", newline="") as handle,
            Progress(
                TextColumn("Importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("lines"),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            ) as progress,
        ):
            task = progress.add_task("import", total=max(total_lines, 1))
            reader = csv.reader(handle)
            batches = _batches(CodeColumn().codes(reader), batch_size)
            # The next batch is read and parsed in a thread while the database stores this one: the parsing's
            # Python work overlaps the database's instead of adding to it. At most two batches are in memory.
            reading = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            try:
                while (batch := await reading) is not None:
                    lines = reader.line_num
                    reading = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                    request = ImportRequest(loyalty_id=program, codes=batch)
                    result = await svc.promocodes.import_codes(principal, request)
                    counts["inserted"] += result.inserted
                    counts["duplicated"] += result.duplicated
                    counts["discarded_by_limit"] += result.discarded_by_limit
                    # Every item is one of four: stored, duplicated, discarded by the limit, or invalid (400).
                    counts["invalid"] += len(batch) - result.inserted - result.duplicated - result.discarded_by_limit
                    progress.update(task, completed=min(lines, total_lines))
            finally:
                # An import that failed leaves a read under way: let it end before the file is closed under it.
                with contextlib.suppress(Exception):
                    await reading
            progress.update(task, completed=max(total_lines, 1))
    out.print(
        f"inserted {counts['inserted']}, duplicated {counts['duplicated']}, "
        f"discarded by limit {counts['discarded_by_limit']}, invalid {counts['invalid']}",
        highlight=False,
    )


def _count_utf8_lines(file: Path) -> int:
    """The file's line count, once it is known to be UTF-8 throughout. A file in another encoding is refused before
    anything is imported, naming the line and the byte, rather than failing halfway with the decoder's offset."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    with file.open("rb") as raw:
        try:
            for chunk in iter(lambda: raw.read(1 << 20), b""):
                decoder.decode(chunk)
                lines += chunk.count(b"\n")
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(_not_utf8(file)) from None
    return lines


def _not_utf8(file: Path) -> str:
    """Where the first byte that is not UTF-8 is, found line by line (only once a fast check has failed)."""
    with file.open("rb") as raw:
        for number, line in enumerate(raw, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return (
                    f"{file}: line {number} is not UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1}); "
                    "save the file as UTF-8"
                )
    return f"{file} is not UTF-8: save it as UTF-8"  # a sequence cut off at the very end of the file


def _batches(codes: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(itertools.islice(codes, size)):
        yield batch


@command
async def export(
    program: Annotated[int, typer.Option("--program", help="The program (loyalty_id) to export.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or ndjson.")] = "csv",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write; default stdout.")] = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Export every code of a program in creation order (streamed: memory stays flat)."""
    if fmt not in ("csv", "ndjson"):
        raise ValueError(f"Unknown format {fmt!r}: use csv or ndjson")
    async with services(database_url) as svc:
        principal = await svc.accounts.program_admin(program)
        pages = await svc.promocodes.export(principal, ProgramRef(loyalty_id=program))
        handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        count = 0
        try:
            if fmt == "csv":
                handle.write("code,attached,activated\r\n")
            async for page in pages:
                handle.write(_csv_page(page) if fmt == "csv" else _ndjson_page(page))
                count += len(page)
        finally:
            if output:
                handle.close()
    if output:
        err.print(f"Exported {count} codes to {output}", highlight=False)


_CSV_SPECIAL = re.compile('[,"\r\n]')
_code, _attached, _activated = (operator.attrgetter(name) for name in ("code", "attached", "activated"))


def _csv_page(page: list[ExportItem]) -> str:
    """A page as CSV lines (``csv.writer``'s dialect: minimal quoting, CRLF). A page of codes never attached that
    need no quoting — the usual one — is joined in one call; any other goes through ``csv.writer``."""
    codes = list(map(_code, page))
    untimed = not any(map(_attached, page)) and not any(map(_activated, page))  # UNSET is false
    if untimed and not _CSV_SPECIAL.search("".join(codes)):
        return ",,\r\n".join(codes) + ",,\r\n"
    text = io.StringIO()
    csv.writer(text).writerows([item.code, item.attached or "", item.activated or ""] for item in page)
    return text.getvalue()


_ndjson = msgspec.json.Encoder()


def _ndjson_page(page: list[ExportItem]) -> str:
    return "".join(_ndjson.encode(item).decode() + "\n" for item in page)


@command
async def generate(
    program: Annotated[int, typer.Option("--program", help="The program (loyalty_id) to generate into.")],
    count: Annotated[
        int, typer.Option("--count", min=1, max=MAX_GENERATED, help=f"New codes to make, 1 to {MAX_GENERATED:,}.")
    ],
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="# a digit, @ an upper-case letter, ? a letter or digit, \\ escapes; default: the program's.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write the new codes to, one per line.")
    ] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Generate --count new codes from a template in one transaction (all of them, or none), with a progress bar.

    Refused when the program's codes_limit would be passed, and when the new codes plus those the program holds of
    the template would be more than a thousandth of what the template can make (then use a longer template)."""
    request = GenerateRequest(loyalty_id=program, count=count, template=template)
    # Written beside the file and renamed when complete: a failed run leaves no file that looks finished.
    partial = output.with_name(output.name + ".partial") if output else None
    handle = partial.open("w", encoding="utf-8", newline="\n") if partial else None
    try:
        async with services(database_url) as svc:
            principal = await svc.accounts.program_admin(program)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("codes"),
                TimeElapsedColumn(),
                console=err,
                transient=True,  # gone when done: the summary, or the one error line, is what remains
            ) as progress:
                task = progress.add_task("Generating", total=count)

                def drawn(size: int) -> None:  # called once per batch, from the database's thread on SQLite
                    progress.advance(task, size)

                result, codes = await svc.promocodes.generate_streamed(principal, request, drawn)
                progress.update(task, completed=count)  # redrawn collisions made the draws run past the count
                if handle is not None:
                    writing = progress.add_task("Writing", total=count)
                    written = 0
                    async for code in codes:
                        handle.write(code + "\n")
                        written += 1
                        if written % 10_000 == 0:
                            progress.update(writing, completed=written)
                    progress.update(writing, completed=written)
        if handle is not None and partial is not None and output is not None:
            handle.close()
            partial.replace(output)
    finally:
        if handle is not None and partial is not None and not handle.closed:
            handle.close()
            partial.unlink(missing_ok=True)
    if as_json:
        print_json(result)
        return
    where = f", written to {output}" if output else ""
    out.print(
        f"generated {result.generated} codes from template {result.template} in program {program}{where}",
        highlight=False,
        markup=False,  # a template may hold `[`
    )


@command
async def history(
    code: Annotated[str, typer.Argument(help="The code, in any spelling the program accepts as the same.")],
    program: Annotated[int, typer.Option("--program", help="The program (loyalty_id) holding the code.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most events to show.")] = 100,
    after: Annotated[int, typer.Option(min=0, help="Show the events after this event id (the next page).")] = 0,
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Show a code's history, oldest first: every change, when, by which token, for which profile
    (docs/api.md#history). Changes made from the command line show the token name "command line"."""
    async with services(database_url) as svc:
        principal = await svc.accounts.program_admin(program)
        events = await svc.promocodes.history(
            principal, HistoryRequest(loyalty_id=program, code=code, limit=limit, after=after)
        )
    if as_json:
        print_json(events)
        return
    # When, what and who are what a reader scans: never cut or wrapped; the profile and the details wrap.
    table = Table(
        Column("id", no_wrap=True),
        Column("time", no_wrap=True),
        Column("event", no_wrap=True),
        "profile",
        "db",
        Column("token", no_wrap=True),
        "details",
    )
    for event in events:
        details = ", ".join(f"{name}: {'none' if value is None else value}" for name, value in event.details.items())
        db_id = "" if event.database_id is None else str(event.database_id)
        table.add_row(str(event.id), event.time, event.event, event.profile_id, db_id, event.token_name, details)
    out.print(table)
    if len(events) == limit:
        err.print(f"More may follow: --after {events[-1].id}", highlight=False)
