"""``promocodes``: run the server, migrate, and manage tokens, programs and codes from a shell.

The command line talks to the database directly, through the same services as the HTTP API, acting as the
administrator of the account concerned. Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import functools
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promocodes.config import DEFAULT_DATABASE_URL, DEFAULT_MAX_BODY_BYTES, Settings, mask_password
from promocodes.domain.times import utcnow
from promocodes.errors import NotFound, PromocodeError
from promocodes.models import Principal, Role
from promocodes.schemas import ImportRequest, ProgramCreate, ProgramRef
from promocodes.service import Services
from promocodes.store import open_store

T = TypeVar("T")

app = typer.Typer(
    help="Self-hosted promo-code server, wire-compatible with the Altcraft promo-code API v1.1.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
token_app = typer.Typer(help="Create and list API tokens.", no_args_is_help=True)
program_app = typer.Typer(help="Create and list loyalty programs.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(program_app, name="program")

out = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="PROMOCODES_DATABASE_URL",
        help="sqlite:///file.db (relative), sqlite:////abs/file.db, or postgresql://user@host:port/dbname.",
    ),
]
Account = Annotated[str, typer.Option("--account", help="Account name; created when missing.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def command(function: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T | None]:
    """Run an async command; turn every expected failure into one line on stderr and exit code 1."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T | None:
        try:
            return asyncio.run(function(*args, **kwargs))
        except PromocodeError as error:
            raise fail(error.text) from None
        except BrokenPipeError:  # `promocodes export | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            raise fail("Interrupted", 130) from None
        except Exception as error:  # a bug: still one line, with what is needed to report it
            raise fail(f"Unexpected {type(error).__name__}: {error}") from None

    return run


@asynccontextmanager
async def services(database_url: str, migrate: bool = True) -> AsyncIterator[Services]:
    store = open_store(database_url)
    await store.open()
    try:
        if migrate:
            await store.migrate()
        yield Services(store)
    finally:
        await store.close()


async def account_admin(svc: Services, account: str) -> Principal:
    """The administrator of an existing account."""
    account_id = await svc.store.find_account(account)
    if account_id is None:
        raise NotFound(f"Account {account!r} not found")
    return Principal(account_id=account_id, role=Role.ADMIN)


async def program_admin(svc: Services, program_id: int) -> Principal:
    """The administrator of whichever account owns the program."""
    account_id = await svc.store.program_account(program_id)
    if account_id is None:
        raise NotFound(f"Program {program_id} not found")
    return Principal(account_id=account_id, role=Role.ADMIN)


# --- serve and migrate -------------------------------------------------------------------------------------------


@app.command()
def serve(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    max_body_bytes: Annotated[
        int, typer.Option(envvar="PROMOCODES_MAX_BODY_BYTES", min=1, help="Larger bodies get HTTP 413.")
    ] = DEFAULT_MAX_BODY_BYTES,
    rate_limit: Annotated[
        int, typer.Option(envvar="PROMOCODES_RATE_LIMIT", min=0, help="Requests per second per token; 0 = off.")
    ] = 0,
) -> None:
    """Migrate the database, then serve the API. On a database without tokens, print a ready admin token.

    Every other setting comes from its PROMOCODES_* environment variable (see the README's settings table)."""
    settings = dataclasses.replace(
        Settings.from_env(), database_url=database_url, max_body_bytes=max_body_bytes, rate_limit=rate_limit
    )
    _check_port(host, port)
    token = command(_prepare)(settings)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if token:
        out.print("\n[bold green]First start:[/] created account [bold]default[/] and an admin token (shown once):")
        out.print(f"\n    [bold]{token}[/]\n", highlight=False, soft_wrap=True)
        out.print("Try it:", highlight=False)
        out.print(
            f"    curl -s {base}/api/v1.1/promocodes/programs/create -H 'Authorization: Bearer {token}' "
            "-H 'Content-Type: application/json' -d '{\"name\": \"Spring sale\"}'\n",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"Serving the promo-code API on {base} ({mask_password(database_url)})", highlight=False)
    os.environ.update(settings.to_env())  # worker processes build their app from the environment
    from promocodes.http import server

    server.run(settings, host, port, workers)


def _check_port(host: str, port: int) -> None:
    """Say so in one line, before migrating anything, when the address cannot be listened on."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise fail(f"Cannot listen on {host}:{port}: {error.strerror or error}") from None


async def _prepare(settings: Settings) -> str | None:
    async with services(settings.database_url) as svc:
        if await svc.store.count_tokens():
            return None
        created = await svc.tokens.issue("default", Role.ADMIN, "created on first start")
        return created.token if isinstance(created.token, str) else None


@app.command()
@command
async def migrate(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """Apply the schema migrations that the database does not have yet."""
    async with services(database_url, migrate=False) as svc:
        applied = await svc.store.migrate()
    out.print(f"Applied {', '.join(applied)}" if applied else "Database is up to date", highlight=False)


# --- tokens ------------------------------------------------------------------------------------------------------


@token_app.command("create")
@command
async def token_create(
    account: Account,
    role: Annotated[Role, typer.Option("--role", help="admin, write or read.")],
    name: Annotated[str, typer.Option("--name", help="A label to recognise the token by.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create a token (and the account, if it does not exist). The token is printed once; keep it."""
    async with services(database_url) as svc:
        created = await svc.tokens.issue(account, role, name)
    if as_json:
        payload = {"token": created.token, "account": account, "role": created.role, "id": created.id, "name": name}
        sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
    else:
        out.print(f"Created {created.role} token {created.id} for account {account!r}:", highlight=False)
        out.print(str(created.token), highlight=False, soft_wrap=True)


