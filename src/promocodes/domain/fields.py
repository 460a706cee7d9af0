"""Custom profile fields compare by one text form (docs/api.md#profile-matching)."""

from __future__ import annotations

from typing import Any

import msgspec


def field_text(value: Any) -> str:
    """The text a custom field is matched by: strings as they are, numbers and booleans as JSON writes them, so that
    a field stored as ``42`` is found by ``"42"`` and the other way round."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()
