"""The access log: one JSON line per request on the ``promocodes.access`` logger, and the request id that ties a
request's line to anything else logged while it ran (a 500's traceback, a database warning).

The line never holds a token (neither headers, nor the query string, nor the body are logged) and never a code: the
code methods log the first 12 hex digits of the code's SHA-256 instead, enough to find the lines of one code, and
useless to someone reading the log without the code in hand — unless the codes are short enough to try them all,
so the log stays a file to keep private. The probes (``/healthz``, ``/readyz``, ``/metrics``) are neither logged
nor counted: a load balancer asks every few seconds, and those lines would drown the requests.

``promocodes.http.server`` sends the lines to stdout; anyone else (a test, an app built by hand) gets them where the
logging configuration says, and none while the logger is not enabled for INFO (the line is then not even built).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promocodes.errors import PromocodeError
from promocodes.http.responses import unexpected

access_logger = logging.getLogger("promocodes.access")

REQUEST_ID_HEADER = "x-request-id"
#: a client's request id is taken when it is 1 to 128 visible ASCII characters; anything else (spaces, control or
#: non-ASCII bytes, a novel) could forge or break lines in a log reader, and is replaced by a fresh id
_CLIENT_REQUEST_ID = re.compile(rb"[!-~]{1,128}")
#: the id of the request being answered, for log records made while it runs (``RequestIdFilter``)
current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_SCOPE_KEY = "promocodes.access"
_MAX_PATH = 256

#: ``(method label, envelope error or None, seconds)`` for each logged request: the metrics' hook
Observer = Callable[[str, int | None, float], None]


@dataclass(slots=True)
class RequestRecord:
    """What the pipeline learns about a request, for its log line: filled in as the request goes through."""

    request_id: str
    account: int | None = None
    #: the envelope's ``error``; None for an answer outside the envelope (``/openapi.json``)
    error: int | None = None
    status: int | None = None
    code_sha256: str | None = None


def record_of(request: Request) -> RequestRecord:
    """The request's record (a throwaway one when the app runs without :class:`AccessLog`)."""
    record = request.scope.get(_SCOPE_KEY)
    return record if isinstance(record, RequestRecord) else RequestRecord("-")


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _CLIENT_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(8)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AccessLog:
    """ASGI middleware: gives each request its id (the client's ``X-Request-ID`` when acceptable), echoes it in the
    answer's ``X-Request-ID``, times the whole answer (a streamed one to its last byte) and, at its end, writes the
    line and hands the figures to ``observe``. A bug that escaped the pipeline is answered 500 in the envelope here,
    so that even that answer carries the id."""

    def __init__(self, app: ASGIApp, observe: Observer, method_labels: dict[str, str]) -> None:
        self.app = app
        self.observe = observe
        self.method_labels = method_labels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        arrived = _now()
        record = RequestRecord(_request_id(scope["headers"]))
        scope[_SCOPE_KEY] = record
        header = (b"x-request-id", record.request_id.encode("ascii"))
        context = current_request_id.set(record.request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if record.status is not None:  # a streamed answer broke off: the client has a cut body already
                record.error = error.code if isinstance(error, PromocodeError) else 500
                raise
            record.error = 500
            await unexpected(error, "json")(scope, receive, send_with_id)
        finally:
            current_request_id.reset(context)
            path: str = scope["path"]
            if path not in PROBES:
                self._finish(scope["method"], path, record, arrived, time.perf_counter() - started)

    def _finish(self, verb: str, path: str, record: RequestRecord, arrived: str, seconds: float) -> None:
        self.observe(self.method_labels.get(path, "other"), record.error, seconds)
        if not access_logger.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "time": arrived,
            "request_id": record.request_id,
            "method": verb,
            "path": path[:_MAX_PATH],
            "account": record.account,
            "error": record.error,
            "status": record.status,
            "duration_ms": round(seconds * 1000, 3),
        }
        if record.code_sha256 is not None:
            line["code_sha256"] = record.code_sha256
        access_logger.info(msgspec.json.encode(line).decode())


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (``-`` outside a request) to every record a handler with this filter emits, so that a
    traceback or a database warning can be matched with its request's access line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True
