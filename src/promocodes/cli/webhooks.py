"""``promocodes webhooks …``: webhooks (docs/api.md#webhooks), as the admin of an account manages them over HTTP.
The secret is printed once, by ``create``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from promocodes.cli.common import DEFAULT_DATABASE_URL, Account, AsJson, DatabaseUrl, command, out, print_json, services
from promocodes.schemas import WebhookCreate, WebhookDeliveriesRequest, WebhookRef, WebhookUpdate

app = typer.Typer(help="Create, list, change and delete webhooks; show their deliveries.", no_args_is_help=True)

Events = Annotated[
    list[str],
    typer.Option(
        "--event",
        help="An event type to send (repeat the option): code.attached, code.activated, code.deactivated, "
        "code.detached, code.expiry_changed, program.pool_low.",
    ),
]
WebhookId = Annotated[int, typer.Argument(help="The webhook's id (see `promocodes webhooks list`).")]


@app.command("create")
@command
async def webhook_create(
    url: Annotated[str, typer.Argument(help="Where to POST the events: an http or https URL.")],
    event: Events,
    description: Annotated[str, typer.Option("--description", help="A label for people.")] = "",
    account: Account = "default",
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Create an active webhook. Its signing secret is printed once; keep it."""
    async with services(database_url) as svc:
        request = WebhookCreate(url=url, events=event, description=description)
        created = await svc.webhooks.create(await svc.accounts.admin(account), request)
    if as_json:
        print_json(created)
        return
    out.print(
        f"Created webhook {created.id} → {created.url} ({', '.join(created.events)}); its secret:", highlight=False
    )
    out.print(str(created.secret), highlight=False, soft_wrap=True)


@app.command("list")
@command
async def webhook_list(
    account: Account = "default", as_json: AsJson = False, database_url: DatabaseUrl = DEFAULT_DATABASE_URL
) -> None:
    """List an account's webhooks (never their secrets)."""
    async with services(database_url) as svc:
        webhooks = await svc.webhooks.list(await svc.accounts.admin(account))
    if as_json:
        print_json(webhooks)
        return
    table = Table("id", "url", "events", "active", "description", "created")
    for view in webhooks:
        table.add_row(str(view.id), view.url, ", ".join(view.events), str(view.active), view.description, view.created)
    out.print(table)


@app.command("update")
@command
async def webhook_update(
    webhook_id: WebhookId,
    url: Annotated[str | None, typer.Option("--url", help="A new URL.")] = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", help="The new set of event types (repeat the option).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="A new label.")] = None,
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Send deliveries, or hold them.", show_default=False)
    ] = None,
    account: Account = "default",
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Change a webhook's URL, event types, description or active flag."""
    request = WebhookUpdate(id=webhook_id)
    if url is not None:
        request.url = url
    if event:
        request.events = event
    if description is not None:
        request.description = description
    if active is not None:
        request.active = active
    async with services(database_url) as svc:
        view = await svc.webhooks.update(await svc.accounts.admin(account), request)
    if as_json:
        print_json(view)
        return
    out.print(f"Updated webhook {view.id} → {view.url} ({', '.join(view.events)})", highlight=False)


@app.command("delete")
@command
async def webhook_delete(
    webhook_id: WebhookId,
    account: Account = "default",
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Delete a webhook and the deliveries it is still owed."""
    async with services(database_url) as svc:
        await svc.webhooks.delete(await svc.accounts.admin(account), WebhookRef(id=webhook_id))
    if as_json:
        print_json({"deleted": webhook_id})
        return
    out.print(f"Deleted webhook {webhook_id}", highlight=False)


@app.command("deliveries")
@command
async def webhook_deliveries(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="How many, newest first.")] = 20,
    account: Account = "default",
    as_json: AsJson = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """A webhook's most recent deliveries, newest first, with their state and last error."""
    async with services(database_url) as svc:
        request = WebhookDeliveriesRequest(id=webhook_id, limit=limit)
        deliveries = await svc.webhooks.deliveries(await svc.accounts.admin(account), request)
    if as_json:
        print_json(deliveries)
        return
    table = Table("id", "event", "type", "state", "attempts", "last status", "last error", "created")
    for item in deliveries:
        status = "" if item.last_status is None else str(item.last_status)
        table.add_row(
            str(item.id),
            item.event_id,
            item.type,
            item.state,
            str(item.attempts),
            status,
            item.last_error,
            item.created,
        )
    out.print(table)
