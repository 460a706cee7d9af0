"""The console's session: one signed cookie (docs/console.md#sessions).

The cookie holds a random nonce, the SHA-256 of the token signed in with (the hash the database keeps, never the
token itself) and the time of sign-in, signed with HMAC-SHA256 under the ``console_secret`` setting. Nothing is kept
on the server, so a session works on every worker that shares the secret, and a revoked token ends its sessions at
the next page (each page looks the hash up again). The token never travels back to the browser: not in a URL, not in
a page, not in the cookie.

The CSRF token of every form is an HMAC of the session's nonce under the same key (a second purpose prefix, so that
neither value can stand for the other): an attacker's page cannot read the cookie, so it cannot compute it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

#: the cookie's name; its path is the console's (/console), so the API never receives it
COOKIE = "promocodes_console"
#: a session ends this long after sign-in (the browser drops the cookie then too)
SESSION_SECONDS = 12 * 3600
_SESSION_PURPOSE = b"promocodes console session\x00"
_CSRF_PURPOSE = b"promocodes console csrf\x00"


@dataclass(frozen=True)
class Session:
    """What the cookie says: ``token_digest`` is None before sign-in (the sign-in form needs a CSRF token too)."""

    nonce: str
    token_digest: str | None
    issued: int

    @classmethod
    def fresh(cls, token_digest: str | None = None) -> Session:
        """A new session with a new nonce: sign-in always starts one, so a nonce planted before it is worthless."""
        return cls(secrets.token_urlsafe(16), token_digest, int(time.time()))


def console_key(secret: str) -> bytes:
    """The signing key: from the ``console_secret`` setting, or 32 random bytes for this process when it is unset
    (sessions then end at a restart and do not span ``--workers``: docs/console.md#sessions)."""
    if not secret:
        return secrets.token_bytes(32)
    return hashlib.sha256(b"promocodes console key\x00" + secret.encode("utf-8")).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session cookies and the CSRF tokens derived from them, under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: bytes, message: bytes) -> bytes:
        return hmac.new(self._key, purpose + message, hashlib.sha256).digest()

    def dump(self, session: Session) -> str:
        body = json.dumps(
            {"n": session.nonce, "d": session.token_digest, "i": session.issued}, separators=(",", ":")
        ).encode("utf-8")
        return f"{_b64(body)}.{_b64(self._mac(_SESSION_PURPOSE, body))}"

    def load(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds; None when it is missing, altered, signed under another key, or too old."""
        if not value or value.count(".") != 1:
            return None
        body_text, mac_text = value.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(_SESSION_PURPOSE, body)):
            return None
        try:
            fields = json.loads(body)
            session = Session(str(fields["n"]), fields["d"], int(fields["i"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.token_digest is not None and not isinstance(session.token_digest, str):
            return None
        if (now if now is not None else time.time()) - session.issued > SESSION_SECONDS:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(_CSRF_PURPOSE, session.nonce.encode("utf-8")))

    def csrf_valid(self, session: Session | None, given: str | None) -> bool:
        if session is None or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.csrf_token(session).encode("ascii"))
