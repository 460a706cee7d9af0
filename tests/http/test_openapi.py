"""The OpenAPI document (``/openapi.json``): valid OpenAPI 3.1, generated from the route table and the wire structs,
so that every method, its fields, its role and its answers are described as the server really handles them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from promocodes import schemas
from promocodes.config import Settings
from promocodes.http.app import create_app
from promocodes.http.openapi import openapi_document
from promocodes.http.routes import METHODS, ApiMethod
from promocodes.models import ROLE_CAPABILITIES, Role
from tests.client import InProcessClient

TRANSPORT_STATUSES = ("404", "405", "408", "413", "429", "500", "503")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[InProcessClient]:
    with InProcessClient(create_app(Settings(database_url=f"sqlite:///{tmp_path}/openapi.db"), migrate=True)) as client:
        yield client


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema and len(schema) == 1:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def operation(document: dict[str, Any], method: ApiMethod) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][method.path]["post"]
    return found


def success_envelope(document: dict[str, Any], method: ApiMethod, media: str = "application/json") -> dict[str, Any]:
    """The success branch of a method's HTTP 200 answer (the other branch is the API error)."""
    any_of = operation(document, method)["responses"]["200"]["content"][media]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/ApiError"} in any_of
    (success,) = [branch for branch in any_of if "$ref" not in branch]
    return success


def method_at(path: str) -> ApiMethod:
    (found,) = [method for method in METHODS if method.path == f"/api/v1.1/{path}"]
    return found


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_it_is_served_at_openapi_json_and_never_cached(client: InProcessClient, document: dict[str, Any]) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == msgspec.json.decode(msgspec.json.encode(document))


def test_every_method_is_a_post_with_its_own_operation_id(document: dict[str, Any]) -> None:
    api_paths = {path for path in document["paths"] if path.startswith("/api/")}
    assert api_paths == {method.path for method in METHODS}
    ids = [operation(document, method)["operationId"] for method in METHODS]
    assert len(set(ids)) == len(ids)
    assert operation(document, method_at("promocodes/programs/create"))["operationId"] == "promocodes_programs_create"
    for method in METHODS:
        assert set(document["paths"][method.path]) == {"post"}
        assert operation(document, method)["summary"]


def test_the_role_each_method_needs_is_stated(document: dict[str, Any]) -> None:
    for method in METHODS:
        allowed = [role.value for role in Role if method.capability in ROLE_CAPABILITIES[role]]
        assert sorted(operation(document, method)["x-roles"]) == sorted(allowed)
    assert operation(document, method_at("tokens/create"))["x-roles"] == ["admin"]
    assert operation(document, method_at("promocodes/get"))["x-roles"] == ["read", "write", "admin"]
    assert operation(document, method_at("promocodes/import"))["x-roles"] == ["write", "admin"]
    assert "`write`" in operation(document, method_at("promocodes/attach"))["description"]


