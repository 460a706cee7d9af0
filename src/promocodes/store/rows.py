"""Row → model mapping shared by the store's domain modules: a row as both adapters return it (``Row``) becomes
the record the service receives (``promocodes.models``), and a program setting becomes its column value.

SQLite keeps booleans as 0/1 and both adapters keep times as integer microseconds: these helpers are the one place
that reads them back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from promocodes.domain.times import from_micros, to_micros
from promocodes.models import PROGRAM_SETTINGS, SETTINGS, Binding, Profile, Program, Role, TokenInfo
from promocodes.store.base import Row


def _flag(value: Any) -> bool:
    return bool(value)


PROGRAM_COLUMNS = ("id", "account_id", *PROGRAM_SETTINGS, "created")
_PROGRAM_COLUMNS = ", ".join(PROGRAM_COLUMNS)
_SETTING_KINDS = {setting.name: setting.kind for setting in SETTINGS}


def _column_value(kind: type, value: Any) -> Any:
    """A setting as read from its column: SQLite keeps booleans as 0/1 and both adapters keep times as micros."""
    if kind is bool:
        return _flag(value)
    if kind is datetime:
        return from_micros(value)
    return value


def _program(row: Row, prefix: str = "") -> Program:
    """The program of a row holding :data:`PROGRAM_COLUMNS`, each named with ``prefix`` when a join needs one."""
    return Program(
        id=row[prefix + "id"],
        account_id=row[prefix + "account_id"],
        created=_time(row[prefix + "created"]),
        **{setting.name: _column_value(setting.kind, row[prefix + setting.name]) for setting in SETTINGS},
    )


def _time(value: int) -> datetime:
    moment = from_micros(value)
    assert moment is not None, "a NOT NULL time column came back NULL"
    return moment


def _setting_value(name: str, value: Any) -> Any:
    return to_micros(value) if _SETTING_KINDS[name] is datetime and value is not None else value


def _token(row: Row) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        role=Role(row["role"]),
        created=_time(row["created"]),
        revoked=from_micros(row["revoked"]),
    )


def _profile(row: Row) -> Profile:
    return Profile(
        pk=row["id"],
        database_id=row["database_id"],
        profile_id=row["profile_id"],
        email=row["email"],
        phones=msgspec.json.decode(row["phones"]),
        fields=msgspec.json.decode(row["fields"]),
        created=_time(row["created"]),
        updated=_time(row["updated"]),
    )


def _binding(row: Row, side: str) -> Binding | None:
    """The ``latest_*`` or ``own_*`` columns of :data:`_CODE_STATE` as a binding, None when there is none."""
    if row[f"{side}_profile_pk"] is None:
        return None
    return Binding(
        profile_pk=row[f"{side}_profile_pk"],
        profile_id=row[f"{side}_profile_id"],
        database_id=row[f"{side}_database_id"],
        attached=_time(row[f"{side}_attached"]),
        activated=from_micros(row[f"{side}_activated"]),
    )
