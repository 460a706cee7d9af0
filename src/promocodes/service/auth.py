"""Tokens: how they are made, stored (only as a hash) and checked, and what each role may do (spec 9.1)."""

from __future__ import annotations

import hashlib
import secrets

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


async def authenticate(store: Store, token: str | None) -> Principal:
    if not token:
        raise Unauthorized("Token is missing: send it as `token`, or as `Authorization: Bearer <token>`")
    principal = await store.principal_for(token_hash(token))
    if principal is None:
        raise Unauthorized("Token is not valid or was revoked")
    return principal


def authorize(principal: Principal, capability: Capability) -> None:
    if capability not in ROLE_CAPABILITIES[principal.role]:
        raise Forbidden(f"Access denied: a `{principal.role}` token may not {capability.value}")
