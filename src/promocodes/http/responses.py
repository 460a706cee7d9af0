"""The ONE place an outcome becomes an HTTP response: success envelopes, streamed lists, replayed answers, and every
error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.responses import Response, StreamingResponse

from promocodes.errors import BadRequest, PromocodeError
from promocodes.http.encoding import JSON_MEDIA, XML_MEDIA, encode, envelope, stream_pages
from promocodes.schemas import envelope_members
from promocodes.store.claims import Answer

logger = logging.getLogger("promocodes")

FORMATS = ("json", "xml")
#: on every API answer: nothing in it may be cached by a browser or a proxy (answers carry codes and profiles), and
#: a browser must not guess another type than the one declared
SAFETY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: on an answer sent again to a retry with the same ``Idempotency-Key``: nothing was executed this time
REPLAYED_HEADER = {"Idempotent-Replayed": "true"}


def choose_format(requested: Any, accept: str | None) -> str:
    """The ``format`` parameter wins; else an ``Accept`` naming XML; else JSON (docs/api.md#answer-format). An
    unknown ``format`` is a 400 (answered in JSON, the documented default)."""
    if requested is not None and requested != "":
        fmt = str(requested).strip().lower()
        if fmt not in FORMATS:
            raise BadRequest(f"Unknown format {requested!r}: use json or xml")
        return fmt
    if accept and ("application/xml" in accept or "text/xml" in accept):
        return "xml"
    return "json"


def _media(fmt: str) -> str:
    return XML_MEDIA if fmt == "xml" else JSON_MEDIA


def success(result: Any, fmt: str) -> Response:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(stream_pages(result, fmt), media_type=_media(fmt), headers=SAFETY_HEADERS)
    payload = envelope(**envelope_members(result))
    return Response(encode(payload, fmt), media_type=_media(fmt), headers=SAFETY_HEADERS)


def replayed(answer: Answer, fmt: str) -> Response:
    """A kept answer sent again to a retry (docs/api.md#idempotent-retries): the same envelope, written in the
    format this retry asks for, with ``Idempotent-Replayed: true``. Kept answers are successes and API-level
    errors, all sent with HTTP 200."""
    members = msgspec.json.decode(answer.members)
    payload = envelope(members.pop("data"), answer.error, answer.error_text, **members)
    return Response(encode(payload, fmt), media_type=_media(fmt), headers={**SAFETY_HEADERS, **REPLAYED_HEADER})


def failure(error: PromocodeError, fmt: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the envelope, with the HTTP status the error travels with (200 for API-level errors), and
    ``Retry-After`` when the error says when a retry makes sense (429, 503)."""
    all_headers = {**SAFETY_HEADERS, **(headers or {})}
    if error.retry_after is not None:
        all_headers["Retry-After"] = str(error.retry_after)
    return Response(
        encode(envelope(None, error.code, error.text), fmt),
        status_code=error.http_status,
        media_type=_media(fmt),
        headers=all_headers,
    )


def unexpected(error: BaseException, fmt: str) -> Response:
    """A bug: logged in full here, answered as a bare 500 so that no stack trace reaches a client."""
    from promocodes.errors import InternalError

    logger.error("Unexpected error", exc_info=error)
    return failure(InternalError(), fmt)