def test_the_token_may_travel_in_the_header_or_the_query_string(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert "`token`" in schemes["bearer"]["description"]  # the body member
    assert schemes["query_token"] == {**schemes["query_token"], "type": "apiKey", "in": "query", "name": "token"}
    for method in METHODS:
        assert operation(document, method)["security"] == [{"bearer": []}, {"query_token": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []


@pytest.mark.parametrize("method", METHODS, ids=[method.path.removeprefix("/api/v1.1/") for method in METHODS])
def test_the_writing_methods_take_an_idempotency_key(document: dict[str, Any], method: ApiMethod) -> None:
    """docs/api.md#idempotent-retries: the header, the body member, and the header a replayed answer carries."""
    found = operation(document, method)
    keyed = {"$ref": "#/components/parameters/idempotency_key"} in found["parameters"]
    assert keyed is method.idempotent
    assert ("`idempotency_key`" in found["requestBody"]["description"]) is method.idempotent
    assert ("Idempotent-Replayed" in found["responses"]["200"].get("headers", {})) is method.idempotent
    parameter = document["components"]["parameters"]["idempotency_key"]
    assert (parameter["name"], parameter["in"]) == ("Idempotency-Key", "header")
    assert (parameter["schema"]["minLength"], parameter["schema"]["maxLength"]) == (1, 255)


@pytest.mark.parametrize("method", METHODS, ids=[method.path.removeprefix("/api/v1.1/") for method in METHODS])
def test_request_schemas_are_the_request_structs(document: dict[str, Any], method: ApiMethod) -> None:
    body = operation(document, method)["requestBody"]
    assert set(body["content"]) == {"application/json", "application/xml", "application/x-www-form-urlencoded"}
    for content in body["content"].values():
        assert content["schema"] == {"$ref": f"#/components/schemas/{method.request.__name__}"}
    schema = resolve(document, body["content"]["application/json"]["schema"])
    info = msgspec.inspect.type_info(method.request)
    assert isinstance(info, msgspec.inspect.StructType)
    assert set(schema["properties"]) == {field.name for field in info.fields}
    assert set(schema.get("required", [])) == {field.name for field in info.fields if field.required}
    assert schema["xml"] == {"name": "xml"}  # the XML root element
    assert body["required"] is (method.request is not schemas.Empty)


def test_required_fields_of_a_few_methods(document: dict[str, Any]) -> None:
    def required(path: str) -> set[str]:
        body = operation(document, method_at(path))["requestBody"]["content"]["application/json"]["schema"]
        return set(resolve(document, body).get("required", []))

    assert required("promocodes/import") == {"loyalty_id", "codes"}
    assert required("promocodes/attach") == {"loyalty_id", "db_id"}
    assert required("promocodes/generate") == {"loyalty_id", "count"}
    assert required("promocodes/programs/create") == {"name"}
    assert required("tokens/create") == {"role"}
    assert required("promocodes/programs/list") == set()


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("promocodes/get", {"$ref": "#/components/schemas/CodeReport"}),
        ("promocodes/attach", {"$ref": "#/components/schemas/AttachResult"}),
        ("promocodes/generate", {"$ref": "#/components/schemas/GenerateResult"}),
        ("promocodes/activate", {"type": "null"}),
        ("promocodes/update", {"type": "null"}),
        ("promocodes/detach", {"type": "null"}),
        ("promocodes/programs/delete", {"type": "null"}),
        ("profiles/delete", {"type": "null"}),
        ("promocodes/export_all", {"type": "array", "items": {"$ref": "#/components/schemas/ExportItem"}}),
        ("promocodes/programs/create", {"$ref": "#/components/schemas/ProgramView"}),
        ("promocodes/programs/update", {"$ref": "#/components/schemas/ProgramView"}),
        ("promocodes/programs/list", {"type": "array", "items": {"$ref": "#/components/schemas/ProgramView"}}),
        ("promocodes/programs/get", {"$ref": "#/components/schemas/ProgramView", "required": ["stats"]}),
        ("databases/create", {"$ref": "#/components/schemas/DatabaseView"}),
        ("databases/list", {"type": "array", "items": {"$ref": "#/components/schemas/DatabaseView"}}),
        ("profiles/import", {"$ref": "#/components/schemas/ProfileCreated"}),
        ("profiles/get", {"$ref": "#/components/schemas/ProfileView"}),
        ("tokens/create", {"$ref": "#/components/schemas/TokenView"}),
        ("tokens/list", {"type": "array", "items": {"$ref": "#/components/schemas/TokenView"}}),
        ("tokens/revoke", {"$ref": "#/components/schemas/TokenView"}),
    ],
)
def test_each_method_answers_its_own_data(document: dict[str, Any], path: str, data: dict[str, Any]) -> None:
    success = success_envelope(document, method_at(path))
    assert success["properties"]["data"] == data
    assert success["properties"]["error"] == {"const": 0}
    assert success["properties"]["error_text"] == {"const": "Successful operation"}
    assert set(success["required"]) == {"data", "error", "error_text"}


def test_import_puts_its_counters_beside_data(document: dict[str, Any]) -> None:
    success = success_envelope(document, method_at("promocodes/import"))
    assert success["properties"]["data"] == {"type": "array", "items": {"$ref": "#/components/schemas/ImportItem"}}
    counters = {"discarded_by_limit", "duplicated", "inserted"}
    assert counters <= set(success["required"])
    assert all(success["properties"][name]["type"] == "integer" for name in counters)
    written = ["data", "discarded_by_limit", "duplicated", "error", "error_text", "inserted"]
    assert list(success["properties"]) == written  # the order the server writes them in


def test_api_errors_ride_on_http_200_with_data_null(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["ApiError"]
    assert error["properties"]["data"] == {"type": "null"}
    assert error["properties"]["error"] == {"enum": [400, 401, 402, 403, 404, 409]}
    assert set(error["required"]) == {"data", "error", "error_text"}
    for method in METHODS:
        content = operation(document, method)["responses"]["200"]["content"]
        assert set(content) == {"application/json", "application/xml"}


def test_transport_failures_keep_their_status_and_the_envelope(document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    for method in METHODS:
        declared = operation(document, method)["responses"]
        assert set(declared) == {"200", *TRANSPORT_STATUSES}
        for status in TRANSPORT_STATUSES:
            response = responses[declared[status]["$ref"].rsplit("/", 1)[1]]
            schema = response["content"]["application/json"]["schema"]
            assert schema["properties"]["error"] == {"const": int(status)}
            assert schema["properties"]["data"] == {"type": "null"}
            assert ("Retry-After" in response.get("headers", {})) is (status in ("429", "503"))


def test_the_document_lists_exactly_the_routes_the_server_has(document: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/routes.db"))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET route by itself
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served


def test_readiness_answers_its_envelope_or_503(document: dict[str, Any]) -> None:
    ready = document["paths"]["/readyz"]["get"]["responses"]
    assert ready["200"]["content"]["application/json"]["schema"]["properties"]["data"]["properties"] == {
        "status": {"const": "ready"}
    }
    assert ready["503"] == {"$ref": "#/components/responses/StorageUnavailable"}


def test_health_is_documented(document: dict[str, Any]) -> None:
    health = document["paths"]["/healthz"]["get"]
    assert health["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"] == {
        "type": "object",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
    }


def test_lenient_input_is_described(document: dict[str, Any]) -> None:
    description = document["info"]["description"]
    assert "decimal" in description and "`true`, `false`, `1` and `0`" in description
    assert "spec" not in str(document).lower().replace("specification", "")  # no internal cross-references
