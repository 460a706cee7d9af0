"""Settings: from the environment (``PROMOCODES_*``), with command-line flags on top (``promocodes serve --help``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///promocodes.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    #: bodies larger than this are refused with HTTP 413 before they are read whole
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: requests per second allowed to one token in one worker; 0 turns the limit off
    rate_limit: int = 0
    #: PostgreSQL connections per worker
    pool_size: int = 10
    #: how long a worker trusts a token it has checked; a revocation reaches other workers within this time
    token_cache_seconds: int = 2

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            database_url=env.get("PROMOCODES_DATABASE_URL") or DEFAULT_DATABASE_URL,
            max_body_bytes=_int(env, "PROMOCODES_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            rate_limit=_int(env, "PROMOCODES_RATE_LIMIT", 0),
            pool_size=_int(env, "PROMOCODES_POOL_SIZE", 10),
            token_cache_seconds=_int(env, "PROMOCODES_TOKEN_CACHE_SECONDS", 2),
        )

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables, for worker processes started by uvicorn."""
        return {
            "PROMOCODES_DATABASE_URL": self.database_url,
            "PROMOCODES_MAX_BODY_BYTES": str(self.max_body_bytes),
            "PROMOCODES_RATE_LIMIT": str(self.rate_limit),
            "PROMOCODES_POOL_SIZE": str(self.pool_size),
            "PROMOCODES_TOKEN_CACHE_SECONDS": str(self.token_cache_seconds),
        }


def _int(env: os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value
