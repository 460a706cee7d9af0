"""The Starlette application: one pipeline for every API method (spec 8.1.2's order of checks).

    read the body (413 past the limit) → decode JSON/XML/form (400) → choose the answer's format (400 if unknown)
    → authenticate the token (401) → rate limit (429) → check the role (403) → convert to the typed request (400)
    → the service (404, 409, ...) → encode the envelope

Storage failures surface as 503 and bugs as a bare 500 — both in the envelope, never with a stack trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promocodes.config import Settings
from promocodes.errors import BadRequest, MethodNotAllowed, PayloadTooLarge, PromocodeError, RouteNotFound
from promocodes.http.decoding import body_kind, decode_body, wrap_arrays
from promocodes.http.openapi import OPENAPI_PATH, openapi_endpoint
from promocodes.http.ratelimit import RateLimiter
from promocodes.http.responses import choose_format, failure, success, unexpected
from promocodes.http.routes import METHODS, Method
from promocodes.service import Services
from promocodes.service.auth import authorize
from promocodes.store import Store, open_store


def _fallback_format(request: Request) -> str:
    """The format for an answer given before the body is read: query ``format`` or ``Accept``, never failing."""
    try:
        return choose_format(request.query_params.get("format"), request.headers.get("accept"))
    except BadRequest:
        return "json"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (declared or while streaming)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes")
    return bytes(body)


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _convert(params: dict[str, Any], request_type: type[Any]) -> Any:
    try:
        return msgspec.convert(params, request_type, strict=False)
    except msgspec.ValidationError as error:
        raise BadRequest(_field_message(str(error))) from None


def _field_message(text: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.loyalty_id``` → ``Field `loyalty_id`: expected `int`, ...``."""
    message, separator, where = text.rpartition(" - at `$.")
    if not separator:
        return text.replace("Object missing", "Missing")
    field = where.rstrip("`")
    return f"Field `{field}`: {message[:1].lower()}{message[1:]}"


class Api:
    """Runs the pipeline for one method. Built once per method at start-up."""

    def __init__(self, services: Services, settings: Settings, limiter: RateLimiter) -> None:
        self.services = services
        self.settings = settings
        self.limiter = limiter

    def endpoint(self, method: Method) -> Callable[[Request], Awaitable[Response]]:
        array_fields = method.array_fields

        async def handle(request: Request) -> Response:
            fmt = _fallback_format(request)
            try:
                body = await _read_body(request, self.settings.max_body_bytes)
                kind = body_kind(request.headers.get("content-type"), body)
                params = decode_body(body, kind)
                if kind != "json":
                    wrap_arrays(params, array_fields)
                fmt = choose_format(
                    params.pop("format", None) or request.query_params.get("format"), request.headers.get("accept")
                )
                body_token = params.pop("token", None)
                token = (
                    _bearer(request.headers.get("authorization"))
                    or (body_token if isinstance(body_token, str) else None)
                    or request.query_params.get("token")
                )
                principal = await self.services.authenticator.authenticate(token)
                self.limiter.check(str(token))
                authorize(principal, method.capability)
                typed = _convert(params, method.request)
                result = await method.handler(self.services, principal, typed)
            except PromocodeError as error:
                return failure(error, fmt)
            except Exception as error:  # a bug: answer 500, keep the trace in the log
                return unexpected(error, fmt)
            return success(result, fmt)

        return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (unknown path) and 405 (not POST), in our envelope."""
    fmt = _fallback_format(request)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return failure(RouteNotFound(f"Unknown API method {request.url.path}"), fmt)
    if status == 405:
        return failure(MethodNotAllowed(), fmt, headers={"Allow": "POST"})
    return unexpected(exc, fmt)


async def _health(request: Request) -> Response:
    return success({"status": "ok"}, "json")


def create_app(settings: Settings | None = None, *, store: Store | None = None, migrate: bool = False) -> Starlette:
    """The ASGI application. ``promocodes serve`` migrates before starting workers; tests pass ``migrate=True``."""
    settings = settings or Settings.from_env()
    store = store or open_store(settings.database_url, settings.pool_size)
    api = Api(Services(store, settings.token_cache_seconds), settings, RateLimiter(settings.rate_limit))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            if migrate:
                await store.migrate()
            yield
        finally:
            await store.close()

    routes = [Route(method.path, api.endpoint(method), methods=["POST"]) for method in METHODS]
    routes.append(Route("/healthz", _health, methods=["GET"]))
    routes.append(Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
    # `/get/` is an unknown method (404 in the envelope), not a redirect an API client would not follow with a body.
    app.router.redirect_slashes = False
    return app
