"""The webhook signature and its check (docs/api.md#webhooks): what a receiver runs with
``promocodes.webhooks.verify_signature``."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from promocodes.webhooks import sign, signature_header, verify_signature

SECRET = "whsec_test"
BODY = b'{"id":"1","type":"code.activated"}'
T = 1_750_000_000


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == expected
    assert signature_header(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_a_fresh_signature_of_the_same_body_and_secret_verifies() -> None:
    assert verify_signature(SECRET, signature_header(SECRET, BODY, T), BODY, now=T + 299)
    assert verify_signature(SECRET, signature_header(SECRET, BODY), BODY)


@pytest.mark.parametrize(
    ("secret", "header", "body", "now"),
    [
        ("whsec_other", signature_header(SECRET, BODY, T), BODY, T),  # another secret
        (SECRET, signature_header(SECRET, BODY, T), BODY + b" ", T),  # another body
        (SECRET, signature_header(SECRET, BODY, T), BODY, T + 301),  # too old: a replay
        (SECRET, signature_header(SECRET, BODY, T), BODY, T - 301),  # from the future
        (SECRET, f"t={T}", BODY, T),  # no signature
        (SECRET, f"v1={sign(SECRET, T, BODY)}", BODY, T),  # no time
        (SECRET, f"t=soon,v1={sign(SECRET, T, BODY)}", BODY, T),
        (SECRET, "garbage", BODY, T),
        (SECRET, "", BODY, T),
        (SECRET, f"t={T},v1=é", BODY, T),
    ],
)
def test_anything_else_is_refused_without_an_exception(secret: str, header: str, body: bytes, now: int) -> None:
    assert verify_signature(secret, header, body, now=now) is False


def test_one_matching_v1_among_several_is_enough() -> None:
    header = f"t={T},v1={'0' * 64},v1={sign(SECRET, T, BODY)}"
    assert verify_signature(SECRET, header, BODY, now=T)
