"""The statements the server runs on its hot paths, read from ``promocodes/store/codes.py`` itself, so that a
baseline runs exactly what the server runs — and a change of the store's SQL changes the baseline with it.

A statement written inside a function is read from the source (``ast``); the store builds some as f-strings
around an adapter's lock clause (``{conn.skip_locked}``), filled in here with the adapter's own value
(:data:`ADAPTER_CLAUSES`). A statement the store composes at import time from shared parts is a module-level
constant, read from the imported module. A statement that cannot be found is an error
naming it (tests/bench/test_statements.py fails first), never a silent stand-in.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import promocodes.store.codes as codes_module
from promocodes.store.postgres import PostgresConnection
from promocodes.store.sqlite import SqliteConnection

ADAPTER_CLAUSES = {"postgres": PostgresConnection, "sqlite": SqliteConnection}


@dataclass(frozen=True)
class Hot:
    """Where a hot statement lives — a literal inside the function ``holder``, or, when ``constant``, the
    module-level constant of that name (the store composes those from shared parts) — and how its text begins."""

    name: str
    holder: str
    starts: str
    constant: bool = False


#: the redemption: ONE conditional UPDATE (docs/api.md#activate)
ACTIVATE = Hot("activate", "_activate", "UPDATE code_bindings SET activated")
#: the pool pick: ONE conditional UPDATE claiming the oldest free code (docs/api.md#attach)
CLAIM = Hot("claim", "attach_from_pool", "UPDATE codes SET attached_count = 1 WHERE id = (")
#: `get`: ONE statement reading the program and the code (docs/api.md#get)
GET = Hot("get", "_PROGRAM_AND_CODE_STATE", "SELECT p.", constant=True)


def _normal(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def _render(node: ast.expr, adapter: str) -> str | None:
    """The text of a string literal, or of an f-string whose only holes are ``conn.<clause>``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if not isinstance(node, ast.JoinedStr):
        return None
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
        elif (
            isinstance(value, ast.FormattedValue)
            and isinstance(value.value, ast.Attribute)
            and isinstance(value.value.value, ast.Name)
            and value.value.value.id == "conn"
        ):
            parts.append(str(getattr(ADAPTER_CLAUSES[adapter], value.value.attr)))
        else:
            return None
    return "".join(parts)


def find(hot: Hot, adapter: str, source: str | None = None) -> str:
    """The statement ``hot`` names, as ``adapter`` runs it (PostgreSQL ``$n`` placeholders), whitespace folded.
    ``source`` replaces the module's text, where literals are looked for (tests)."""
    if hot.constant:
        value = getattr(codes_module, hot.holder, None)
        if isinstance(value, str) and _normal(value).startswith(hot.starts):
            return _normal(value)
        raise LookupError(f"{hot.name}: no constant {hot.holder} starting {hot.starts!r} in store/codes.py")
    text = source if source is not None else Path(codes_module.__file__).read_text()
    for node in ast.walk(ast.parse(text)):
        named = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == hot.holder
        assigned = isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == hot.holder for target in node.targets
        )
        if not (named or assigned):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.expr):
                rendered = _render(inner, adapter)
                if rendered is not None and _normal(rendered).startswith(hot.starts):
                    return _normal(rendered)
    raise LookupError(f"{hot.name}: no statement starting {hot.starts!r} in {hot.holder} of store/codes.py")


def substitute(sql: str, values: dict[int, str]) -> str:
    """Replace ``$n`` by ``values[n]`` (a pgbench expression or a literal); every placeholder must be given."""

    def one(match: re.Match[str]) -> str:
        return values[int(match.group(1))]

    return re.sub(r"\$(\d+)", one, sql)


def to_sqlite(sql: str) -> str:
    """PostgreSQL's ``$1`` placeholders → SQLite's numbered ``?1``, as the SQLite adapter translates them."""
    return re.sub(r"\$(\d+)", r"?\1", sql)
