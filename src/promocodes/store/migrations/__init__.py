"""Versioned schema migrations: ``<dialect>/NNNN_name.sql``, applied in name order, each exactly once.

Each adapter records applied versions in ``schema_migrations`` and applies the rest in one transaction per file.
"""

from __future__ import annotations

from importlib import resources


def migration_files(dialect: str) -> list[tuple[str, str]]:
    """``(version, sql)`` for every migration of the dialect, oldest first."""
    folder = resources.files(__package__).joinpath(dialect)
    files = sorted((entry.name, entry) for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for name, entry in files]


CREATE_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied BIGINT NOT NULL)"
)


def migration_status(dialect: str, applied: set[str]) -> tuple[list[str], list[str]]:
    """``(applied, pending)`` version lists, oldest first, given the versions a database has recorded."""
    return sorted(applied), [version for version, _ in migration_files(dialect) if version not in applied]
