"""``promocodes status``: where the data is, which migrations it has, and what an account holds."""

from __future__ import annotations

import msgspec
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
    sqlite_file,
)
from promocodes.config import mask_password
from promocodes.schemas import ProgramRef, ProgramView


class Status(msgspec.Struct):
    database: str
    migrations_applied: list[str]
    migrations_pending: list[str]
    account: str
    account_exists: bool
    programs: list[ProgramView]


@command
async def status(
    account: Account = "default", as_json: AsJson = False, database_url: DatabaseUrl = DEFAULT_DATABASE_URL
) -> None:
    """Show the database, its migrations (applied and pending), and an account's programs with their code counts.

    Changes nothing: unlike the other commands it does not apply pending migrations (run `promocodes migrate`)."""
    path = sqlite_file(database_url)
    where = str(path) if path is not None else mask_password(database_url)
    async with services(database_url, migrate=False) as svc:
        applied, pending = await svc.migrations.status()
        principal = await svc.accounts.find_admin(account) if not pending else None
        programs: list[ProgramView] = []
        if principal is not None:
            programs = [
                await svc.programs.get(principal, ProgramRef(loyalty_id=p.id))
                for p in await svc.programs.list(principal)
            ]
    report = Status(where, applied, pending, account, principal is not None, programs)
    if as_json:
        print_json(report)
        return
    out.print(f"Database: {where}", highlight=False)
    out.print(f"Migrations applied: {', '.join(applied) or 'none'}", highlight=False)
    if pending:
        out.print(f"Migrations pending: {', '.join(pending)} (run `promocodes migrate`)", highlight=False)
        return
    out.print("Migrations pending: none", highlight=False)
    if principal is None:
        out.print(f"Account {account!r}: none yet", highlight=False)
        return
    table = Table(
        "id", "name", "active", "total", "free", "attached", "activated", "expired", title=f"Account {account!r}"
    )
    for view in programs:
        stats = view.stats
        counts = [stats.total, stats.free, stats.attached, stats.activated, stats.expired] if stats else []
        table.add_row(str(view.id), view.name, str(view.active), *map(str, counts))
    out.print(table)
