"""Tokens: how they are made, stored (only as a hash) and checked, and what each role may do (docs/api.md#roles)."""

from __future__ import annotations

import hashlib
import secrets
import time

from promocodes.errors import Forbidden, Unauthorized
from promocodes.models import ROLE_CAPABILITIES, Capability, Principal
from promocodes.store import Store

TOKEN_PREFIX = "pc_"


def new_token() -> str:
    """A fresh token: 256 bits from the cryptographic random source, with a prefix that makes it recognisable."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps. A plain SHA-256 is enough: the token is random, so there is nothing to guess."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Turns a token into a :class:`Principal`.

    A token found valid is remembered for ``ttl`` seconds, so that a busy client costs no database read per
    request. A revocation made through this process forgets every remembered token at once; in other worker
    processes it takes effect within ``ttl`` seconds. ``ttl`` 0 reads the database every time.
    """

    MAX_REMEMBERED = 10_000

    def __init__(self, store: Store, ttl: float = 2.0) -> None:
        self.store = store
        self.ttl = ttl
        self._remembered: dict[str, tuple[float, Principal]] = {}

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token checked within the last ``ttl`` seconds; None otherwise (no I/O)."""
        remembered = self._remembered.get(token_hash(token))
        if remembered is not None and remembered[0] > time.monotonic():
            return remembered[1]
        return None

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("Token is missing: send it as `token`, or as `Authorization: Bearer <token>`")
        principal = self.remembered(token)
        if principal is not None:
            return principal
        digest = token_hash(token)
        now = time.monotonic()
        principal = await self.store.principal_for(digest)
        if principal is None:
            raise Unauthorized("Token is not valid or was revoked")
        if self.ttl > 0:
            if len(self._remembered) >= self.MAX_REMEMBERED:
                self._remembered.clear()  # simpler than an LRU, and only a cache: the next request re-reads
            self._remembered[digest] = (now + self.ttl, principal)
        return principal

    async def principal_of_digest(self, digest: str) -> Principal | None:
        """The principal of the token whose hash is ``digest``, read from the database every time (never the
        cache: the console, which keeps only the hash in its session cookie, asks on every page, so that a revoked
        token ends its sessions at once); None for a token unknown or revoked."""
        return await self.store.principal_for(digest)

    def forget(self) -> None:
        """Called on revocation: the next request of every token is checked against the database again."""
        self._remembered.clear()


def authorize(principal: Principal, capability: Capability) -> None:
    if capability not in ROLE_CAPABILITIES[principal.role]:
        raise Forbidden(f"Access denied: a `{principal.role}` token may not {capability.value}")
