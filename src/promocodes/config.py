"""Settings: declared once in :class:`Settings`; read from flags and ``PROMOCODES_*`` variables by the command line
(``promocodes serve --help``), from the environment alone by the worker processes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "sqlite:///promocodes.db"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    """A setting's default, with the one sentence that documents it (``--help``, ``promocodes config``); a
    ``secret`` one is never printed (``promocodes config`` shows it as ``***`` when set)."""
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every setting of the server, declared once: each is the flag ``--<name>`` of ``promocodes serve`` and
    ``promocodes config``, and the environment variable ``PROMOCODES_<NAME>``; ``serve`` hands all of them to its
    workers through the environment."""

    database_url: str = _setting(
        DEFAULT_DATABASE_URL, "sqlite:///relative.db, sqlite:////absolute.db or postgresql://user@host:port/dbname."
    )
    max_body_bytes: int = _setting(DEFAULT_MAX_BODY_BYTES, "Larger request bodies get HTTP 413.")
    rate_limit: int = _setting(0, "Requests per second one token may make in one worker; 0 = no limit.")
    pool_size: int = _setting(10, "PostgreSQL connections per worker.")
    token_cache_seconds: int = _setting(
        2, "Seconds a worker trusts a token it checked; a revocation reaches the other workers within this time."
    )
    db_timeout: float = _setting(
        5.0, "Seconds one database operation may take, waiting for a connection or a lock included; then HTTP 503."
    )
    body_memory_bytes: int = _setting(
        256 * 1024 * 1024, "Bytes of request bodies one worker holds at once; past it a request waits, then 503."
    )
    body_memory_wait: float = _setting(5.0, "Seconds a request waits for room under body-memory-bytes, then 503.")
    body_timeout: float = _setting(30.0, "Seconds a client may take to send a whole body; then HTTP 408, closed.")
    header_timeout: float = _setting(10.0, "Seconds a client may take to send a request's headers; then closed.")
    keep_alive_timeout: int = _setting(
        5, "Seconds an idle kept-alive connection stays open (behind a proxy: longer than the proxy's idle timeout)."
    )
    failed_lookup_limit: int = _setting(
        100,
        "Look-ups finding no code (get, activate, update, attach, detach) per token and per client address in one "
        "guard window; past it, HTTP 429. 0 = off.",
    )
    failed_auth_limit: int = _setting(
        20, "Failed token checks per client address in one guard window; past it, HTTP 429. 0 = off."
    )
    guard_window: int = _setting(60, "Seconds of the window of the two limits above.")
    idempotency_hours: int = _setting(
        24, "Hours the answer to a request with an Idempotency-Key is kept for its retries; 0 = never replayed."
    )
    webhook_timeout_seconds: float = _setting(
        10.0, "Seconds a webhook receiver has to answer a delivery with 2xx; past it the delivery is retried."
    )
    webhook_retry_seconds: float = _setting(
        10.0, "Seconds before a failed webhook delivery's first retry; each later retry waits twice as long."
    )
    webhook_poll_seconds: float = _setting(1.0, "Seconds between two looks at the webhook outbox for due deliveries.")
    console_secret: str = _setting(
        "",
        "Key that signs the web console's session cookies; unset = random per process (sessions then end at a "
        "restart and do not span workers).",
        secret=True,
    )

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from ``PROMOCODES_<FIELD NAME>``; a variable not set keeps the default."""
        env = os.environ
        values: dict[str, object] = {}
        for setting in fields(cls):
            raw = env.get(env_name(setting.name))
            if not raw:
                continue
            values[setting.name] = _parse(env_name(setting.name), raw, type(getattr(cls, setting.name)))
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The same settings as environment variables, for worker processes started by uvicorn."""
        return {env_name(setting.name): str(getattr(self, setting.name)) for setting in fields(self)}


def shown_settings(settings: Settings) -> dict[str, Any]:
    """The settings as they may be printed: the database password masked, a secret set shown as ``***``."""
    shown = dataclasses.asdict(settings)
    shown["database_url"] = mask_password(settings.database_url)
    for setting in fields(settings):
        if setting.metadata.get("secret") and shown[setting.name]:
            shown[setting.name] = "***"
    return shown


def env_name(setting: str) -> str:
    return f"PROMOCODES_{setting.upper()}"


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
