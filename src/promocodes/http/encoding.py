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
    return ("<xml>" + "".join(_xml_members(msgspec.to_builtins(payload))) + "</xml>").encode("utf-8")


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


async def stream_list(items: AsyncIterator[Any], fmt: str) -> AsyncIterator[bytes]:
    """A success envelope whose ``data`` is a list written as it is produced: memory stays flat
    (docs/api.md#export_all).

    Batches a few hundred items per chunk, so the socket sees few large writes rather than many tiny ones.
    """
    tail = envelope(None)
    del tail["data"]
    if fmt == "xml":
        yield b"<xml>"
        batch: list[str] = []
        async for item in items:
            batch.extend(_xml_element("data", msgspec.to_builtins(item)))
            if len(batch) >= 500:
                yield "".join(batch).encode("utf-8")
                batch.clear()
        yield ("".join(batch) + "".join(_xml_members(tail)) + "</xml>").encode("utf-8")
        return
    yield b'{"data":['
    first = True
    chunk = bytearray()
    async for item in items:
        if not first:
            chunk += b","
        first = False
        chunk += _json.encode(item)
        if len(chunk) >= 65536:
            yield bytes(chunk)
            chunk.clear()
    chunk += b"]," + _json.encode(tail)[1:]
    yield bytes(chunk)