@token_app.command("list")
@command
async def token_list(account: Account = "default", database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """List an account's tokens (never the tokens themselves: only their hashes are stored)."""
    async with services(database_url) as svc:
        tokens = await svc.tokens.list(await account_admin(svc, account))
    table = Table("id", "role", "name", "created", "revoked")
    for view in tokens:
        table.add_row(str(view.id), view.role, view.name, view.created, view.revoked)
    out.print(table)


# --- programs ----------------------------------------------------------------------------------------------------


@program_app.command("create")
@command
async def program_create(
    name: Annotated[str, typer.Option("--name", help="Program name.")],
    account: Account = "default",
    short_name: Annotated[str, typer.Option(help="Name used in templates; no spaces.")] = "",
    multiple_usage: Annotated[bool, typer.Option(help="Codes may be bound to many profiles.")] = False,
    case_sensitive: Annotated[bool, typer.Option(help="Compare codes exactly (else by case fold).")] = True,
    codes_limit: Annotated[int | None, typer.Option(min=0, help="Most codes the program may hold.")] = None,
    template: Annotated[str | None, typer.Option(help="Generation pattern: # digit, @ letter, ? either.")] = None,
    generate_on_attach: Annotated[bool, typer.Option(help="Generate a code when the pool is empty.")] = False,
    one_code_per_profile: Annotated[bool, typer.Option(help="A profile holds at most one code.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create a loyalty program and print its id (the `loyalty_id` of the API)."""
    request = ProgramCreate(
        name=name,
        short_name=short_name,
        multiple_usage=multiple_usage,
        case_sensitive=case_sensitive,
        codes_limit=codes_limit,
        template=template,
        generate_on_attach=generate_on_attach,
        one_code_per_profile=one_code_per_profile,
    )
    async with services(database_url) as svc:
        account_id = await svc.store.ensure_account(account, utcnow())
        view = await svc.programs.create(Principal(account_id=account_id, role=Role.ADMIN), request)
    out.print(f"Created program {view.id} ({view.name!r}) in account {account!r}", highlight=False)


@program_app.command("list")
@command
async def program_list(account: Account = "default", database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """List an account's programs with their code counts."""
    async with services(database_url) as svc:
        principal = await account_admin(svc, account)
        views = [
            await svc.programs.get(principal, ProgramRef(loyalty_id=p.id)) for p in await svc.programs.list(principal)
        ]
    table = Table("id", "name", "active", "multiple usage", "total", "free", "attached", "activated", "expired")
    for view in views:
        stats = view.stats
        counts = [stats.total, stats.free, stats.attached, stats.activated, stats.expired] if stats else []
        table.add_row(str(view.id), view.name, str(view.active), str(view.multiple_usage), *map(str, counts))
    out.print(table)


# --- import and export -------------------------------------------------------------------------------------------


@app.command("import")
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
    with file.open("rb") as raw:
        total_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: raw.read(1 << 20), b""))
    counts = {"inserted": 0, "duplicated": 0, "discarded_by_limit": 0, "invalid": 0}
    async with services(database_url) as svc:
        principal = await program_admin(svc, program)
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
            for batch in _batches(_read_codes(reader), batch_size):
                result = await svc.promocodes.import_codes(principal, ImportRequest(loyalty_id=program, codes=batch))
                counts["inserted"] += result.inserted
                counts["duplicated"] += result.duplicated
                counts["discarded_by_limit"] += result.discarded_by_limit
                counts["invalid"] += sum(1 for item in result.data if item.error == 400)
                progress.update(task, completed=min(reader.line_num, total_lines))
            progress.update(task, completed=max(total_lines, 1))
    out.print(
        f"inserted {counts['inserted']}, duplicated {counts['duplicated']}, "
        f"discarded by limit {counts['discarded_by_limit']}, invalid {counts['invalid']}",
        highlight=False,
    )


def _read_codes(reader: Iterator[list[str]]) -> Iterator[str]:
    """Codes from a CSV with a ``code`` header column, a CSV without a header (first column), or plain lines."""
    column = 0
    for number, row in enumerate(reader):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 0:
            header = [cell.strip().lower() for cell in row]
            if "code" in header:
                column = header.index("code")
                continue
        if column < len(row) and row[column].strip():
            yield row[column]


def _batches(codes: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for code in codes:
        batch.append(code)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@app.command()
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
        principal = await program_admin(svc, program)
        items = await svc.promocodes.export(principal, ProgramRef(loyalty_id=program))
        handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        count = 0
        try:
            writer = csv.writer(handle) if fmt == "csv" else None
            if writer is not None:
                writer.writerow(["code", "attached", "activated"])
            async for item in items:
                if writer is not None:
                    writer.writerow([item.code, item.attached or "", item.activated or ""])
                else:
                    handle.write(msgspec.json.encode(item).decode() + "\n")
                count += 1
        finally:
            if output:
                handle.close()
    if output:
        err.print(f"Exported {count} codes to {output}", highlight=False)


def main() -> None:
    app()
