"""``promocodes program …``: the loyalty programs of an account, as the management API offers them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

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
from promocodes.models import SETTINGS, Setting
from promocodes.schemas import ProgramCreate, ProgramDelete, ProgramRef, ProgramUpdate, ProgramView

app = typer.Typer(help="Create, list, show, change and delete loyalty programs.", no_args_is_help=True)

Program = Annotated[int, typer.Argument(help="The program's id (the `loyalty_id` of the API).")]
T = TypeVar("T")


def _option(setting: Setting, *, create: bool) -> inspect.Parameter:
    """One option per program setting, made from its declaration. Every one is optional (one not given keeps the
    server's default on create, the current value on update), except what create requires."""
    flag = f"--{setting.name.replace('_', '-')}"
    kind: Any = str if setting.kind is datetime else setting.kind  # a date is given as RFC 3339 text
    if setting.kind is bool:
        flag = setting.extra.get("flag", f"{flag}/--no-{flag[2:]}")
    option = typer.Option(flag, help=setting.description, min=0 if setting.kind is int else None)
    required = create and setting.required
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=inspect.Parameter.empty if required else None,
        annotation=Annotated[kind if required else kind | None, option],
    )


def _clear_option(setting: Setting) -> inspect.Parameter:
    """``--no-codes-limit``: a number has no empty text to clear it with, so update offers a switch for it."""
    flag = f"--no-{setting.name.replace('_', '-')}"
    option = typer.Option(flag, help=f"Remove `{setting.name}` (set it to none).")
    return inspect.Parameter(
        f"no_{setting.name}", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, option]
    )


def _clearable(setting: Setting) -> bool:
    return setting.optional and setting.kind is int


def with_program_settings(*, create: bool) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a command one option per program setting; it receives those given as ``settings: dict[str, Any]``."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        own = inspect.signature(function, eval_str=True)
        # Keyword-only, so that options with and without defaults may come in any order (Typer passes keywords).
        mine = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.parameters.items() if n != "settings"]
        added = [_option(setting, create=create) for setting in SETTINGS]
        if not create:
            added += [_clear_option(setting) for setting in SETTINGS if _clearable(setting)]
        # The command's arguments first, then the settings, then the command's own options.
        parameters = [p for p in mine if p.default is inspect.Parameter.empty]
        parameters += [*added, *[p for p in mine if p.default is not inspect.Parameter.empty]]

        @functools.wraps(function)
        def run(**given: Any) -> T:
            settings = {setting.name: given.pop(setting.name) for setting in SETTINGS}
            settings = {name: value for name, value in settings.items() if value is not None}
            for setting in SETTINGS:
                if not create and _clearable(setting) and given.pop(f"no_{setting.name}"):
                    if setting.name in settings:
                        flag = setting.name.replace("_", "-")
                        raise ValueError(f"Give either --{flag} or --no-{flag}, not both")
                    settings[setting.name] = None
            return function(settings=settings, **given)

        run.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return run

    return decorate


def _show(view: ProgramView) -> None:
    table = Table("setting", "value", show_header=False)
    for name in view.__struct_fields__:
        value = getattr(view, name)
        if name != "stats":
            table.add_row(name, "" if value is None else str(value))
    if view.stats:
        for name in view.stats.__struct_fields__:
            table.add_row(f"codes {name}", str(getattr(view.stats, name)))
    out.print(table)


@app.command("create")
@command
@with_program_settings(create=True)
async def program_create(
    settings: dict[str, Any],
    account: Annotated[str, typer.Option("--account", help="Account name; created when missing.")] = "default",
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create a loyalty program and print its id (the `loyalty_id` of the API)."""
    request = ProgramCreate(**settings)
    async with services(database_url) as svc:
        # Like `token create`, so that a program can be set up on a database that has no account yet.
        view = await svc.programs.create(await svc.accounts.ensure_admin(account), request)
    if as_json:
        print_json(view)
    else:
        out.print(f"Created program {view.id} ({view.name!r}) in account {account!r}", highlight=False)


@app.command("list")
@command
async def program_list(
    account: Account = "default", as_json: AsJson = False, database_url: DatabaseUrl = DEFAULT_DATABASE_URL
) -> None:
    """List an account's programs with their code counts."""
    async with services(database_url) as svc:
        principal = await svc.accounts.admin(account)
        views = [
            await svc.programs.get(principal, ProgramRef(loyalty_id=p.id)) for p in await svc.programs.list(principal)
        ]
    if as_json:
        print_json(views)
        return
    table = Table("id", "name", "active", "multiple usage", "total", "free", "attached", "activated", "expired")
    for view in views:
        stats = view.stats
        counts = [stats.total, stats.free, stats.attached, stats.activated, stats.expired] if stats else []
        table.add_row(str(view.id), view.name, str(view.active), str(view.multiple_usage), *map(str, counts))
    out.print(table)


@app.command("get")
@command
async def program_get(
    program: Program, as_json: AsJson = False, database_url: DatabaseUrl = DEFAULT_DATABASE_URL
) -> None:
    """Show one program: every setting and its code counts."""
    async with services(database_url) as svc:
        view = await svc.programs.get(await svc.accounts.program_admin(program), ProgramRef(loyalty_id=program))
    if as_json:
        print_json(view)
    else:
        _show(view)


@app.command("update")
@command
@with_program_settings(create=False)
async def program_update(
    program: Program,
    settings: dict[str, Any],
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Change the settings given; the others keep their values."""
    changes = settings
    async with services(database_url) as svc:
        principal = await svc.accounts.program_admin(program)
        view = await svc.programs.update(principal, ProgramUpdate(loyalty_id=program, **changes))
    if as_json:
        print_json(view)
    else:
        out.print(f"Updated program {view.id} ({view.name!r})", highlight=False)


@app.command("delete")
@command
async def program_delete(
    program: Program,
    force: Annotated[bool, typer.Option(help="Delete it even while codes are attached to profiles.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Delete a program and its codes."""
    async with services(database_url) as svc:
        await svc.programs.delete(
            await svc.accounts.program_admin(program), ProgramDelete(loyalty_id=program, force=force)
        )
    out.print(f"Deleted program {program}", highlight=False)
