"""Every example request in README.md, run in order against a live server on a fresh SQLite file, with its answer
compared to the one the README shows (times, ids and tokens by their shape only).

A real ``promocodes serve`` rather than the in-process app, because the README's examples are curl lines for a
user's first minutes: the request goes through the real HTTP server with exactly the headers curl sends (``-d``
labels every body a form), and ``$T`` is the admin token the first start prints, read from its output as a user
reads it. That costs about a second of start-up. SQLite only: the examples and their answers are the same on
PostgreSQL, whose behaviour the rest of the suite covers endpoint by endpoint.

The reading of the README and the comparison rules are in ``tests/readme_examples.py``; the unit tests below pin
them down, so that a wrong shown answer cannot pass because the comparison became lenient.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from defusedxml.ElementTree import fromstring as xml_fromstring

from tests.live import free_port, stop, wait_until_healthy
from tests.readme_examples import (
    END_SECTION,
    FIRST_SECTION,
    Example,
    answer_mismatches,
    examples,
    hint_mismatches,
    json_mismatches,
    loads_shown,
    shown_answer,
    statements,
    xml_mismatches,
)

README = Path(__file__).resolve().parent.parent / "README.md"
FIRST_START_TOKEN = re.compile(r"^\s*(pc_[A-Za-z0-9_-]+)\s*$", re.MULTILINE)


@pytest.fixture
def first_start(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A server started as the README's quick start does, on a fresh SQLite file: its base URL and the admin token
    its first start printed."""
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PROMOCODES_")}
    database_url = f"sqlite:///{tmp_path / 'promocodes.db'}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "promocodes", "serve", "--port", str(port), "--database-url", database_url],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stopping it stops every process it started
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, base_url, log_path)
            printed = FIRST_START_TOKEN.findall(log_path.read_text())
            assert len(printed) == 1, log_path.read_text()
            yield base_url, printed[0]
        finally:
            stop(process)


def _error_code(content_type: str, body: bytes) -> int:
    """The ``error`` of an envelope, JSON or XML."""
    if "xml" in content_type:
        return int(xml_fromstring(body).findtext("error", "-1"))
    error: int = json.loads(body)["error"]
    return error


def _problems(example: Example, response: httpx2.Response) -> list[str]:
    """What is wrong with the answer to one example: a 5xx always; else a difference from the shown answer, or,
    when none is shown, an error (the README marks its error examples by showing their answer)."""
    if response.status_code >= 500:
        return [f"HTTP {response.status_code}: {response.text[:300]}"]
    content_type = response.headers.get("content-type", "")
    problems = []
    if example.shown is not None:
        problems += answer_mismatches(example.shown, content_type, response.content)
    elif _error_code(content_type, response.content) != 0:
        problems.append(f"an error and no answer shown: {response.text[:300]}")
    if example.hint is not None and "json" in content_type:
        problems += hint_mismatches(example.hint, response.json())
    return problems


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_readme_example_answers_as_shown(first_start: tuple[str, str]) -> None:
    base_url, token = first_start
    readme = README.read_text()
    found = examples(readme, token)
    walk_and_api = readme[readme.index(FIRST_SECTION) : readme.index(END_SECTION)]
    # Every request line is read (none skipped by a parser that did not recognise it), and enough of them show an
    # answer for the comparison to mean something.
    assert len(found) == len(re.findall(r"^(?:curl|post) ", walk_and_api, flags=re.MULTILINE))
    assert sum(example.shown is not None for example in found) >= 8
    failures: list[str] = []
    with httpx2.Client(base_url=base_url, timeout=30.0, trust_env=False) as client:
        for example in found:
            content = None if example.body is None else example.body.encode()
            response = client.request(
                "POST" if content is not None else "GET", example.path, headers=example.headers, content=content
            )
            failures += [f"README line {example.line}: {problem}" for problem in _problems(example, response)]
    assert not failures, "\n".join(failures)


# --- the reading and the comparison ------------------------------------------------------------------------------


def test_shell_words_quotes_variables_continuations_and_comments() -> None:
    block = 'H="Bearer $T"\ncurl -s $API/x -H "$H" \\\n  -d \'{"a": "$T"}\'   # → note\n# {"b":1}\n'
    variables = {"T": "pc_1", "API": "/api"}
    found = []
    for statement in statements(block, 10, variables):
        if statement.words and statement.words[0].startswith("H="):
            variables["H"] = statement.words[0].removeprefix("H=")
        found.append((statement.line, statement.words, statement.comment))
    assert found == [
        (10, ["H=Bearer pc_1"], None),
        (11, ["curl", "-s", "/api/x", "-H", "Bearer pc_1", "-d", '{"a": "$T"}'], "→ note"),
        (13, [], '{"b":1}'),
    ]


