"""``promocodes program …``: the loyalty programs of an account, as the management API offers them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from promocodes.cli.common import (
    DEFAULT_DATABASE_URL,
    Account,
    AsJson,
    DatabaseUrl,
    account_admin,
    command,
    out,
    print_json,
    program_admin,
    services,
)
from promocodes.domain.times import utcnow
from promocodes.models import Principal, Role
from promocodes.schemas import ProgramCreate, ProgramDelete, ProgramRef, ProgramUpdate, ProgramView

app = typer.Typer(help="Create, list, show, change and delete loyalty programs.", no_args_is_help=True)

Program = Annotated[int, typer.Argument(help="The program's id (the `loyalty_id` of the API).")]
# Every setting is optional: one not given keeps the server's default (create) or the current value (update).
ShortName = Annotated[str | None, typer.Option(help="Name used in templates; no spaces.")]
Description = Annotated[str | None, typer.Option(help="Free text.")]
Active = Annotated[bool | None, typer.Option("--active/--inactive", help="Whether codes may be attached and used.")]
ValidFrom = Annotated[str | None, typer.Option(help='RFC 3339 time the program starts; "" for none.')]
ValidTo = Annotated[str | None, typer.Option(help='RFC 3339 time the program ends; "" for none.')]
MultipleUsage = Annotated[bool | None, typer.Option(help="Codes may be bound to many profiles.")]
CaseSensitive = Annotated[bool | None, typer.Option(help="Compare codes exactly (else by case fold).")]
CodesLimit = Annotated[int | None, typer.Option(min=0, help="Most codes the program may hold.")]
CreateOnAttach = Annotated[bool | None, typer.Option(help="Attaching an unknown code creates it.")]
Template = Annotated[str | None, typer.Option(help='Generation pattern: # digit, @ letter, ? either; "" for none.')]
GenerateOnAttach = Annotated[bool | None, typer.Option(help="Generate a code when the pool is empty.")]
OneCodePerProfile = Annotated[bool | None, typer.Option(help="A profile holds at most one code.")]


def _given(**settings: Any) -> dict[str, Any]:
    """The settings given on the command line (an option left out is None, and stays out of the request)."""
    return {name: value for name, value in settings.items() if value is not None}


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
async def program_create(
    name: Annotated[str, typer.Option("--name", help="Program name.")],
    account: Annotated[str, typer.Option("--account", help="Account name; created when missing.")] = "default",
    short_name: ShortName = None,
    description: Description = None,
    active: Active = None,
    valid_from: ValidFrom = None,
    valid_to: ValidTo = None,
    multiple_usage: MultipleUsage = None,
    case_sensitive: CaseSensitive = None,
    codes_limit: CodesLimit = None,
    create_on_attach: CreateOnAttach = None,
    template: Template = None,
    generate_on_attach: GenerateOnAttach = None,
    one_code_per_profile: OneCodePerProfile = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create a loyalty program and print its id (the `loyalty_id` of the API)."""
    request = ProgramCreate(
        name=name,
        **_given(
            short_name=short_name,
            description=description,
            active=active,
            valid_from=valid_from,
            valid_to=valid_to,
            multiple_usage=multiple_usage,
            case_sensitive=case_sensitive,
            codes_limit=codes_limit,
            create_on_attach=create_on_attach,
            template=template,
            generate_on_attach=generate_on_attach,
            one_code_per_profile=one_code_per_profile,
        ),
    )
    async with services(database_url) as svc:
        # Like `token create`, so that a program can be set up on a database that has no account yet.
        account_id = await svc.store.ensure_account(account, utcnow())
        view = await svc.programs.create(Principal(account_id=account_id, role=Role.ADMIN), request)
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
        principal = await account_admin(svc, account)
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
        view = await svc.programs.get(await program_admin(svc, program), ProgramRef(loyalty_id=program))
    if as_json:
        print_json(view)
    else:
        _show(view)


@app.command("update")
@command
async def program_update(
    program: Program,
    name: Annotated[str | None, typer.Option(help="Program name.")] = None,
    short_name: ShortName = None,
    description: Description = None,
    active: Active = None,
    valid_from: ValidFrom = None,
    valid_to: ValidTo = None,
    multiple_usage: MultipleUsage = None,
    case_sensitive: CaseSensitive = None,
    codes_limit: CodesLimit = None,
    no_codes_limit: Annotated[bool, typer.Option("--no-codes-limit", help="Remove the limit on codes.")] = False,
    create_on_attach: CreateOnAttach = None,
    template: Template = None,
    generate_on_attach: GenerateOnAttach = None,
    one_code_per_profile: OneCodePerProfile = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Change the settings given; the others keep their values."""
    if no_codes_limit and codes_limit is not None:
        raise ValueError("Give either --codes-limit or --no-codes-limit, not both")
    changes = _given(
        name=name,
        short_name=short_name,
        description=description,
        active=active,
        valid_from=valid_from,
        valid_to=valid_to,
        multiple_usage=multiple_usage,
        case_sensitive=case_sensitive,
        codes_limit=codes_limit,
        create_on_attach=create_on_attach,
        template=template,
        generate_on_attach=generate_on_attach,
        one_code_per_profile=one_code_per_profile,
    )
    if no_codes_limit:
        changes["codes_limit"] = None
    async with services(database_url) as svc:
        principal = await program_admin(svc, program)
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
        await svc.programs.delete(await program_admin(svc, program), ProgramDelete(loyalty_id=program, force=force))
    out.print(f"Deleted program {program}", highlight=False)
