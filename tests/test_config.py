from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from promocodes.config import Settings, env_name, mask_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db.example.org:5432/promo", "postgresql://app:***@db.example.org:5432/promo"),
        ("postgres://app:s3cret@db/promo", "postgres://app:***@db/promo"),
        ("postgresql://app:s3cret@[::1]:5432/promo", "postgresql://app:***@[::1]:5432/promo"),
        ("postgresql://app@db/promo", "postgresql://app@db/promo"),
        ("sqlite:///promocodes.db", "sqlite:///promocodes.db"),
    ],
)
def test_mask_password(url: str, shown: str) -> None:
    assert mask_password(url) == shown


def test_every_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOCODES_POOL_SIZE", "50")
    monkeypatch.setenv("PROMOCODES_TOKEN_CACHE_SECONDS", "0")
    monkeypatch.setenv("PROMOCODES_DB_TIMEOUT", "0.25")
    settings = Settings.from_env()
    assert (settings.pool_size, settings.token_cache_seconds, settings.db_timeout) == (50, 0, 0.25)
    assert Settings.from_env() == Settings(**{**settings.__dict__})
    monkeypatch.setattr("os.environ", {**settings.to_env()})
    assert Settings.from_env() == settings  # what `serve` hands its workers comes back whole


@pytest.mark.parametrize(("name", "raw"), [("PROMOCODES_POOL_SIZE", "ten"), ("PROMOCODES_DB_TIMEOUT", "-1")])
def test_a_bad_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=name):
        Settings.from_env()


def test_the_readme_lists_every_setting_with_its_flag_and_variable() -> None:
    """The Configuration table is the operator's reference: a setting added to Settings must appear there."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `--([a-z-]+)` \| `(PROMOCODES_[A-Z_]+)` \|", readme, flags=re.MULTILINE)
    expected = [(setting.name.replace("_", "-"), env_name(setting.name)) for setting in dataclasses.fields(Settings)]
    assert rows == expected
