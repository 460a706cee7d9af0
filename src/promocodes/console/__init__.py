"""The web console at /console (docs/console.md): server-rendered pages over the same services as the API."""

from __future__ import annotations

from promocodes.console.routes import console_mount

__all__ = ["console_mount"]
