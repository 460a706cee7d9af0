"""``promocodes``: run the server, migrate, and manage tokens, programs and codes from a shell.

The command line talks to the database directly, through the same services as the HTTP API, acting as the
administrator of the account concerned. Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import socket
from importlib.metadata import version
from typing import Annotated

import typer
from rich.table import Table

from promocodes.cli import backup, codes, databases, programs, status, tokens, webhooks
from promocodes.cli.common import (
    DEFAULT_DATABASE_URL,
    DatabaseUrl,
    command,
    fail,
    out,
    print_json,
    services,
    sqlite_file,
)
from promocodes.cli.settings import with_settings
from promocodes.config import Settings, env_name, mask_password, shown_settings
from promocodes.models import Role

app = typer.Typer(
    help="Self-hosted promo-code server, wire-compatible with the Altcraft promo-code API v1.1.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Usage errors as click prints them — "Error: No such command 'programs'." on one line after the usage —
    # rather than inside a Rich box (every error of this CLI is one plain line).
    rich_markup_mode=None,
)
app.add_typer(tokens.app, name="token")
app.add_typer(programs.app, name="program")
app.add_typer(databases.app, name="database")
app.add_typer(webhooks.app, name="webhooks")
app.command("import")(codes.import_codes)
app.command("export")(codes.export)
app.command("generate")(codes.generate)
app.command("history")(codes.history)
app.command("backup")(backup.backup)
app.command("status")(status.status)


def _print_version(given: bool) -> None:
    if given:
        out.print(f"promocodes {version('promocodes')}", highlight=False)
        raise typer.Exit()


@app.callback()
def options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Self-hosted promo-code server, wire-compatible with the Altcraft promo-code API v1.1."""


# --- serve and migrate -------------------------------------------------------------------------------------------


@app.command()
@with_settings
def serve(
    settings: Settings,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Migrate the database, then serve the API. On a database without tokens, print a ready admin token.

    Every setting is a flag and a PROMOCODES_* environment variable (a flag wins); all of them reach every worker."""
    database_url = settings.database_url
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
    out.print(f"Serving the promo-code API on {base} ({_where(database_url)})", highlight=False)
    os.environ.update(settings.to_env())  # worker processes build their app from the environment
    from promocodes.http import server

    server.run(settings, host, port, workers)


@app.command("config")
@with_settings
def show_config(
    settings: Settings,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the settings in force — from the flags given here and the PROMOCODES_* environment — with the
    database password masked and secrets hidden."""
    shown = shown_settings(settings)
    if as_json:
        print_json(shown)
        return
    table = Table("setting", "environment variable", "value")
    for name, value in shown.items():
        table.add_row(f"--{name.replace('_', '-')}", env_name(name), str(value))
    out.print(table)


def _where(database_url: str) -> str:
    """Where the data is, as the startup lines show it: a SQLite file's absolute path (relative URLs depend on the
    folder the command runs in), or the URL with its password masked."""
    path = sqlite_file(database_url)
    return f"SQLite database {path}" if path is not None else mask_password(database_url)


def _check_port(host: str, port: int) -> None:
    """Say so in one line, before migrating anything, when the address cannot be listened on."""
    if not 0 < port < 65536:
        raise fail(f"Port {port} is out of range: use a port from 1 to 65535")
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise fail(f"Cannot listen on {host}:{port}: {error.strerror or error}") from None


async def _prepare(settings: Settings) -> str | None:
    async with services(settings.database_url, create=True) as svc:
        if await svc.tokens.count_all():
            return None
        created = await svc.tokens.issue("default", Role.ADMIN, "created on first start")
        return created.token if isinstance(created.token, str) else None


@app.command()
@command
async def migrate(database_url: DatabaseUrl = DEFAULT_DATABASE_URL) -> None:
    """Apply the schema migrations that the database does not have yet."""
    async with services(database_url, migrate=False, create=True) as svc:
        applied = await svc.migrations.apply()
    done = f"applied {', '.join(applied)}" if applied else "up to date"
    out.print(f"{_where(database_url)}: {done}", highlight=False)


def main() -> None:
    app()
