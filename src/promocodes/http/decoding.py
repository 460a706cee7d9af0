"""Request bodies in: JSON, XML (root ``<xml>``, DTDs forbidden) and form-urlencoded, all to one plain mapping.

XML and forms carry every value as text and cannot tell one array item from a scalar; the typed conversion
(``msgspec.convert(strict=False)``) turns text into numbers and booleans, and :func:`decode_body` wraps a single
value into a list for the fields the request struct declares as arrays.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl
from xml.etree.ElementTree import Element, ParseError

import msgspec
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml

from promocodes.errors import BadRequest

XML_TYPES = ("application/xml", "text/xml")
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"


def body_kind(content_type: str | None, body: bytes) -> str:
    """``json``, ``xml`` or ``form``: by ``Content-Type``; a body without one is sniffed (spec 8.1.1)."""
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
    """The body as a mapping of parameter names to values; an empty body is an empty mapping."""
    if not body.strip():
        return {}
    if kind == "xml":
        return _decode_xml(body)
    if kind == "form":
        return _decode_form(body)
    return _decode_json(body)


def _decode_json(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:  # msgspec lets invalid UTF-8 through as the latter
        raise BadRequest(f"Malformed JSON body: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest("The JSON body must be an object of parameters")
    return value


def _decode_xml(body: bytes) -> dict[str, Any]:
    try:
        # forbid_dtd: a DOCTYPE is refused outright, before any entity could expand (XXE, billion laughs).
        root = parse_xml(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise BadRequest("XML with a DOCTYPE, entity declaration or external reference is not accepted") from None
    except ParseError as error:
        raise BadRequest(f"Malformed XML body: {error}") from None
    if root.tag != "xml":
        raise BadRequest(f"The XML root element must be <xml>, not <{root.tag}>")
    value = _element_value(root)
    return value if isinstance(value, dict) else {}


def _element_value(element: Element) -> Any:
    """An element with children becomes a mapping (a repeated child becomes a list); a leaf becomes its text."""
    children = list(element)
    if not children:
        return (element.text or "").strip()
    mapping: dict[str, Any] = {}
    for child in children:
        value = _element_value(child)
        if child.tag in mapping:
            existing = mapping[child.tag]
            mapping[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            mapping[child.tag] = value
    return mapping


def _decode_form(body: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRequest(f"Malformed form body: {error}") from None
    mapping: dict[str, Any] = {}
    for name, value in pairs:
        name = name.removesuffix("[]")  # `codes[]=A&codes[]=B`, as PHP clients send arrays
        if name in mapping:
            existing = mapping[name]
            mapping[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            mapping[name] = value
    return mapping


def wrap_arrays(params: dict[str, Any], array_fields: frozenset[str]) -> dict[str, Any]:
    """Make a lone value of an array field a one-item list (one ``<codes>`` element, one ``codes=`` pair)."""
    for name in array_fields:
        value = params.get(name)
        if value is not None and not isinstance(value, list):
            params[name] = [value]
    return params
