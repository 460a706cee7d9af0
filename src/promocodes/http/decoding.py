"""Request bodies in: JSON, XML (root ``<xml>``, DTDs forbidden) and form-urlencoded, all to one plain mapping.

XML and forms carry every value as text and cannot tell one array item from a scalar; the typed conversion
(``msgspec.convert(strict=False)``) turns text into numbers and booleans, and :func:`decode_body` wraps a single
value into a list for the fields the request struct declares as arrays.

Anyone who can reach the port can send a body before any token is checked, so decoding is built to be safe on any
bytes: time linear in the body's size (repeated names append to one list in place), nesting bounded by
:data:`MAX_NESTING` without Python recursion, UTF-8 only, and every failure a :class:`BadRequest` whose text is a
short sentence, never an echo of the body.
"""

from __future__ import annotations

import codecs
import logging
import re
from typing import Any
from urllib.parse import unquote
from xml.etree.ElementTree import ParseError

import msgspec
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from promocodes.errors import BadRequest

XML_TYPES = ("application/xml", "text/xml")
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"

#: deepest nesting accepted; the outermost JSON object or array, or the ``<xml>`` root element, is level 1. The API's
#: own requests need three levels at most; the bound keeps hostile input far from any recursion limit.
MAX_NESTING = 64

#: longest piece of a parser's own message quoted back: some messages quote the input, which may be megabytes long
_DETAIL_CHARS = 200

#: names an XML declaration may give for the one encoding accepted (ASCII is a subset of UTF-8), compared in lower
#: case with ``-`` and ``_`` removed
_UTF8_NAMES = frozenset({"utf8", "ascii", "usascii"})

# A declaration can only come first (after a byte-order mark); both patterns match in one pass over any body.
_XML_DECLARATION = re.compile(r"\ufeff?<\?xml\s([^>]*)")
_DECLARED_ENCODING = re.compile(r"""encoding\s*=\s*["']([^"']*)["']""")

_KIND_NAMES = {"json": "JSON", "xml": "XML", "form": "form"}

logger = logging.getLogger("promocodes")


def body_kind(content_type: str | None, body: bytes) -> str:
    """``json``, ``xml`` or ``form``: by ``Content-Type``; a body without one is sniffed (docs/api.md#requests)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in XML_TYPES or media.endswith("+xml"):
        return "xml"
    first = body.lstrip()[:1]
    if media == FORM_TYPE and first not in (b"{", b"<"):
        # `curl -d '{...}'` labels JSON as a form: a form body never starts with `{` or `<`, so trust the body.
        return "form"
    if media == JSON_TYPE or media.endswith("+json"):
        return "json"
    return "xml" if first == b"<" else "json"


def decode_body(body: bytes, kind: str) -> dict[str, Any]:
    """The body as a mapping of parameter names to values; an empty body is an empty mapping.

    Raises :class:`BadRequest` and nothing else, whatever the bytes: the body is the client's, so a parser failure
    nobody foresaw is still a malformed body, not a fault of the server. Pure and thread-safe (every call builds its
    own parser), so a caller may run it in a worker thread.
    """
    if not body.strip():
        return {}
    try:
        text = _utf8_text(body)
        if kind == "xml":
            return _decode_xml(text)
        if kind == "form":
            return _decode_form(text)
        return _decode_json(body)
    except BadRequest:
        raise
    except RecursionError:
        raise _too_deep() from None
    except Exception as error:
        # One line, no traceback: a client can repeat this at will, and the log must not fill with stacks.
        logger.warning("Body refused after an unforeseen %s from the %s decoder", type(error).__name__, kind)
        raise BadRequest(f"Malformed {_KIND_NAMES.get(kind, 'JSON')} body: {_detail(error)}") from None


def _utf8_text(body: bytes) -> str:
    """The body as text. Every kind must be UTF-8: JSON allows nothing else, and for XML and forms one encoding
    means no encoding declaration or charset can steer the parsers into codecs they handle badly or not at all."""
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BadRequest("The body is UTF-16: only UTF-8 is accepted")
    if b"\x00" in body:  # no valid body of any kind holds one; UTF-16 without a byte-order mark is full of them
        raise BadRequest("The body holds a NUL byte: it must be UTF-8 text")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"The body is not valid UTF-8 (byte {error.start})") from None


def _decode_json(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise BadRequest(f"Malformed JSON body: {_detail(error)}") from None
    except RecursionError:  # msgspec recurses in C and gives up near the interpreter's limit
        raise _too_deep() from None
    if not isinstance(value, dict):
        raise BadRequest("The JSON body must be an object of parameters")
    if _nested_deeper_than(value, MAX_NESTING):
        raise _too_deep()
    return value


def _nested_deeper_than(value: dict[str, Any], limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` levels (``value`` itself is level 1). One level at a time, not
    recursion: the depth being checked is the sender's choice."""
    level: list[dict[str, Any] | list[Any]] = [value]
    for _ in range(limit):
        deeper: list[dict[str, Any] | list[Any]] = []
        for container in level:
            for item in container.values() if isinstance(container, dict) else container:
                if isinstance(item, dict | list):
                    deeper.append(item)
        if not deeper:
            return False
        level = deeper
    return True


