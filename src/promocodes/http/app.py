"""The Starlette application: one pipeline for every API method (docs/api.md#order-of-checks).

    a token in the ``Authorization`` header or the query string is checked first (401, 429 after repeated
    failures from one address), before a byte of the body is read
    → read the body (413 past the size limit, 408 when it trickles, 503 when the worker holds too many bodies)
    → decode JSON/XML/form (400; large bodies in a worker thread) → choose the answer's format (400 if unknown)
    → authenticate a token sent in the body (401) → rate limit (429) → check the role (403)
    → a writing method's ``Idempotency-Key`` (400) → convert to the typed request (400)
    → a key that holds an answer: that answer again (``service.idempotency``) → failed look-up budget (429)
    → the service (404, 409, ...) → encode the envelope

Storage failures surface as 503 and bugs as a bare 500 — both in the envelope, never with a stack trace.
Around it all, ``promocodes.http.access_log`` gives the request its id, and writes its line and metrics at the end.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promocodes.config import Settings
from promocodes.console import console_mount
from promocodes.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PromocodeError,
    RouteNotFound,
    StorageUnavailable,
    Unauthorized,
)
from promocodes.http import metrics
from promocodes.http.access_log import AccessLog, code_hash, record_of
from promocodes.http.bodies import BodyBudget, read_body
from promocodes.http.decoding import body_kind, decode_body, wrap_arrays
from promocodes.http.docs_page import docs_routes
from promocodes.http.openapi import HEALTH_PATH, METRICS_PATH, OPENAPI_PATH, READY_PATH, openapi_endpoint
from promocodes.http.ratelimit import FailureGuard, RateLimiter
from promocodes.http.responses import choose_format, failure, replayed, success, unexpected
from promocodes.http.routes import METHODS, ApiMethod
from promocodes.models import Principal
from promocodes.schemas import ImportResult
from promocodes.schemas import Request as RequestStruct
from promocodes.service import Services
from promocodes.service.auth import authorize
from promocodes.service.idempotency import FIELD, HEADER, IdempotentRetries, idempotency_key, purging
from promocodes.service.promocodes import IN_THREAD_ITEMS
from promocodes.store import Store, open_store
from promocodes.store.claims import Answer, Replay
from promocodes.webhooks.worker import Deliverer, delivering

T = TypeVar("T")

#: bodies larger than this are decoded in a worker thread, so that the event loop keeps serving other requests
DECODE_IN_THREAD_BYTES = 64 * 1024
#: the ``method`` label of the metrics: the API method's name, e.g. ``promocodes/activate`` (any other path: other)
_METHOD_LABELS = {method.path: method.path.removeprefix("/api/v1.1/") for method in METHODS}
logger = logging.getLogger("promocodes")


def _fallback_format(request: Request) -> str:
    """The format for an answer given before the body is read: query ``format`` or ``Accept``, never failing."""
    try:
        return choose_format(request.query_params.get("format"), request.headers.get("accept"))
    except BadRequest:
        return "json"


def _bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def _convert(params: dict[str, Any], request_type: type[T]) -> T:
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
    if "matching regex" in message:  # the only patterns of the request structs refuse control characters
        return f"Field `{field}` must not contain control characters (such as NUL or escape)"
    return f"Field `{field}`: {message[:1].lower()}{message[1:]}"


async def _decode(body: bytes, kind: str) -> dict[str, Any]:
    if len(body) > DECODE_IN_THREAD_BYTES:
        return await run_in_threadpool(decode_body, body, kind)
    return decode_body(body, kind)


class RequestPipeline:
    """What every API method's request goes through — token, limits, body, decoding, the service call, the
    answer — and the state those steps share (rate limits, the body budget). One per application;
    :meth:`endpoint` makes each method's route handler."""

    def __init__(self, services: Services, settings: Settings) -> None:
        self.services = services
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit)
        self.budget = BodyBudget(settings.body_memory_bytes, settings.body_memory_wait)
        self.failed_auth = FailureGuard(settings.failed_auth_limit, settings.guard_window, "failed token checks")
        self.failed_lookups = FailureGuard(settings.failed_lookup_limit, settings.guard_window, "failed look-ups")
        self.retries = IdempotentRetries(services.store, settings.idempotency_hours)

    async def authenticate(self, token: str | None, address: str) -> Principal:
        """The token's principal. A token this worker checked recently costs nothing; any other costs a database
        read, which an address that keeps sending bad tokens is refused (429) before it can cause."""
        authenticator = self.services.authenticator
        if token:
            remembered = authenticator.remembered(token)
            if remembered is not None:
                return remembered
        self.failed_auth.check(f"address:{address}")
        try:
            return await authenticator.authenticate(token)
        except Unauthorized:
            if token:  # a missing token costs no database read and guesses nothing
                self.failed_auth.failed(f"address:{address}")
            raise

    def endpoint(self, method: ApiMethod) -> Callable[[Request], Awaitable[Response]]:
        array_fields = method.array_fields

        async def handle(request: Request) -> Response:
            record = record_of(request)
            fmt = _fallback_format(request)
            address = request.client.host if request.client else "unknown"
            body_read = False
            try:
                # A token outside the body is judged before the body is read: a bad one costs no memory.
                outside = _bearer(request.headers.get("authorization")) or request.query_params.get("token")
                principal = await self.authenticate(outside, address) if outside else None
                record.account = principal.account_id if principal else None
                async with self.budget.hold() as reservation:
                    body = await read_body(
                        request, self.settings.max_body_bytes, self.settings.body_timeout, reservation
                    )
                    body_read = True
                    kind = body_kind(request.headers.get("content-type"), body)
                    large = len(body) > DECODE_IN_THREAD_BYTES
                    params = await _decode(body, kind)
                    del body
                    if kind != "json":
                        wrap_arrays(params, array_fields)
                    fmt = choose_format(
                        params.pop("format", None) or request.query_params.get("format"), request.headers.get("accept")
                    )
                    body_token = params.pop("token", None)
                    # Like `token` and `format`, a parameter of the request, not a field of any method's struct.
                    body_key = params.pop(FIELD, None)
                    token = outside or (body_token if isinstance(body_token, str) else None)
                    if principal is None:
                        principal = await self.authenticate(token, address)
                        record.account = principal.account_id
                    self.limiter.check(f"token:{principal.token_id}")
                    authorize(principal, method.capability)
                    # Read-only methods (and tokens/create) ignore the key entirely: it is not even validated.
                    key = idempotency_key(request.headers.get(HEADER), body_key) if method.idempotent else None
                    typed = _convert(params, method.request)
                    del params
                    code = getattr(typed, "code", None)  # the code methods: logged as a hash only
                    if isinstance(code, str):
                        record.code_sha256 = code_hash(code)
                    if key is None:
                        result = await self.run(method, principal, typed, address)
                    else:
                        result = await self.run_keyed(method, principal, typed, address, key, large)
            except Replay as replay:
                record.error = replay.answer.error
                return await _replayed(replay.answer, fmt)
            except PromocodeError as error:
                record.error = error.code
                # Answered without reading the whole body: the connection cannot carry another request.
                return failure(error, fmt, None if body_read else {"Connection": "close"})
            except Exception as error:  # a bug: answer 500, keep the trace in the log
                record.error = 500
                return unexpected(error, fmt)
            record.error = 0
            metrics.count_codes(method.path, result)
            if isinstance(result, ImportResult) and len(result.data) > IN_THREAD_ITEMS:
                return await run_in_threadpool(success, result, fmt)  # encoding a million items takes a while
            return success(result, fmt)

        return handle

    async def run_keyed(
        self, method: ApiMethod, principal: Principal, typed: RequestStruct, address: str, key: str, large: bool
    ) -> object:
        """:meth:`run` under the request's claim on its idempotency key (docs/api.md#idempotent-retries): raises
        ``Replay`` when the key already holds this request's answer, 409 when it holds another request's."""
        claim_key = functools.partial(self.retries.claim, principal, method.path, key, typed)
        claim = await run_in_threadpool(claim_key) if large else claim_key()  # hashing a big import takes a while
        return await self.retries.run(claim, lambda: self.run(method, principal, typed, address))

    async def run(self, method: ApiMethod, principal: Principal, typed: RequestStruct, address: str) -> object:
        """The service call; a method that looks up a code by what the client sends counts its misses, so that
        guessing codes (or programs) runs into 429 while every lookup that finds something goes through."""
        if not method.guessable:
            return await method.answer(self.services, principal, typed)
        keys = (f"token:{principal.token_id}", f"address:{address}")
        self.failed_lookups.check(*keys)
        try:
            return await method.answer(self.services, principal, typed)
        except NotFound:
            self.failed_lookups.failed(*keys)
            raise


