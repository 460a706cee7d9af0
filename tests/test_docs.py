"""docs/api.md is the reference the code cites: every cited section exists, every API method has its own section,
and no comment sends a reader to a document outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from promocodes.http.routes import METHODS
from promocodes.models import PROGRAM_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
SOURCES = sorted((ROOT / "src" / "promocodes").rglob("*.py"))
CITING = [*SOURCES, *sorted((ROOT / "tests").rglob("*.py")), ROOT / "README.md"]
CITATION = re.compile(r"docs/api\.md#([\w-]+)")
OUTSIDE_SPEC = re.compile(r"\bspec\s+[0-9]", re.IGNORECASE)
API_PREFIX = "/api/v1.1/"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (``-`` and ``_`` stay), spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """The ATX headings of a Markdown text, outside fenced code blocks."""
    found: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return found


def anchors(markdown: str) -> set[str]:
    """Every anchor of the page; a repeated heading gets ``-1``, ``-2``… as on GitHub."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in headings(markdown):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def sections(markdown: str) -> dict[str, str]:
    """Each heading's anchor with the text up to the next heading."""
    parts = re.split(r"^(#{1,6} .*)$", markdown, flags=re.MULTILINE)
    return {github_anchor(parts[i].lstrip("#")): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def method_anchor(path: str) -> str:
    """``/api/v1.1/promocodes/activate`` → ``activate``; ``…/promocodes/programs/create`` → ``programs-create``;
    ``/api/v1.1/tokens/revoke`` → ``tokens-revoke``."""
    return path.removeprefix(API_PREFIX).removeprefix("promocodes/").replace("/", "-")


def test_the_anchor_rule_matches_github() -> None:
    assert github_anchor("Programs: create") == "programs-create"
    assert github_anchor("SQLite: reads beside a long write") == "sqlite-reads-beside-a-long-write"
    assert github_anchor("`GET /openapi.json`") == "get-openapijson"
    assert github_anchor("export_all") == "export_all"


@pytest.mark.parametrize("path", CITING, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_cited_section_exists(path: Path) -> None:
    known = anchors(API_DOC.read_text(encoding="utf-8"))
    cited = set(CITATION.findall(path.read_text(encoding="utf-8")))
    assert cited <= known, f"{path.relative_to(ROOT)} cites sections docs/api.md does not have: {cited - known}"


def test_the_code_cites_the_reference_somewhere() -> None:
    """The citations the previous test checks are really there (a pattern that matched nothing would pass it)."""
    cited = {anchor for path in SOURCES for anchor in CITATION.findall(path.read_text(encoding="utf-8"))}
    assert {"activate", "order-of-checks", "profile-matching", "program-settings", "error-codes"} <= cited


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE_SPEC.search(line)
    ]
    assert offending == []


@pytest.mark.parametrize("path", [method.path for method in METHODS])
def test_every_api_method_has_its_own_section(path: str) -> None:
    text = API_DOC.read_text(encoding="utf-8")
    anchor = method_anchor(path)
    assert anchor in anchors(text), f"docs/api.md has no heading whose anchor is #{anchor} for {path}"
    assert f"`POST {path}`" in sections(text)[anchor], f"the section #{anchor} does not name POST {path}"


def test_every_service_path_has_its_own_section() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    assert {"get-healthz", "get-readyz", "get-metrics", "get-openapijson", "get-docs"} <= anchors(text)


def test_the_settings_table_lists_every_program_setting_in_order() -> None:
    """The table of docs/api.md#program-settings follows the settings' declaration (``models.ProgramSettings``):
    a setting added there without its row, or a row left behind, fails here."""
    text = API_DOC.read_text(encoding="utf-8")
    section = text.split("\n## Program settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = [name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert documented == list(PROGRAM_SETTINGS)


ANY_CITATION = re.compile(r"docs/([\w-]+)\.md#([\w-]+)")
DOCS = ROOT / "docs"


@pytest.mark.parametrize("path", [*CITING, *sorted(DOCS.glob("*.md"))], ids=lambda path: str(path.relative_to(ROOT)))
def test_every_cited_section_of_every_doc_exists(path: Path) -> None:
    """Citations of the other documents (docs/console.md#…, docs/performance.md#…) lead somewhere too."""
    for name, anchor in set(ANY_CITATION.findall(path.read_text(encoding="utf-8"))):
        doc = DOCS / f"{name}.md"
        assert doc.exists(), f"{path.relative_to(ROOT)} cites docs/{name}.md, which does not exist"
        assert anchor in anchors(doc.read_text(encoding="utf-8")), f"{path.relative_to(ROOT)}: docs/{name}.md#{anchor}"