def _decode_xml(text: str) -> dict[str, Any]:
    declaration = _XML_DECLARATION.match(text)
    declared = _DECLARED_ENCODING.search(declaration.group(1)) if declaration else None
    if declared and re.sub(r"[-_]", "", declared.group(1).lower()) not in _UTF8_NAMES:
        raise BadRequest(f"XML bodies must be UTF-8, not {_quoted(declared.group(1))}")
    builder = _MappingBuilder()
    # forbid_dtd: a DOCTYPE is refused outright, before any entity could expand (XXE, billion laughs).
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        # Text, not bytes: expat then reads it as the UTF-8 it is and never looks up the declared codec itself.
        parser.feed(text)
        mapping: dict[str, Any] = parser.close()
    except DefusedXmlException:
        raise BadRequest("XML with a DOCTYPE, entity declaration or external reference is not accepted") from None
    except ParseError as error:
        raise BadRequest(f"Malformed XML body: {_detail(error)}") from None
    return mapping


class _MappingBuilder:
    """Parser target that builds the mapping as elements close, so no element tree is ever built: an element with
    children becomes a mapping (a repeated child becomes a list, appended to in place); a leaf becomes its stripped
    text. Nesting is refused at the start tag past :data:`MAX_NESTING`, before a deep body is read any further.

    Each open element is a small list ``[children or None, text pieces]``: it runs once per element of a body that
    may hold hundreds of thousands, so it stays lean.
    """

    def __init__(self) -> None:
        self._open: list[list[Any]] = []
        self._result: dict[str, Any] = {}

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        open_elements = self._open
        if open_elements:
            if len(open_elements) == MAX_NESTING:
                raise _too_deep()
            parent = open_elements[-1]
            if parent[0] is None:
                parent[0], parent[1] = {}, None  # text beside child elements is not a value
        elif tag != "xml":
            raise BadRequest(f"The XML root element must be <xml>, not <{_detail(tag, 40)}>")
        open_elements.append([None, []])

    def data(self, text: str) -> None:
        element = self._open[-1]
        if element[0] is None:
            element[1].append(text)

    def end(self, tag: str) -> None:
        children, pieces = self._open.pop()
        value = children if children is not None else "".join(pieces).strip()
        if self._open:
            _add(self._open[-1][0], tag, value)
        elif isinstance(value, dict):
            self._result = value

    def close(self) -> dict[str, Any]:
        return self._result


def _decode_form(text: str) -> dict[str, Any]:
    """Like ``parse_qsl(strict_parsing=True, keep_blank_values=True)``, which is far slower on many pairs: each
    distinct name is unquoted once, and a value without ``%`` or ``+`` is taken as it is."""
    mapping: dict[str, Any] = {}
    names: dict[str, str] = {}
    try:
        for field in text.split("&"):
            quoted_name, equals, quoted_value = field.partition("=")
            if not equals:
                missing = f"the field {_quoted(field)} has no '='" if field else "an empty field between '&'s"
                raise BadRequest(f"Malformed form body: {missing}")
            name = names.get(quoted_name)
            if name is None:
                # `codes[]=A&codes[]=B`, as PHP clients send arrays
                name = names[quoted_name] = _unquote_form(quoted_name).removesuffix("[]")
            _add(mapping, name, _unquote_form(quoted_value))
    except UnicodeDecodeError as error:  # a percent-escape that is not UTF-8: refused, not turned into U+FFFD
        raise BadRequest(f"Malformed form body: {_detail(error)}") from None
    return mapping


def _unquote_form(text: str) -> str:
    return unquote(text.replace("+", " "), errors="strict")


def _add(mapping: dict[str, Any], name: str, value: Any) -> None:
    """Set ``name``; a repeated name becomes a list, appended to in place (rebuilding it would be quadratic).
    Decoded values are text or mappings, never lists, so a list here can only come from a repeat."""
    existing = mapping.get(name)
    if existing is None:
        mapping[name] = value
    elif isinstance(existing, list):
        existing.append(value)
    else:
        mapping[name] = [existing, value]


def wrap_arrays(params: dict[str, Any], array_fields: frozenset[str]) -> dict[str, Any]:
    """Make a lone value of an array field a one-item list (one ``<codes>`` element, one ``codes=`` pair)."""
    for name in array_fields:
        value = params.get(name)
        if value is not None and not isinstance(value, list):
            params[name] = [value]
    return params


def _too_deep() -> BadRequest:
    return BadRequest(f"The body is nested deeper than {MAX_NESTING} levels")


def _detail(error: BaseException | str, limit: int = _DETAIL_CHARS) -> str:
    """A parser's message, or a piece of the body, cut short enough to quote back to the client."""
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "…"


def _quoted(text: str, limit: int = 40) -> str:
    """A piece of the body in quotes, cut short after quoting: ``repr`` may turn one character into ten."""
    return _detail(repr(text[:limit]), limit)
