"""``promocodes backup``: a consistent copy of a SQLite database, taken while the server keeps running."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from promocodes.cli.common import (
    DEFAULT_DATABASE_URL,
    CannotOpen,
    DatabaseUrl,
    check_sqlite_file,
    command,
    err,
    out,
    sqlite_file,
)
from promocodes.config import mask_password

#: pages copied per step of SQLite's backup (4 MiB at the default page size): the progress bar moves between steps
PAGES_PER_STEP = 1024


@command
async def backup(
    to: Annotated[Path, typer.Option("--to", help="The file to write the copy to.")],
    force: Annotated[bool, typer.Option(help="Replace the file if it exists.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Copy a SQLite database to FILE, consistently, while the server runs (SQLite's online backup).

    The copy is the database as it was when the backup started; writes made meanwhile go on and are not in it.
    For PostgreSQL, use pg_dump."""
    source = sqlite_file(database_url)
    if source is None:
        if database_url.startswith(("postgresql://", "postgres://")):
            raise CannotOpen(
                "`promocodes backup` copies SQLite databases; for PostgreSQL use pg_dump: "
                f"pg_dump --format=custom --file={to} '{mask_password(database_url)}'"
            )
        raise CannotOpen(f"Nothing to back up at {mask_password(database_url)}: give a SQLite file's URL")
    check_sqlite_file(database_url, create=False)
    target = to.absolute()
    if target == source:
        raise CannotOpen(f"{target} is the database itself: back it up to another file")
    if not target.parent.is_dir():
        raise CannotOpen(f"No folder {target.parent} for the backup: create the folder first")
    if target.exists() and not force:
        raise CannotOpen(f"{target} already exists: pass --force to replace it")
    try:
        pages = copy_database(source, target)
    except sqlite3.Error as error:
        raise CannotOpen(f"Cannot back up {source}: {error}") from None
    out.print(f"Backed up {source} to {target} ({pages} pages)", highlight=False)


def copy_database(source: Path, target: Path) -> int:
    """Copy ``source`` to ``target`` page by page with a progress bar; return the number of pages.

    The source connection holds one read transaction for the whole copy, so every step reads the same snapshot:
    in WAL mode that blocks no writer, and the server's commits during the copy do not make SQLite restart it.
    The copy is written next to the target and renamed over it only when complete, so an interrupted backup never
    leaves a truncated file under the target's name (nor destroys the previous backup it was to replace)."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)  # left by an interrupted backup
    reader = sqlite3.connect(source, isolation_level=None)
    try:
        reader.execute("PRAGMA query_only = ON")
        reader.execute("PRAGMA busy_timeout = 5000")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts at the first read
        copy = sqlite3.connect(partial)
        try:
            with Progress(
                TextColumn("Backing up"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("pages"),
                TimeElapsedColumn(),
                console=err,
            ) as progress:
                task = progress.add_task("backup", total=None)

                def step(status: int, remaining: int, total: int) -> None:
                    progress.update(task, total=total, completed=total - remaining)

                reader.backup(copy, pages=PAGES_PER_STEP, progress=step)
            pages: int = copy.execute("PRAGMA page_count").fetchone()[0]
        finally:
            copy.close()
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
    finally:
        reader.close()
    return pages
