"""Lists encoded a page or a column at a time (docs/api.md#export_all, docs/api.md#import): exactly what the
item-by-item encoder writes for the same list, in JSON and in XML."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from promocodes.http.encoding import _xml_members, encode, envelope, stream_pages
from promocodes.schemas import ExportItem, ImportItem, ImportResult, envelope_members

ITEMS = [
    ExportItem(code="PLAIN"),
    ExportItem(code="A<&>'\"", attached="2026-03-01T09:31:00Z"),
    ExportItem(code="B\ufffe\ud7ff", attached="2026-03-01T09:31:00Z", activated="2026-03-01T09:32:00Z"),
    ExportItem(code="line\nbreak", activated="2026-03-01T09:32:00Z"),
    ExportItem(code="Straße ΣΑΣ"),
    ExportItem(code="", attached=""),  # never stored, but an empty text must still be <name/>
]


def streamed(pages: list[list[Any]], fmt: str) -> bytes:
    async def produce() -> AsyncIterator[list[Any]]:
        for page in pages:
            yield page

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in stream_pages(produce(), fmt)])

    return asyncio.run(collect())


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("page_size", [1, 2, 4, len(ITEMS)])
def test_streamed_pages_equal_the_whole_envelope(fmt: str, page_size: int) -> None:
    pages = [ITEMS[start : start + page_size] for start in range(0, len(ITEMS), page_size)]
    assert streamed(pages, fmt) == encode(envelope(ITEMS), fmt)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_stream_of_no_pages_is_an_empty_list(fmt: str) -> None:
    assert streamed([], fmt) == encode(envelope([]), fmt)


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_pages_of_other_items_are_written_item_by_item_the_same(fmt: str) -> None:
    """Items with a number (import's answer) or of mixed types take the general path, with the same result."""
    items: list[Any] = [ImportItem(code="A", error=0, error_text=""), ImportItem(code="B&", error=500, error_text="x")]
    assert streamed([items], fmt) == encode(envelope(items), fmt)
    mixed: list[Any] = [ExportItem(code="A"), ImportItem(code="B", error=0, error_text="")]
    assert streamed([mixed], fmt) == encode(envelope(mixed), fmt)


def test_the_json_stream_decodes_to_the_items() -> None:
    document = msgspec.json.decode(streamed([ITEMS[:3], ITEMS[3:]], "json"))
    assert document["data"] == [msgspec.to_builtins(item) for item in ITEMS]
    assert (document["error"], document["error_text"]) == (0, "Successful operation")


def item_by_item_xml(payload: dict[str, Any]) -> bytes:
    """The reference: every member converted to builtins, then written element by element."""
    return ("<xml>" + "".join(_xml_members(msgspec.to_builtins(payload))) + "</xml>").encode("utf-8")


def test_import_answer_in_xml_is_written_as_item_by_item() -> None:
    items = [
        ImportItem(code="SPRING-001", error=0, error_text=""),
        ImportItem(code="SPRING-001", error=500, error_text="Promocode duplicated"),
        ImportItem(code="bad\x07<", error=400, error_text="Promo code contains a control character"),
        ImportItem(code="two\nlines", error=402, error_text="Program limit exceeded"),
    ]
    result = ImportResult(data=items, discarded_by_limit=1, duplicated=1, inserted=1)
    payload = envelope(**envelope_members(result))
    assert encode(payload, "xml") == item_by_item_xml(payload)
    for payload in (envelope([ExportItem(code="A")]), envelope([]), envelope(None, 404, "Not found")):
        assert encode(payload, "xml") == item_by_item_xml(payload)
