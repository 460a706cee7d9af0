"""Storage: one interface (:class:`Store`) and two adapters, chosen by the database URL
(``sqlite:///…`` or ``postgresql://…``).

:class:`Store` is composed here from one mixin per domain, each over ``store.base.StoreBase`` and holding its own SQL
and locks: ``store.accounts``, ``store.programs``, ``store.profiles``, ``store.codes``, ``store.events`` (the
codes' history), ``store.webhooks`` (webhooks and their outbox) and ``store.idempotency`` (row mapping they share is
in ``store.rows``; the transaction that keeps an idempotent answer with its change is in ``store.claims``). The
adapters, ``store.sqlite`` and ``store.postgres``, subclass it."""

from __future__ import annotations

from promocodes.config import mask_password
from promocodes.errors import BadRequest
from promocodes.store.accounts import AccountStore
from promocodes.store.codes import CodeStore
from promocodes.store.events import EventStore
from promocodes.store.idempotency import IdempotencyStore
from promocodes.store.profiles import ProfileStore
from promocodes.store.programs import ProgramStore
from promocodes.store.webhooks import WebhookStore

__all__ = ["Store", "open_store", "sqlite_path"]


class Store(AccountStore, ProgramStore, ProfileStore, CodeStore, EventStore, IdempotencyStore, WebhookStore):
    """The storage interface: what the service may ask of a database, as whole operations (one per method, see
    ``store.base``). Each adapter provides the lifecycle of ``StoreBase``."""


def sqlite_path(url: str) -> str | None:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL; None for other schemes."""
    if not url.startswith("sqlite://"):
        return None
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise BadRequest(f"SQLite URL {url!r} needs a path: sqlite:///relative.db or sqlite:////absolute.db")
    return rest[1:] or ":memory:"


def open_store(url: str, pool_size: int = 10, timeout: float = 5.0) -> Store:
    """A store for the URL, not yet opened. ``timeout``: seconds one operation may take, waiting for a connection
    or a lock included; past it the operation fails with ``StorageUnavailable`` (503) instead of hanging."""
    path = sqlite_path(url)
    if path is not None:
        from promocodes.store.sqlite import SqliteStore

        return SqliteStore(path, timeout=timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from promocodes.store.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, timeout=timeout)
    shown = mask_password(url)  # `mysql://app:secret@db/x` must not print the secret
    raise BadRequest(f"Unsupported database URL {shown!r}: use sqlite:///file.db or postgresql://user@host/dbname")
