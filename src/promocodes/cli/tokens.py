"""``promocodes token …``: API tokens, shown once when created, listed by id, revoked by id."""

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
from promocodes.models import Role
from promocodes.schemas import TokenRevoke

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@app.command("create")
@command
async def token_create(
    account: Annotated[str, typer.Option("--account", help="Account name; created when missing.")],
    role: Annotated[Role, typer.Option("--role", help="admin, write or read.")],
    name: Annotated[str, typer.Option("--name", help="A label to recognise the token by.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create a token (and the account, if it does not exist). The token is printed once; keep it."""
    async with services(database_url) as svc:
        created = await svc.tokens.issue(account, role, name)
    if as_json:
        print_json({"token": created.token, "account": account, "role": created.role, "id": created.id, "name": name})
    else:
        out.print(f"Created {created.role} token {created.id} for account {account!r}:", highlight=False)
        out.print(str(created.token), highlight=False, soft_wrap=True)


@app.command("list")
@command
async def token_list(
    account: Account = "default", as_json: AsJson = False, database_url: DatabaseUrl = DEFAULT_DATABASE_URL
) -> None:
    """List an account's tokens (never the tokens themselves: only their hashes are stored)."""
    async with services(database_url) as svc:
        tokens = await svc.tokens.list(await svc.accounts.admin(account))
    if as_json:
        print_json(tokens)
        return
    table = Table("id", "role", "name", "created", "revoked")
    for view in tokens:
        table.add_row(str(view.id), view.role, view.name, view.created, view.revoked)
    out.print(table)


@app.command("revoke")
@command
async def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see `promocodes token list`).")],
    account: Account = "default",
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Revoke a token: it stops working at once here, and in running servers within their token cache time."""
    async with services(database_url) as svc:
        view = await svc.tokens.revoke(await svc.accounts.admin(account), TokenRevoke(id=token_id))
    out.print(f"Revoked token {view.id} of account {account!r}", highlight=False)
