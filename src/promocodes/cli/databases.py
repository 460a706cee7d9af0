"""``promocodes database …``: the profile databases of an account (``db_id`` in the API)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from promocodes.cli.common import (
    DEFAULT_DATABASE_URL,
    Account,
    AsJson,
    DatabaseUrl,
    command,
    out,
    print_json,
    services,
)
from promocodes.schemas import DatabaseCreate

app = typer.Typer(help="Create and list profile databases.", no_args_is_help=True)


@app.command("create")
@command
async def database_create(
    name: Annotated[str, typer.Option("--name", help="Database name.")],
    account: Account = "default",
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create a profile database and print its id (the `db_id` of the API)."""
    async with services(database_url) as svc:
        view = await svc.profiles.create_database(await svc.accounts.admin(account), DatabaseCreate(name=name))
    if as_json:
        print_json(view)
    else:
        out.print(f"Created database {view.id} ({view.name!r}) in account {account!r}", highlight=False)


@app.command("list")
@command
async def database_list(
    account: Account = "default", as_json: AsJson = False, database_url: DatabaseUrl = DEFAULT_DATABASE_URL
) -> None:
    """List an account's profile databases."""
    async with services(database_url) as svc:
        views = await svc.profiles.list_databases(await svc.accounts.admin(account))
    if as_json:
        print_json(views)
        return
    table = Table("id", "name")
    for view in views:
        table.add_row(str(view.id), view.name)
    out.print(table)
