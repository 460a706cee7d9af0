"""The one error hierarchy of the server.

Every failure a client can see is an instance of :class:`PromocodeError`. It carries the numeric ``error`` code of
the Altcraft envelope (docs/api.md#error-codes) and the HTTP status it travels with (docs/api.md#the-envelope:
API-level outcomes ride on HTTP 200, transport failures keep a matching status). Exactly one place renders them:
``promocodes.http.responses``.

    PromocodeError                      error   HTTP
    ├── BadRequest                        400    200   malformed body, missing or invalid field
    ├── Unauthorized                      401    200   no token, unknown or revoked token
    ├── LimitExceeded                     402    200   the program's codes_limit would be exceeded
    ├── Forbidden                         403    200   the token's role may not do this
    ├── NotFound                          404    200   program, code, database, profile (or another account's)
    ├── Conflict                          409    200   the object's state forbids the operation
    │   ├── ChangedMeanwhile              409    200   a concurrent request changed what this one relied on
    │   └── IdempotencyKeyReused          409    200   an Idempotency-Key sent again with other parameters
    ├── RequestTimeout                    408    408   the body did not arrive within the body timeout
    ├── PayloadTooLarge                   413    413   body over the configured limit
    ├── RouteNotFound                     404    404   unknown path
    ├── MethodNotAllowed                  405    405   anything but POST
    ├── RateLimited                       429    429   too many requests, or too many failed look-ups
    ├── InternalError                     500    500   a bug; the text never carries a stack trace
    ├── StorageUnavailable                503    503   the database did not answer in time; safe to retry
    └── ServerBusy                        503    503   too many request bodies in memory at once; safe to retry

429 and 503 carry ``retry_after`` (seconds), sent as the ``Retry-After`` header.

A failed call changes nothing: the store raises or returns before committing, so an error never leaves a
partial write behind.
"""

from __future__ import annotations

#: the ``error_text`` of error 0, a success
SUCCESS_TEXT = "Successful operation"


class PromocodeError(Exception):
    """Base of every error a client may see."""

    code: int = 500
    http_status: int = 500
    default_text: str = "Internal error"
    #: seconds after which a retry makes sense (the ``Retry-After`` header); None when the error does not pass
    retry_after: int | None = None

    def __init__(self, text: str | None = None, *, retry_after: int | None = None) -> None:
        self.text = text or self.default_text
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.text)


class BadRequest(PromocodeError):
    code, http_status, default_text = 400, 200, "Bad request"


class Unauthorized(PromocodeError):
    code, http_status, default_text = 401, 200, "Token is missing"


class LimitExceeded(PromocodeError):
    code, http_status, default_text = 402, 200, "Program limit exceeded"


class Forbidden(PromocodeError):
    code, http_status, default_text = 403, 200, "Access denied"


class NotFound(PromocodeError):
    code, http_status, default_text = 404, 200, "Not found"


class Conflict(PromocodeError):
    code, http_status, default_text = 409, 200, "Conflict"


class ChangedMeanwhile(Conflict):
    """A concurrent request deleted or changed an object this one relied on after it was looked up; nothing was
    changed, and a retry is judged anew — so this answer is not kept for idempotent retries
    (docs/api.md#idempotent-retries)."""


class IdempotencyKeyReused(Conflict):
    """The ``Idempotency-Key`` already holds the answer of another request (another method or other parameters):
    nothing was executed (docs/api.md#idempotent-retries). Never kept itself: it is about the key, not an
    operation."""

    default_text = (
        "This Idempotency-Key was already used for a different request (another method or other parameters); "
        "nothing was executed: send a new key for a new request"
    )


class RequestTimeout(PromocodeError):
    code, http_status, default_text = 408, 408, "The request body did not arrive in time"


class PayloadTooLarge(PromocodeError):
    code, http_status, default_text = 413, 413, "Request body is too large"


class RouteNotFound(PromocodeError):
    code, http_status, default_text = 404, 404, "Unknown API method"


class MethodNotAllowed(PromocodeError):
    code, http_status, default_text = 405, 405, "Method not allowed: use POST"


class RateLimited(PromocodeError):
    code, http_status, default_text = 429, 429, "Rate limit exceeded"
    retry_after = 1


class InternalError(PromocodeError):
    code, http_status, default_text = 500, 500, "Internal error"


class StorageUnavailable(PromocodeError):
    code, http_status, default_text = 503, 503, "Storage unavailable, retry later"
    retry_after = 1


class ServerBusy(PromocodeError):
    code, http_status, default_text = 503, 503, "The server is busy; retry later"
    retry_after = 1
