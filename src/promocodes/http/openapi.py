"""The OpenAPI 3.1 document of the API, generated from the route table (``routes.METHODS``) and the wire structs of
``promocodes.schemas``, so that it cannot drift from what the server really accepts and answers.

msgspec writes JSON Schema 2020-12, which OpenAPI 3.1 takes as is. Request schemas are strict — they say what a
client should send — while the server stays lenient: numbers may come as decimal strings and booleans as
``true``/``false``/``1``/``0`` (that leniency is stated in the document's description, not in the schemas).
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from promocodes import schemas
from promocodes.errors import (
    SUCCESS_TEXT,
    BadRequest,
    Conflict,
    Forbidden,
    InternalError,
    LimitExceeded,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PromocodeError,
    RateLimited,
    RequestTimeout,
    RouteNotFound,
    StorageUnavailable,
    Unauthorized,
)
from promocodes.http.encoding import JSON_MEDIA, XML_MEDIA
from promocodes.http.responses import REPLAYED_HEADER
from promocodes.http.routes import METHODS, ApiMethod
from promocodes.models import ROLE_CAPABILITIES, Role

OPENAPI_PATH = "/openapi.json"
# The paths that need no token besides this document (docs/api.md#service-paths); the server routes them by these.
HEALTH_PATH, READY_PATH, METRICS_PATH = "/healthz", "/readyz", "/metrics"
DOCS_PATH, STYLESHEET_PATH = "/docs", "/docs/assets/docs.css"
API_PREFIX = "/api/v1.1/"
FORM_MEDIA = "application/x-www-form-urlencoded"
REF = "#/components/schemas/{name}"
REPLAYED = next(iter(REPLAYED_HEADER))

# Errors of the API itself: sent with HTTP 200, the error in the envelope (as Altcraft does).
API_ERRORS: tuple[type[PromocodeError], ...] = (BadRequest, Unauthorized, LimitExceeded, Forbidden, NotFound, Conflict)
# Transport failures: sent with the HTTP status of the same number, and the same envelope.
TRANSPORT_ERRORS: tuple[type[PromocodeError], ...] = (
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    RateLimited,
    InternalError,
    StorageUnavailable,
)

DESCRIPTION = """\
A self-hosted promo-code server that speaks the Altcraft Platform promo-code API v1.1.

**Every method is a `POST`.** The body may be JSON, XML (`application/xml` or `text/xml`, root element `<xml>`,
each field a child element, an array written as the element repeated) or `application/x-www-form-urlencoded`
(an array as the field repeated). A body without a `Content-Type` is sniffed: `<` first means XML, else JSON.

**Lenient input.** The schemas below say what a client should send. The server also accepts numbers as decimal
strings (`"12"`) and booleans as the strings `true`, `false`, `1` and `0`, as XML and form bodies need.
Unknown fields are ignored.

**The answer** is the envelope `{data, error, error_text}`, as JSON or XML: the `format` parameter (query string
or body) wins, else an `Accept` header naming `application/xml` selects XML, else JSON. API errors ride on
HTTP 200 with `data` null and the error in `error`: 400 bad request (the text names the field), 401 missing or
unknown token, 402 the program's code limit, 403 the token's role may not do this, 404 object not found,
409 the object's state forbids the operation. Transport failures keep their HTTP status and the same envelope:
404 unknown path, 405 not `POST`, 408 body too slow, 413 body too large, 429 rate limited, 500 internal fault,
503 storage unavailable (429 and 503 carry `Retry-After`).

**The token** travels as `Authorization: Bearer <token>`, as the `token` member of the body, or as the `token`
query parameter (discouraged: URLs end up in logs); the header wins, then the query string, then the body
(a token outside the body is checked before the body is read).

**Safe retries.** The methods that change something take an `Idempotency-Key` header (or the body member
`idempotency_key`): a retry with the same key and the same parameters gets the first answer again, with the header
`Idempotent-Replayed: true`, and executes nothing; the same key with other parameters is error 409. Keys belong to
the account and are kept 24 hours by default.
"""


def _package_version() -> str:
    try:
        return version("promocodes")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


def _operation_id(path: str) -> str:
    """``/api/v1.1/promocodes/programs/create`` → ``promocodes_programs_create``."""
    return path.removeprefix(API_PREFIX).replace("/", "_")


def _tag(path: str) -> str:
    """The group a method is listed under: its object (``programs``, ``tokens``), ``promocodes`` for codes."""
    parts = path.removeprefix(API_PREFIX).split("/")
    return parts[1] if parts[0] == "promocodes" and len(parts) > 2 else parts[0]


def _roles(method: ApiMethod) -> list[str]:
    """The roles whose tokens may call the method, weakest first."""
    return [role.value for role in (Role.READ, Role.WRITE, Role.ADMIN) if method.capability in ROLE_CAPABILITIES[role]]


def _envelope(data: dict[str, Any], error: dict[str, Any], error_text: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The envelope's schema; its members in the order the server writes them (alphabetical)."""
    properties = {"data": data, "error": error, "error_text": error_text, **extra}
    return {
        "type": "object",
        "properties": {name: properties[name] for name in sorted(properties)},
        "required": sorted(properties),
        "xml": {"name": "xml"},
    }


