"""The command line refuses to create a database in any command but ``serve`` and ``migrate``: the tests here start
from a migrated database of each adapter (the refusal itself is tested on a path no command has touched)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from promocodes.cli.main import app


@pytest.fixture
def database_url(database_url: str) -> str:
    result = CliRunner().invoke(app, ["migrate", "--database-url", database_url])
    assert result.exit_code == 0, result.stderr
    return database_url
