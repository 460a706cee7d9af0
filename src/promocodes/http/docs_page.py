"""``GET /docs``: the API reference as one HTML page, rendered on the server from the OpenAPI document.

Built from :func:`promocodes.http.openapi.openapi_document`, which is built from the route table, so the page lists
exactly the methods the server answers (docs/api.md#get-docs). It is plain HTML and one small style sheet served by
this server: no script, nothing from another site, so it works offline and under ``Content-Security-Policy:
default-src 'self'``. Every piece of text that comes from the document is escaped, field names and descriptions
alike, so nothing in a schema can turn into markup.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from promocodes.http.openapi import API_ERRORS, DOCS_PATH, OPENAPI_PATH, STYLESHEET_PATH, openapi_document

HTML_MEDIA = "text/html; charset=utf-8"
CSS_MEDIA = "text/css; charset=utf-8"
#: the page may load only what this server serves: its own style sheet. No script runs at all.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    # The page changes with the server's version; a browser revalidates instead of showing a stale one.
    "Cache-Control": "no-cache",
}
#: the style sheet's URL carries the version, so it may be kept for a day without outliving an upgrade
STYLESHEET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"}

_REF_PREFIX = "#/components/schemas/"
_CODE_SPAN = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    """Escaped text, with the two bits of Markdown the document's descriptions use: `code` and **strong**."""
    escaped = html.escape(text)
    return _STRONG.sub(r"<strong>\1</strong>", _CODE_SPAN.sub(r"<code>\1</code>", escaped))


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_inline(' '.join(block.split()))}</p>" for block in text.split("\n\n") if block.strip())


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.removeprefix(_REF_PREFIX) if isinstance(ref, str) and ref.startswith(_REF_PREFIX) else None


def _type(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    """A schema as a short type, in HTML: ``integer``, ``string or null``, ``array of <a>ExportItem</a>``."""
    name = _ref_name(schema)
    if name is not None:
        target = schemas.get(name, {})
        if "enum" in target:  # a named enumeration (Role) reads better as its values
            return _type(target, schemas)
        return f'<a href="#shape-{html.escape(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " or ".join(_type(option, schemas) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{html.escape(str(value))}</code>" for value in schema["enum"])
    if "const" in schema:
        return f"<code>{html.escape(str(schema['const']))}</code>"
    kind = schema.get("type")
    if kind == "array":
        return "array of " + _type(schema.get("items", {}), schemas)
    if isinstance(kind, str):
        return html.escape(kind)
    return "any"


def _notes(schema: dict[str, Any]) -> str:
    """What the document says about a field beyond its type: its description, bounds and default."""
    notes: list[str] = []
    if isinstance(schema.get("description"), str):
        notes.append(_inline(schema["description"]))
    for option in schema.get("anyOf", [schema]):
        if "minimum" in option:
            notes.append(f"at least {option['minimum']}")
    if "default" in schema:
        notes.append(f"default <code>{html.escape(msgspec.json.encode(schema['default']).decode())}</code>")
    return "; ".join(notes)


def _fields_table(schema: dict[str, Any], schemas: dict[str, Any], *, request: bool) -> str:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return '<p class="muted">No fields.</p>'
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{_type(field, schemas)}</td>"
        f"<td>{'yes' if name in required else 'no'}</td><td>{_notes(field)}</td></tr>"
        for name, field in properties.items()
    )
    head = "required" if request else "always sent"
    return f"<table><tr><th>field</th><th>type</th><th>{head}</th><th>notes</th></tr>{rows}</table>"


def _success_branch(operation: dict[str, Any]) -> dict[str, Any]:
    content = operation["responses"]["200"]["content"]
    schema: dict[str, Any] = next(iter(content.values()))["schema"]
    for branch in schema.get("anyOf", [schema]):
        if _ref_name(branch) is None:
            return dict(branch)
    return {}


def _answer(operation: dict[str, Any], schemas: dict[str, Any]) -> str:
    """The success answer's ``data``, and any member the envelope carries beside it (import's counters)."""
    properties: dict[str, Any] = _success_branch(operation).get("properties", {})
    data = properties.get("data", {})
    described = "<code>null</code>" if data.get("type") == "null" else _type(data, schemas)
    extra = [name for name in properties if name not in ("data", "error", "error_text")]
    beside = ""
    if extra:
        names = ", ".join(f"<code>{html.escape(name)}</code>" for name in extra)
        beside = f"; beside it, the envelope holds {names}"
    return f"<p><strong>Answer</strong> <code>data</code>: {described}{beside}.</p>"


def _errors(operation: dict[str, Any], schemas: dict[str, Any]) -> str:
    api = schemas.get("ApiError", {}).get("properties", {}).get("error", {}).get("enum", [])
    transport = [status for status in operation["responses"] if status != "200"]
    codes = ", ".join(html.escape(str(code)) for code in api)
    statuses = ", ".join(html.escape(status) for status in transport)
    return (
        f'<p class="errors"><strong>Errors</strong>: in the envelope with HTTP 200: {codes}; '
        f'with their own HTTP status: {statuses} (see <a href="#errors">error codes</a>).</p>'
    )


