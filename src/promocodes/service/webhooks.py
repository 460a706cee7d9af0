"""Webhooks (docs/api.md#webhooks): the rules of managing them. Delivery itself runs outside every request, in
``promocodes.webhooks``."""

from __future__ import annotations

import builtins
import functools
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from promocodes.domain.times import format_rfc3339, utcnow
from promocodes.errors import BadRequest, NotFound
from promocodes.models import Delivery, Principal, Webhook, WebhookEventType
from promocodes.schemas import (
    DeliveryView,
    WebhookCreate,
    WebhookDeliveriesRequest,
    WebhookRef,
    WebhookUpdate,
    WebhookView,
)
from promocodes.service.idempotency import final
from promocodes.store import Store

#: bytes of randomness in a webhook's signing secret
SECRET_BYTES = 32
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
_KNOWN_TYPES = ", ".join(kind.value for kind in WebhookEventType)


def new_secret() -> str:
    """A signing secret from the cryptographic random source; shown once, in the answer to webhooks/create."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def checked_url(url: str) -> str:
    """An absolute ``http`` or ``https`` URL with a host, else 400 naming the field. Only administrators set URLs
    (docs/api.md#webhooks: what that means for requests to internal addresses)."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH or any(char.isspace() for char in url):
        raise BadRequest(
            f"Field `url` must be an http or https URL without spaces, at most {MAX_URL_LENGTH} characters"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        raise BadRequest("Field `url` is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadRequest("Field `url` must be an http or https URL with a host, such as https://shop.example/hooks")
    return url


def checked_types(events: Sequence[str]) -> list[WebhookEventType]:
    """The event types, in the order given (a repeat is one subscription); 400 when empty or one is unknown."""
    if not events:
        raise BadRequest(f"Field `events` must name at least one event type: {_KNOWN_TYPES}")
    types: list[WebhookEventType] = []
    for name in events:
        try:
            types.append(WebhookEventType(name.strip()))
        except ValueError:
            raise BadRequest(f"Field `events`: unknown event type {name!r}; known: {_KNOWN_TYPES}") from None
    return list(dict.fromkeys(types))


def webhook_view(webhook: Webhook, with_secret: bool = False) -> WebhookView:
    view = WebhookView(
        id=webhook.id,
        url=webhook.url,
        events=[kind.value for kind in webhook.events],
        description=webhook.description,
        active=webhook.active,
        created=format_rfc3339(webhook.created),
    )
    if with_secret:
        view.secret = webhook.secret
    return view


def delivery_view(delivery: Delivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        event_id=str(delivery.event_id),
        type=delivery.type.value,
        state=delivery.state.value,
        attempts=delivery.attempts,
        next_attempt=format_rfc3339(delivery.next_attempt) if delivery.state == "pending" else "",
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        created=format_rfc3339(delivery.created),
        finished=format_rfc3339(delivery.finished),
    )


def _updated(webhook_id: int, webhook: Webhook | None) -> WebhookView:
    """``webhooks/update``'s answer to the store's result. Pure: it also runs inside the store's transaction, to
    keep the answer of a request with an idempotency key (docs/api.md#idempotent-retries)."""
    if webhook is None:
        raise NotFound(f"Webhook {webhook_id} not found")
    return webhook_view(webhook)


def _deleted(webhook_id: int, deleted: bool) -> None:
    """``webhooks/delete``'s answer to the store's result (pure, as :func:`_updated`)."""
    if not deleted:
        raise NotFound(f"Webhook {webhook_id} not found")


class WebhookService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, principal: Principal, request: WebhookCreate) -> WebhookView:
        """Create an active webhook; the answer is the only time its secret is shown (so the request takes no
        idempotency key: the answer could not be kept without keeping the secret)."""
        url = checked_url(request.url)
        types = checked_types(request.events)
        webhook = await self.store.create_webhook(
            principal.account_id, url, types, request.description.strip(), new_secret(), utcnow()
        )
        return webhook_view(webhook, with_secret=True)

    async def list(self, principal: Principal) -> list[WebhookView]:
        return [webhook_view(webhook) for webhook in await self.store.list_webhooks(principal.account_id)]

    async def update(self, principal: Principal, request: WebhookUpdate) -> WebhookView:
        changes: dict[str, Any] = {}
        if request.url is not msgspec.UNSET:
            changes["url"] = checked_url(request.url)
        if request.description is not msgspec.UNSET:
            changes["description"] = request.description.strip()
        if request.active is not msgspec.UNSET:
            changes["active"] = request.active
        types = None if request.events is msgspec.UNSET else checked_types(request.events)
        if not changes and types is None:
            raise BadRequest("Nothing to update: give `url`, `events`, `description` or `active`")
        answer = final(functools.partial(_updated, request.id))
        return answer(await self.store.update_webhook(principal.account_id, request.id, changes, types))

    async def delete(self, principal: Principal, request: WebhookRef) -> None:
        answer = final(functools.partial(_deleted, request.id))
        answer(await self.store.delete_webhook(principal.account_id, request.id))

    async def deliveries(self, principal: Principal, request: WebhookDeliveriesRequest) -> builtins.list[DeliveryView]:
        deliveries = await self.store.webhook_deliveries(principal.account_id, request.id, request.limit)
        if deliveries is None:
            raise NotFound(f"Webhook {request.id} not found")
        return [delivery_view(delivery) for delivery in deliveries]
