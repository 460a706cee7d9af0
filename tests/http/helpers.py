"""Helpers of the HTTP tests: raw requests, envelopes, and apps with settings of their own."""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from promocodes.config import Settings
from promocodes.http.app import create_app
from tests.client import InProcessClient
from tests.helpers import Api, admin_token


def post(
    api: Api,
    method: str,
    body: str | bytes | None = None,
    *,
    content_type: str | None = None,
    token: str | None = "admin",
    query: str = "",
    **headers: str,
) -> Any:
    """A raw POST: ``body`` sent as is; the admin token in the Authorization header unless ``token`` says
    otherwise (``None``: no header). Returns the httpx response, whatever its status."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if content_type is not None:
        sent["Content-Type"] = content_type
    if token is not None:
        sent["Authorization"] = f"Bearer {api.token if token == 'admin' else token}"
    return api.client.post(f"/api/v1.1/{method}{query}", content=body, headers=sent)


def post_json(api: Api, method: str, fields: dict[str, Any], **options: Any) -> Any:
    return post(api, method, json.dumps(fields), content_type="application/json", **options)


def envelope(response: Any, status: int = 200) -> dict[str, Any]:
    """The JSON envelope of a response that must have the given HTTP status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    return body


def xml_root(response: Any, status: int = 200) -> ET.Element:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/xml"), response.headers
    root = ET.fromstring(response.content)
    assert root.tag == "xml"
    return root


def error_of(response: Any, status: int = 200) -> tuple[int, str]:
    body = envelope(response, status)
    assert body["data"] is None, body
    return body["error"], body["error_text"]


def setup_program(api: Api, *codes: str) -> int:
    loyalty_id = api.program()
    if codes:
        api.codes(loyalty_id, *codes)
    return loyalty_id


def bound_code(api: Api, code: str = "BOUND-1") -> tuple[int, int, str]:
    """A program holding one code attached to a profile: (loyalty_id, db_id, profile_id)."""
    loyalty_id = setup_program(api, code)
    db_id = api.database()
    profile_id = api.profile(db_id, "ann@example.org")
    api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org", code=code)
    return loyalty_id, db_id, profile_id


def snapshot(api: Api, loyalty_id: int) -> list[dict[str, Any]]:
    """Everything the API tells about a program's codes: export_all plus a full `get` of each code."""
    exported = api.ok("promocodes/export_all", loyalty_id=loyalty_id)
    return [
        {"export": item, "get": api.ok("promocodes/get", loyalty_id=loyalty_id, code=item["code"])} for item in exported
    ]


def exported_codes(api: Api, loyalty_id: int) -> list[str]:
    return [item["code"] for item in api.ok("promocodes/export_all", loyalty_id=loyalty_id)]


@contextlib.contextmanager
def running(database_url: str, **settings: Any) -> Iterator[Api]:
    """An application of our own, for the settings the `api` fixture does not have."""
    app = create_app(Settings(database_url=database_url, **settings), migrate=True)
    with InProcessClient(app) as client:
        yield Api(client, database_url, admin_token(client, app))
