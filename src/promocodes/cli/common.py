"""What every command shares: the consoles, the one-line errors, the database options, and opening the database.

Opening is where most first-run mistakes show up (a mistyped path, a database never created, a server not running),
so it is checked here, before any command does work: each failure becomes one line saying what was looked at and
what to run, and never shows a password.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
import typer
from rich.console import Console

from promocodes.config import DEFAULT_DATABASE_URL, mask_password
from promocodes.errors import PromocodeError, StorageUnavailable
from promocodes.service import Services
from promocodes.store import Store, open_store, sqlite_path

T = TypeVar("T")

# soft_wrap: a long line (a path, a command to run) stays one line when the output is not a terminal.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="PROMOCODES_DATABASE_URL",
        help="sqlite:///file.db (relative), sqlite:////abs/file.db, or postgresql://user@host:port/dbname.",
    ),
]
#: the account a command acts in; it must exist (``token create`` and ``program create`` make their own option)
Account = Annotated[str, typer.Option("--account", help="Account name (it must exist).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Account",
    "AsJson",
    "CannotOpen",
    "DatabaseUrl",
    "check_sqlite_file",
    "command",
    "err",
    "fail",
    "open_checked",
    "out",
    "print_json",
    "services",
    "sqlite_file",
]


class CannotOpen(Exception):
    """The database cannot be used as given: the message is the one line shown to the user (exit 1)."""


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def command(function: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T | None]:
    """Run an async command; turn every expected failure into one line on stderr and exit code 1."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T | None:
        # The store logs a driver's failure for the server's log; at the shell that failure is already the error
        # line, so its log record would only add a second, rawer line (Python prints unhandled warnings).
        quiet = logging.NullHandler()
        logging.getLogger("promocodes").addHandler(quiet)
        try:
            return asyncio.run(function(*args, **kwargs))
        except PromocodeError as error:
            raise fail(error.text) from None
        except CannotOpen as error:
            raise fail(str(error)) from None
        except BrokenPipeError:  # `promocodes export | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            raise fail("Interrupted", 130) from None
        except Exception as error:  # a bug: still one line, with what is needed to report it
            raise fail(f"Unexpected {type(error).__name__}: {error}") from None
        finally:
            logging.getLogger("promocodes").removeHandler(quiet)

    return run


def print_json(value: Any) -> None:
    """One JSON document on stdout (views are msgspec structs; their unset fields are left out)."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def sqlite_file(database_url: str) -> Path | None:
    """The absolute path of a SQLite database URL; None for PostgreSQL and for an in-memory database."""
    path = sqlite_path(database_url)
    if path is None or path == ":memory:":
        return None
    return Path(path).absolute()


def check_sqlite_file(database_url: str, create: bool) -> None:
    """Refuse a SQLite path whose folder is missing (for every command: a typo must not become a new folder
    tree), and a file that does not exist unless the command may create it (``serve`` and ``migrate``)."""
    path = sqlite_file(database_url)
    if path is None:
        return
    if not path.parent.is_dir():
        raise CannotOpen(f"No folder {path.parent} for the SQLite database {path}: create the folder first")
    if not create and not path.exists():
        raise CannotOpen(
            f"No database at {path}: create it with `promocodes migrate --database-url sqlite:///{path}` "
            "or `promocodes serve`"
        )


async def open_checked(database_url: str, create: bool = False) -> Store:
    """An open store for the URL, or one line saying why it could not be opened.

    The adapters log the driver's text and raise a plain "unavailable" (their errors can reach HTTP clients);
    here the user is the operator at the shell, so the useful part is shown: PostgreSQL's own sentence for a
    database or role that does not exist (it names only the database or role), and the address that refused the
    connection. The password is never part of it."""
    check_sqlite_file(database_url, create)
    store = open_store(database_url)
    try:
        await store.open()
    except Exception as error:
        await store.close()
        raise _explained(error, database_url) from None
    return store


def _explained(error: Exception, database_url: str) -> Exception:
    """The one line for a failure to open the database at ``database_url``."""
    path = sqlite_file(database_url)
    if path is not None:
        return CannotOpen(f"Cannot open the SQLite database {path}: {error.__cause__ or error}")
    import asyncpg

    parts = urlsplit(database_url)
    where = f"PostgreSQL at {parts.hostname or 'localhost'}:{parts.port or 5432}"
    database = unquote(parts.path.lstrip("/")) or unquote(parts.username or "")
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return CannotOpen(
            f"{where}: {error}; create it (`createdb {database}`), then run "
            f"`promocodes migrate --database-url {mask_password(database_url)}`"
        )
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):  # no such role, or a wrong password
        return CannotOpen(f"{where}: {error}")
    cause: BaseException | None = error.__cause__ if isinstance(error, StorageUnavailable) else error
    if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause):
        return CannotOpen(f"{where} refused the connection: is the server running on that host and port?")
    if isinstance(cause, OSError):
        return CannotOpen(f"Cannot reach {where}: {cause.strerror or type(cause).__name__}")
    if isinstance(error, PromocodeError):
        return error
    return CannotOpen(f"Cannot open {where}: {type(error).__name__}")


@asynccontextmanager
async def services(database_url: str, migrate: bool = True, create: bool = False) -> AsyncIterator[Services]:
    """The services over the database at ``database_url``, migrated unless ``migrate`` is False. Only ``serve`` and
    ``migrate`` pass ``create``: every other command refuses a SQLite file that does not exist yet."""
    store = await open_checked(database_url, create)
    try:
        svc = Services(store)
        if migrate:
            await svc.migrations.apply()
        yield svc
    finally:
        await store.close()
