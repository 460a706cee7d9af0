"""The envelope out: ``{data, error, error_text}`` as JSON or XML (docs/api.md#the-envelope).

JSON keeps the key order of the documented examples (the structs in ``promocodes.schemas`` are declared in that
order); XML puts child elements in alphabetical order, writes an empty string or null as an empty element and an
array as its elements repeated (no element at all for an empty array).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from xml.sax.saxutils import escape

import msgspec

from promocodes.errors import SUCCESS_TEXT

JSON_MEDIA = "application/json"
XML_MEDIA = "application/xml"

_json = msgspec.json.Encoder()
# Characters XML 1.0 cannot carry at all, not even as a reference (most C0 controls): an answer that echoes one
# (a refused import item) shows U+FFFD instead, so that the document stays well-formed.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def envelope(data: Any, error: int = 0, error_text: str = SUCCESS_TEXT, **extra: Any) -> dict[str, Any]:
    """The envelope as an ordered mapping. ``extra`` holds import's counters, which sit beside ``data`` in the
    documented alphabetical order: data, discarded_by_limit, duplicated, error, error_text, inserted."""
    fields = {"data": data, "error": error, "error_text": error_text, **extra}
    return {name: fields[name] for name in sorted(fields)}


def encode(payload: dict[str, Any], fmt: str) -> bytes:
    return encode_xml(payload) if fmt == "xml" else _json.encode(payload)


def encode_xml(payload: dict[str, Any]) -> bytes:
    parts = ["<xml>"]
    for name in sorted(payload):
        value = payload[name]
        if isinstance(value, list) and value and isinstance(value[0], msgspec.Struct):
            parts.append(_xml_page(value, name))  # import's answer: 100,000 items written a column at a time
        else:
            parts.extend(_xml_element(name, msgspec.to_builtins(value)))
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")


def _xml_members(mapping: dict[str, Any]) -> Iterator[str]:
    for name in sorted(mapping):
        yield from _xml_element(name, mapping[name])


def _xml_element(name: str, value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:  # an array is its elements repeated; an empty one writes nothing
            yield from _xml_element(name, item)
    elif value is None or value == "":
        yield f"<{name}/>"
    elif isinstance(value, dict):
        yield f"<{name}>" + "".join(_xml_members(value)) + f"</{name}>"
    elif isinstance(value, bool):
        yield f"<{name}>{'true' if value else 'false'}</{name}>"
    else:
        yield f"<{name}>{escape(_NOT_XML_CHAR.sub(chr(0xFFFD), str(value)))}</{name}>"


async def stream_pages(pages: AsyncIterator[list[Any]], fmt: str) -> AsyncIterator[bytes]:
    """A success envelope whose ``data`` is a list written page by page as the pages come: memory stays at one
    page (docs/api.md#export_all), and each page goes out as one chunk, encoded whole — JSON by msgspec in one
    call, XML by :func:`_xml_page` — rather than item by item. The next page is asked for only once the server
    took this chunk (Starlette's ``StreamingResponse`` awaits each send), so a slow client slows the reads down
    instead of making the server buffer the export."""
    tail = envelope(None)
    del tail["data"]
    if fmt == "xml":
        yield b"<xml>"
        async for page in pages:
            yield _xml_page(page, "data").encode("utf-8")
        yield ("".join(_xml_members(tail)) + "</xml>").encode("utf-8")
        return
    yield b'{"data":['
    first = True
    async for page in pages:
        if not page:
            continue
        encoded = _json.encode(page)
        yield encoded[1:-1] if first else b"," + encoded[1:-1]  # the items, without the list's brackets
        first = False
    yield b"]," + _json.encode(tail)[1:]


def _xml_page(items: list[Any], element: str) -> str:
    """``<element>`` items for a list of flat structs whose fields are text or integers (``ExportItem``,
    ``ImportItem``), as :func:`_xml_element` writes them — the fields in alphabetical order, an unset field left
    out, an empty text ``<name/>`` — but a column at a time: each field's values are checked for characters XML
    cannot carry and escaped joined in one string, not one call per value. Anything else is written item by
    item."""
    if not items:
        return ""
    kind = type(items[0])
    if (
        not issubclass(kind, msgspec.Struct)
        or not kind.__struct_fields__
        or any(type(item) is not kind for item in items)
    ):
        return _xml_items(items, element)
    columns: list[list[str]] = []
    for name in sorted(kind.__struct_fields__):
        values = [getattr(item, name) for item in items]
        if not all(type(value) in _COLUMN_TYPES or value is msgspec.UNSET for value in values):
            return _xml_items(items, element)
        columns.append(_xml_column(name, values))
    start, end = f"<{element}>", f"</{element}>"
    return "".join(start + "".join(row) + end for row in zip(*columns, strict=True))


_COLUMN_TYPES = (str, int)  # exactly these: a bool (an int subclass) is written true/false, by _xml_element


def _xml_items(items: list[Any], element: str) -> str:
    return "".join(part for item in items for part in _xml_element(element, msgspec.to_builtins(item)))


def _xml_column(name: str, values: list[Any]) -> list[str]:
    """One field's elements for every item (``""`` where it is unset)."""
    present = [str(value) for value in values if value is not msgspec.UNSET and value != ""]
    joined = "\n".join(present)
    if joined.count("\n") == len(present) - 1:  # no value holds a line break: split back after escaping
        escaped = iter(escape(_NOT_XML_CHAR.sub(chr(0xFFFD), joined)).split("\n"))
    else:
        escaped = iter([escape(_NOT_XML_CHAR.sub(chr(0xFFFD), value)) for value in present])
    empty, start, end = f"<{name}/>", f"<{name}>", f"</{name}>"
    return ["" if value is msgspec.UNSET else empty if value == "" else start + next(escaped) + end for value in values]
