"""Rendering for the console: the Jinja2 environment, the security headers every console answer carries, and the
reading of its small url-encoded forms (docs/console.md#security)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import jinja2
import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promocodes.errors import BadRequest, PayloadTooLarge, PromocodeError

T = TypeVar("T")
HERE = Path(__file__).parent
PREFIX = "/console"
#: no inline script or style at all (not even a style attribute), nothing from another host, never in a frame
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
#: the console's forms hold a few short fields; anything larger is not one of them
MAX_FORM_BYTES = 16 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value a page shows is escaped: codes and profile ids come from API clients
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    """A page; pages show account data, so no cache keeps them."""
    html = templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer under /console — pages, the style sheet, errors alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value) for name, value in message.get("headers", []) if name.decode() not in SECURITY_HEADERS
                ]
                headers += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (the first value of each). Another body type is 400, one larger than
    :data:`MAX_FORM_BYTES` is 413, both before anything is done."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != FORM_TYPE:
        raise BadRequest(f"A console form is sent as {FORM_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge("The form is larger than a console form can be")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)
    return {name: values[0] for name, values in fields.items()}


def convert(fields: dict[str, Any], kind: type[T]) -> T:
    """A request struct from form fields, checked as the API checks its bodies (400 naming the field)."""
    try:
        return msgspec.convert(fields, kind, strict=False)
    except msgspec.ValidationError as error:
        raise BadRequest(f"Invalid form: {error}") from None


def status_of(error: PromocodeError) -> int:
    """The HTTP status of a page that shows an error: the API's error code where it is one (400, 403, 404, 409,
    429, ...), since a page has no envelope to carry it in."""
    return error.code if 400 <= error.code <= 599 else 500
