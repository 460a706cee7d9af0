"""Settings: from the environment (``PROMOCODES_*``), with command-line flags on top (``promocodes serve --help``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from urllib.parse import urlsplit, urlunsplit

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
    #: seconds one database operation may take (waiting for a connection or a lock included); past it, HTTP 503
    db_timeout: float = 5.0
    #: bytes of request bodies one worker holds in memory at once; past it a request waits, then gets HTTP 503
    body_memory_bytes: int = 256 * 1024 * 1024
    #: seconds a request may wait for room under ``body_memory_bytes`` before it gets HTTP 503
    body_memory_wait: float = 5.0
    #: seconds a client may take to send a whole body; past it the request is answered 408 and dropped
    body_timeout: float = 30.0
    #: seconds a client may take to send a request's headers; past it the connection is closed
    header_timeout: float = 10.0
    #: seconds an idle kept-alive connection stays open; behind a reverse proxy that keeps connections to the
    #: server, make it longer than the proxy's own idle timeout, so the proxy never sends on a closing connection
    keep_alive_timeout: int = 5
    #: failed look-ups (unknown code or program on get, activate, attach, update, detach) allowed to one token, and
    #: to one client address, per ``guard_window`` seconds; past it, HTTP 429 on those methods. 0 turns it off
    failed_lookup_limit: int = 100
    #: failed token checks allowed to one client address per ``guard_window`` seconds; past it, HTTP 429. 0 = off
    failed_auth_limit: int = 20
    #: the window, in seconds, of the two limits above
    guard_window: int = 60

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from ``PROMOCODES_<FIELD NAME>``; a variable not set keeps the default."""
        env = os.environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(_env_name(field.name))
            if not raw:
                continue
            values[field.name] = _parse(_env_name(field.name), raw, type(getattr(cls, field.name)))
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables, for worker processes started by uvicorn."""
        return {_env_name(field.name): str(getattr(self, field.name)) for field in fields(self)}


def _env_name(field: str) -> str:
    return f"PROMOCODES_{field.upper()}"


def _parse(name: str, raw: str, kind: type) -> object:
    if kind is str:
        return raw
    try:
        value = kind(raw)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {expected}, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


def mask_password(url: str) -> str:
    """The URL with its password replaced by ``***``, for anything printed or logged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if _has_port(parts.netloc) else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _has_port(netloc: str) -> bool:
    return ":" in netloc.rpartition("@")[2].rpartition("]")[2]