def _success_schema(method: ApiMethod, data: dict[str, Any]) -> dict[str, Any]:
    """The envelope of a successful call. Import's answer puts its counters beside ``data``, not inside it, as
    ``promocodes.http.responses.success`` writes them."""
    success = {"const": 0}
    text = {"const": SUCCESS_TEXT}
    if method.response is schemas.ImportResult:
        info = msgspec.inspect.type_info(schemas.ImportResult)
        assert isinstance(info, msgspec.inspect.StructType)
        counters = {field.name: {"type": "integer", "minimum": 0} for field in info.fields if field.name != "data"}
        return _envelope(data, success, text, **counters)
    return _envelope(data, success, text)


def _transport_response(error: type[PromocodeError]) -> dict[str, Any]:
    schema = _envelope({"type": "null"}, {"const": error.code}, {"type": "string"})
    response: dict[str, Any] = {
        "description": error.default_text,
        "content": {JSON_MEDIA: {"schema": schema}, XML_MEDIA: {"schema": schema}},
    }
    headers: dict[str, Any] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = {
            "description": "Seconds after which a retry makes sense",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    if error is MethodNotAllowed:
        headers["Allow"] = {"description": "The one method the path answers", "schema": {"const": "POST"}}
    if headers:
        response["headers"] = headers
    return response


def _transport_refs() -> dict[str, Any]:
    return {str(error.http_status): {"$ref": f"#/components/responses/{error.__name__}"} for error in TRANSPORT_ERRORS}


def _operation(method: ApiMethod, request_schema: dict[str, Any], data_schema: dict[str, Any]) -> dict[str, Any]:
    roles = _roles(method)
    body_optional = method.request is schemas.Empty
    answer = _success_schema(method, data_schema)
    description = (
        f"Role needed: `{roles[0]}`"
        + (f" (or {', '.join(f'`{role}`' for role in roles[1:])})" if len(roles) > 1 else "")
        + f" — the token must be allowed to {method.capability.value}."
    )
    return {
        "post": {
            "operationId": _operation_id(method.path),
            "summary": method.summary,
            "description": description,
            "tags": [_tag(method.path)],
            "x-roles": roles,
            "security": [{"bearer": []}, {"query_token": []}],
            "parameters": [
                {"$ref": "#/components/parameters/format"},
                *([{"$ref": "#/components/parameters/idempotency_key"}] if method.idempotent else []),
            ],
            "requestBody": {
                "required": not body_optional,
                "description": (
                    "The fields as a JSON object; or as child elements of `<xml>` (`application/xml` or "
                    "`text/xml`), an array as its element repeated; or as form fields, an array as its field "
                    "repeated. The token may be one more member, `token`; the answer's format one more, `format`"
                    + ("; the idempotency key one more, `idempotency_key`." if method.idempotent else ".")
                ),
                "content": {media: {"schema": request_schema} for media in (JSON_MEDIA, XML_MEDIA, FORM_MEDIA)},
            },
            "responses": {
                "200": {
                    "description": (
                        "The envelope: on success `error` 0 and the method's `data`; on an API error, `data` null "
                        "and the error's number and text."
                    ),
                    "content": {
                        media: {"schema": {"anyOf": [answer, {"$ref": "#/components/schemas/ApiError"}]}}
                        for media in (JSON_MEDIA, XML_MEDIA)
                    },
                    **(
                        {"headers": {REPLAYED: {"$ref": f"#/components/headers/{REPLAYED}"}}}
                        if method.idempotent
                        else {}
                    ),
                },
                **_transport_refs(),
            },
        }
    }


def _plain_get(operation_id: str, summary: str, media: str, description: str) -> dict[str, Any]:
    """A GET without a token whose answer is not the envelope (a page, a style sheet, metrics text)."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["operations"],
            "security": [],
            "responses": {"200": {"description": description, "content": {media: {"schema": {"type": "string"}}}}},
        }
    }


def _operations_paths() -> dict[str, Any]:
    """The GET paths that need no token: the probes, the metrics, this document and the page built from it."""
    health = _envelope(
        {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]},
        {"const": 0},
        {"const": SUCCESS_TEXT},
    )
    ready = _envelope(
        {"type": "object", "properties": {"status": {"const": "ready"}}, "required": ["status"]},
        {"const": 0},
        {"const": SUCCESS_TEXT},
    )
    return {
        HEALTH_PATH: {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: answers while the process serves",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": {"description": "Serving", "content": {JSON_MEDIA: {"schema": health}}}},
            }
        },
        READY_PATH: {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the database answers within its timeout",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {"description": "The database answers", "content": {JSON_MEDIA: {"schema": ready}}},
                    "503": {"$ref": f"#/components/responses/{StorageUnavailable.__name__}"},
                },
            }
        },
        METRICS_PATH: _plain_get(
            "metrics", "Prometheus metrics of every worker", "text/plain", "Prometheus text exposition format"
        ),
        DOCS_PATH: _plain_get("docs", "This reference as a readable page", "text/html", "The reference page"),
        STYLESHEET_PATH: _plain_get("docs_stylesheet", "The reference page's style sheet", "text/css", "CSS"),
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {"description": "The OpenAPI 3.1 document", "content": {JSON_MEDIA: {"schema": {}}}}
                },
            }
        },
    }


def _tidy(schema: Any) -> Any:
    """Descriptions come from the structs' docstrings: turn their reST quoting into Markdown's."""
    if isinstance(schema, dict):
        return {
            key: value.replace("``", "`")
            if key == "description" and isinstance(value, str)  # not a field named `description`
            else _tidy(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_tidy(item) for item in schema]
    return schema


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document, built once per process. Shared: callers must not change it."""
    data_types = [
        list[schemas.ImportItem] if method.response is schemas.ImportResult else method.response for method in METHODS
    ]
    generated, components = msgspec.json.schema_components(
        [method.request for method in METHODS] + data_types, ref_template=REF
    )
    request_schemas, data_schemas = generated[: len(METHODS)], generated[len(METHODS) :]
    for method in METHODS:
        # An XML body's root element is `<xml>`, whatever the method.
        components[method.request.__name__]["xml"] = {"name": "xml"}
    components["ApiError"] = _envelope(
        {"type": "null"}, {"enum": sorted(error.code for error in API_ERRORS)}, {"type": "string"}
    )

    paths: dict[str, Any] = {}
    for method, request_schema, data_schema in zip(METHODS, request_schemas, data_schemas, strict=True):
        paths[method.path] = _operation(method, request_schema, data_schema)
    paths.update(_operations_paths())

    return {
        "openapi": "3.1.0",
        "info": {"title": "promocodes", "version": _package_version(), "description": DESCRIPTION},
        "tags": [{"name": name} for name in dict.fromkeys(_tag(method.path) for method in METHODS)],
        "paths": paths,
        "components": {
            "schemas": {name: _tidy(schema) for name, schema in sorted(components.items())},
            "responses": {error.__name__: _transport_response(error) for error in TRANSPORT_ERRORS},
            "parameters": {
                "format": {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "The answer's format; also accepted as the body member `format`",
                    "schema": {"enum": ["json", "xml"]},
                },
                "idempotency_key": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": (
                        "Makes the request safe to retry: a retry with the same key and the same parameters gets the "
                        "first answer again and changes nothing; the same key with other parameters is error 409. "
                        "Kept per account for `PROMOCODES_IDEMPOTENCY_HOURS` (24). Also accepted as the body member "
                        "`idempotency_key`; the header wins."
                    ),
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
                },
            },
            "headers": {
                REPLAYED: {
                    "description": "On an answer sent again to a retry with the same `Idempotency-Key`",
                    "schema": {"const": "true"},
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The API token in `Authorization: Bearer <token>`. It may instead be sent as the body "
                        "member `token` (a JSON key, an XML element or a form field)."
                    ),
                },
                "query_token": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The API token in the query string: accepted, but discouraged",
                },
            },
        },
    }


@functools.cache
def _document_bytes() -> bytes:
    return msgspec.json.encode(openapi_document())


async def openapi_endpoint(request: Request) -> Response:
    """``GET /openapi.json``. Never cached by a proxy: the document changes with the server's version."""
    return Response(
        _document_bytes(),
        media_type=JSON_MEDIA,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