def _operation(path: str, verb: str, operation: dict[str, Any], schemas: dict[str, Any]) -> str:
    anchor = html.escape(operation.get("operationId", path))
    parts = [
        f'<section class="operation" id="{anchor}">',
        f'<h3><span class="verb">{html.escape(verb.upper())}</span> <code class="path">{html.escape(path)}</code></h3>',
        f'<p class="summary">{_inline(operation.get("summary", ""))}</p>',
    ]
    if operation.get("description"):
        parts.append(_paragraphs(operation["description"]))
    body = operation.get("requestBody")
    if body is not None:
        request = next(iter(body["content"].values()))["schema"]
        name = _ref_name(request)
        fields = schemas.get(name, {}) if name else request
        parts.append("<p><strong>Fields</strong> (JSON, XML or form):</p>")
        parts.append(_fields_table(fields, schemas, request=True))
    if "200" in operation["responses"] and body is not None:
        parts.append(_answer(operation, schemas))
        parts.append(_errors(operation, schemas))
    parts.append("</section>")
    return "".join(parts)


def _error_table(document: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{error.code}</td><td>200</td><td>{html.escape(error.default_text)}</td></tr>" for error in API_ERRORS
    ]
    for name, response in document["components"]["responses"].items():
        schema = response["content"][next(iter(response["content"]))]["schema"]
        code = schema["properties"]["error"].get("const", "")
        rows.append(
            f"<tr><td>{html.escape(str(code))}</td><td>{html.escape(str(code))}</td>"
            f"<td>{html.escape(response.get('description', name))}</td></tr>"
        )
    return (
        '<h2 id="errors">Error codes</h2><p>Every answer is the envelope <code>{data, error, error_text}</code>; '
        "check <code>error</code>, not the HTTP status.</p>"
        f"<table><tr><th><code>error</code></th><th>HTTP</th><th>meaning</th></tr>{''.join(rows)}</table>"
    )


def _token_table(document: dict[str, Any]) -> str:
    schemes: dict[str, Any] = document["components"]["securitySchemes"]
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{_inline(scheme.get('description', ''))}</td></tr>"
        for name, scheme in schemes.items()
    )
    return f'<h2 id="tokens">Tokens</h2><table><tr><th>scheme</th><th>how</th></tr>{rows}</table>'


def _response_shapes(document: dict[str, Any]) -> Iterator[str]:
    """The named shapes answers are made of (a program, a code report, ...), each as a table of its fields."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    requests = {
        _ref_name(next(iter(op["requestBody"]["content"].values()))["schema"])
        for item in document["paths"].values()
        for op in item.values()
        if "requestBody" in op
    }
    for name, schema in schemas.items():
        if name in requests or name == "ApiError" or "properties" not in schema:
            continue
        yield f'<section id="shape-{html.escape(name)}"><h3>{html.escape(name)}</h3>'
        if isinstance(schema.get("description"), str):
            yield _paragraphs(schema["description"])
        yield _fields_table(schema, schemas, request=False) + "</section>"


def render(document: dict[str, Any]) -> str:
    """The whole page for an OpenAPI document."""
    info = document["info"]
    schemas: dict[str, Any] = document["components"]["schemas"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((path, verb, operation))
    nav = (
        "".join(f'<li><a href="#tag-{html.escape(tag)}">{html.escape(tag)}</a></li>' for tag in by_tag)
        + '<li><a href="#errors">error codes</a></li><li><a href="#shapes">answer shapes</a></li>'
    )
    sections = "".join(
        f'<h2 id="tag-{html.escape(tag)}">{html.escape(tag)}</h2>'
        + "".join(_operation(path, verb, operation, schemas) for path, verb, operation in operations)
        for tag, operations in by_tag.items()
    )
    title = f"{info['title']} API reference"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}?v={html.escape(info["version"])}"></head><body><main>'
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="muted">Version {html.escape(info["version"])} · OpenAPI {html.escape(document["openapi"])} · '
        f'the machine-readable document: <a href="{OPENAPI_PATH}">{OPENAPI_PATH}</a></p>'
        f"{_paragraphs(info.get('description', ''))}"
        f"<nav><ul>{nav}</ul></nav>"
        f"{_token_table(document)}{_error_table(document)}{sections}"
        f'<h2 id="shapes">Answer shapes</h2>{"".join(_response_shapes(document))}'
        "</main></body></html>"
    )


@functools.cache
def _page_bytes() -> bytes:
    return render(openapi_document()).encode("utf-8")


@functools.cache
def _stylesheet_bytes() -> bytes:
    return files("promocodes.http").joinpath("docs_assets", "docs.css").read_bytes()


async def docs_endpoint(request: Request) -> Response:
    return Response(_page_bytes(), media_type=HTML_MEDIA, headers=PAGE_HEADERS)


async def stylesheet_endpoint(request: Request) -> Response:
    return Response(_stylesheet_bytes(), media_type=CSS_MEDIA, headers=STYLESHEET_HEADERS)


def docs_routes() -> list[Route]:
    """The page and its one asset; neither needs a token (they describe the API, they hold no data)."""
    return [
        Route(DOCS_PATH, docs_endpoint, methods=["GET"]),
        Route(STYLESHEET_PATH, stylesheet_endpoint, methods=["GET"]),
    ]