async def _replayed(answer: Answer, fmt: str) -> Response:
    if len(answer.members) > DECODE_IN_THREAD_BYTES:  # a big import's answer: decoded and encoded off the loop
        return await run_in_threadpool(replayed, answer, fmt)
    return replayed(answer, fmt)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (unknown path) and 405 (not POST), in our envelope."""
    fmt = _fallback_format(request)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error: PromocodeError = RouteNotFound(f"Unknown API method {request.url.path}")
    if status == 405:
        error = MethodNotAllowed()
    elif status != 404:
        record_of(request).error = 500
        return unexpected(exc, fmt)
    record_of(request).error = error.code
    return failure(error, fmt, headers={"Allow": "POST"} if status == 405 else None)


async def _health(request: Request) -> Response:
    """Liveness: the process answers. Touches no database, so that a slow database never gets a live worker
    restarted (``/readyz`` is the probe that asks the database)."""
    return success({"status": "ok"}, "json")


def _readiness(store: Store) -> Callable[[Request], Awaitable[Response]]:
    async def ready(request: Request) -> Response:
        """Readiness: 200 when the database answers a trivial read within the database timeout, else 503 with
        ``Retry-After`` (a load balancer then sends requests to another instance)."""
        try:
            await store.ping()
        except PromocodeError as error:
            return failure(error, "json")
        except Exception as error:  # e.g. a database without the schema: not ready either
            logger.warning("Readiness check failed: %s: %s", type(error).__name__, error)
            return failure(StorageUnavailable("The database is not ready"), "json")
        return success({"status": "ready"}, "json")

    return ready


def create_app(settings: Settings | None = None, *, store: Store | None = None, migrate: bool = False) -> Starlette:
    """The ASGI application. ``promocodes serve`` migrates before starting workers; tests pass ``migrate=True``."""
    settings = settings or Settings.from_env()
    # Large imports are judged, stored and encoded in threads; the event loop gets the interpreter back from them
    # within 1 ms instead of the default 5 ms, which is what a `get` waits on while a million codes go in.
    sys.setswitchinterval(0.001)
    store = store or open_store(settings.database_url, settings.pool_size, settings.db_timeout)
    pipeline = RequestPipeline(Services(store, settings.token_cache_seconds), settings)
    # Webhook deliveries run beside the requests, never inside one (docs/api.md#webhooks).
    deliverer = Deliverer(
        store,
        timeout=settings.webhook_timeout_seconds,
        retry_base=settings.webhook_retry_seconds,
        poll=settings.webhook_poll_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            if migrate:
                await store.migrate()
            async with metrics.sampling(store), purging(pipeline.retries), delivering(deliverer):
                yield
        finally:
            await store.close()

    routes = [Route(method.path, pipeline.endpoint(method), methods=["POST"]) for method in METHODS] + [
        Route(READY_PATH, _readiness(store), methods=["GET"]),
        Route(METRICS_PATH, metrics.endpoint(store), methods=["GET"]),
    ]
    routes.append(Route(HEALTH_PATH, _health, methods=["GET"]))
    routes.append(Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]))
    routes.extend(docs_routes())
    app = Starlette(
        routes=[*routes, console_mount(pipeline)],  # the web console at /console (docs/console.md)
        lifespan=lifespan,
        middleware=[Middleware(AccessLog, observe=metrics.observe, method_labels=_METHOD_LABELS)],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
    # `/get/` is an unknown method (404 in the envelope), not a redirect an API client would not follow with a body.
    app.router.redirect_slashes = False
    app.state.services = pipeline.services  # for tests that look inside
    app.state.deliverer = deliverer
    return app
