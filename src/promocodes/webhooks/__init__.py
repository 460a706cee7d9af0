"""Webhooks (docs/api.md#webhooks): the body of a delivery, its signature, and the check a receiver runs.

A receiver verifies a delivery with :func:`verify_signature`::

    from promocodes.webhooks import verify_signature

    if not verify_signature(secret, request.headers["Promocodes-Signature"], raw_body):
        return 400  # not from this server, altered, or replayed long after it was signed

The worker that sends deliveries is ``promocodes.webhooks.worker``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import msgspec

from promocodes.domain.times import format_rfc3339, from_micros
from promocodes.models import WEBHOOK_TYPES, DueDelivery

__all__ = ["SIGNATURE_HEADER", "delivery_body", "sign", "signature_header", "verify_signature"]

SIGNATURE_HEADER = "Promocodes-Signature"


def delivery_body(delivery: DueDelivery) -> bytes:
    """The JSON body of a delivery, made from immutable rows (the event and its code's text) only, so that every
    retry sends the same bytes: ``{"id", "type", "created", "data": {"loyalty_id", "code", "profile_id",
    "database_id", ...the event's details}}``; absent values are ``null``."""
    data: dict[str, Any] = {
        "loyalty_id": delivery.program_id,
        "code": delivery.code,
        "profile_id": delivery.profile_id,
        "database_id": delivery.database_id,
        **delivery.details,
    }
    body = {
        "id": str(delivery.event_id),
        "type": WEBHOOK_TYPES[delivery.event].value,
        "created": format_rfc3339(from_micros(delivery.time)),
        "data": data,
    }
    return msgspec.json.encode(body)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<raw body>"`` keyed by the secret."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The value of ``Promocodes-Signature``: ``t=<unix seconds>,v1=<signature>``, signed at ``timestamp``
    (now when omitted). Each attempt is signed anew, so its ``t`` is the time of that attempt."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={sign(secret, moment, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, tolerance_seconds: int = 300, *, now: float | None = None
) -> bool:
    """Whether ``header`` (the ``Promocodes-Signature`` value) signs ``body`` with ``secret``, at a time within
    ``tolerance_seconds`` of now (a captured delivery cannot be replayed later). Any ``v1`` of the header may match
    (room for a secret being rotated); the comparison takes constant time. A malformed header is False, never an
    exception."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, separator, value = part.strip().partition("=")
        if not separator:
            return False
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body)
    # Every candidate is compared (no early exit), each in constant time.
    matches = [hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in signatures]
    return any(matches)