def test_the_answer_under_a_request_and_the_prose_after_it() -> None:
    assert shown_answer('{"a":"}{"}   (prose {not json})') == '{"a":"}{"}'
    assert shown_answer("<xml><e/></xml> (prose)") == "<xml><e/></xml>"
    readme = (
        f'{FIRST_SECTION}\n\n```sh\ncurl -s /api/a -d \'x\'\n# {{"error":0,\n#  "data":null}}\n\n'
        f"curl -s /api/b -H 'Accept: application/xml'\n```\n{END_SECTION}\n"
    )
    first, second = examples(readme, "pc_1")
    assert (first.path, first.body, first.shown) == ("/api/a", "x", '{"error":0,\n"data":null}')
    assert first.headers == {"Content-Type": "application/x-www-form-urlencoded"}  # as curl -d labels it
    assert (second.path, second.body, second.shown, second.headers) == (
        "/api/b",
        None,
        None,
        {"Accept": "application/xml"},
    )


def test_a_wrong_value_a_missing_key_or_an_unshown_key_is_a_mismatch() -> None:
    actual = {"data": None, "error": 409, "error_text": "Promo code already activated"}
    assert not list(json_mismatches(loads_shown(json.dumps(actual)), actual))
    assert list(json_mismatches({**actual, "error": 0}, actual))
    assert list(json_mismatches({**actual, "error": True}, {**actual, "error": 1}))
    assert list(json_mismatches({**actual, "extra": 1}, actual))
    assert list(json_mismatches({"data": None, "error": 409}, actual))  # not abbreviated, so every key is shown


def test_an_ellipsis_abbreviates_keys_items_and_values_only() -> None:
    actual = {"data": [{"code": "A", "x": "1"}, {"code": "B"}], "error": 0, "inserted": 2}
    assert not list(json_mismatches(loads_shown('{"data":[{"code":"A","x":"…"},…],…}'), actual))
    assert not list(json_mismatches(loads_shown('{"data":[{"code":"A",…},{"code":"B"}],…,"inserted":2}'), actual))
    assert list(json_mismatches(loads_shown('{"data":[{"code":"B",…},…],…}'), actual))  # a prefix, in order
    assert list(json_mismatches(loads_shown('{"data":[{"code":"A",…},{"code":"B"},{"code":"C"},…],…}'), actual))
    assert list(json_mismatches(loads_shown('{"data":[…],…,"inserted":3}'), actual))


def test_times_and_ids_compare_by_shape() -> None:
    shown = {"created": "2026-03-01T09:30:00Z", "expired": "", "profile_id": "65a1f0c2e4b0a1b2c3d4e5f6", "id": 1}
    same_shape = {"created": "2030-01-02T03:04:05Z", "expired": "", "profile_id": "0123456789abcdef01234567", "id": 7}
    assert not list(json_mismatches(shown, same_shape))
    assert list(json_mismatches(shown, {**same_shape, "created": ""}))
    assert list(json_mismatches(shown, {**same_shape, "expired": "2030-01-02T03:04:05Z"}))
    assert list(json_mismatches(shown, {**same_shape, "profile_id": None}))
    assert list(json_mismatches(shown, {**same_shape, "id": "7"}))
    assert list(json_mismatches(shown, {key: value for key, value in same_shape.items() if key != "id"}))


def test_xml_answers_compare_names_order_and_texts() -> None:
    shown = xml_fromstring("<xml><data><created>…</created><code>A</code></data><error>0</error></xml>")
    assert not list(
        xml_mismatches(
            shown, xml_fromstring("<xml><data><created>x</created><code>A</code></data><error>0</error></xml>")
        )
    )
    for wrong in (
        "<xml><data><created>x</created><code>B</code></data><error>0</error></xml>",
        "<xml><data><code>A</code><created>x</created></data><error>0</error></xml>",
        "<xml><data><created>x</created></data><error>0</error></xml>",
        "<xml><data><created>x</created><code>A</code><more/></data><error>0</error></xml>",
    ):
        assert list(xml_mismatches(shown, xml_fromstring(wrong))), wrong
    assert answer_mismatches("<xml></xml>", "application/json", b"{}")  # shown as XML, answered as JSON


def test_a_note_after_an_arrow_is_checked_when_it_names_data() -> None:
    answer = {"data": {"id": 1, "token": "pc_x"}, "error": 0}
    assert not hint_mismatches("→ data.id = 1, the loyalty_id", answer)
    assert hint_mismatches("→ data.id = 2, the loyalty_id", answer)
    assert not hint_mismatches("→ data.token, shown only now", answer)
    assert hint_mismatches("→ data.code", answer)
    assert hint_mismatches('→ {"code": "A"}', answer)
    assert not hint_mismatches("every method answers XML too", answer)
