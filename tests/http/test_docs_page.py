"""``GET /docs``: the reference page, rendered on the server from the OpenAPI document. It lists exactly the
methods the server answers, loads nothing from another site, runs no script, and escapes what it shows."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec
import pytest

from promocodes.config import Settings
from promocodes.http.app import create_app
from promocodes.http.docs_page import render
from promocodes.http.openapi import STYLESHEET_PATH, openapi_document
from promocodes.http.routes import METHODS
from tests.client import InProcessClient


class Page(HTMLParser):
    """What the tests look at: the paths listed, each section's field names, tags, and every URL the page uses."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.fields: dict[str, list[str]] = {}
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self.inline_handlers: list[str] = []
        self._section: str | None = None
        self._in_path = False
        self._cell = 0
        self._in_first_code_cell = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.add(tag)
        self.urls.extend(value for name, value in attrs if name in ("href", "src", "action") and value)
        self.inline_handlers.extend(name for name, _ in attrs if name.startswith("on"))
        if tag == "section" and "operation" in (attributes.get("class") or ""):
            self._section = None
        if tag == "code" and attributes.get("class") == "path":
            self._in_path = True
        if tag == "tr":
            self._cell = 0
        if tag == "td":
            self._cell += 1
        if tag == "code" and self._cell == 1 and self._section is not None:
            self._in_first_code_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._in_path = self._in_first_code_cell = False
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._in_path:
            self.paths.append(data)
            self._section = data
            self.fields[data] = []
        elif self._in_first_code_cell and self._section is not None:
            self.fields[self._section].append(data)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[InProcessClient]:
    with InProcessClient(create_app(Settings(database_url=f"sqlite:///{tmp_path}/docs.db"), migrate=True)) as client:
        yield client


def request_fields(request: type[Any]) -> list[str]:
    info = msgspec.inspect.type_info(request)
    assert isinstance(info, msgspec.inspect.StructType)
    return [field.name for field in info.fields]


def test_docs_is_an_html_page_with_a_strict_policy(client: InProcessClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" in response.headers
    assert response.text.startswith("<!doctype html>")


def test_it_lists_exactly_the_api_methods_of_the_route_table(client: InProcessClient) -> None:
    page = Page(client.get("/docs").text)
    api_paths = [path for path in page.paths if path.startswith("/api/")]
    assert sorted(api_paths) == sorted(method.path for method in METHODS)
    assert len(api_paths) == len(set(api_paths))
    assert {"/healthz", "/openapi.json"} <= set(page.paths)


def test_each_method_shows_the_fields_its_request_takes(client: InProcessClient) -> None:
    page = Page(client.get("/docs").text)
    for method in METHODS:
        assert page.fields[method.path] == request_fields(method.request), method.path


def test_it_needs_no_script_and_nothing_from_another_site(client: InProcessClient) -> None:
    text = client.get("/docs").text
    page = Page(text)
    assert "script" not in page.tags
    assert page.inline_handlers == []
    assert "//" not in "".join(page.urls)  # no absolute URL, no CDN: every link is a path or an anchor
    assert all(url.startswith(("/", "#")) for url in page.urls)
    assert any(url.startswith(STYLESHEET_PATH) for url in page.urls)


def test_its_style_sheet_is_served_by_the_server(client: InProcessClient) -> None:
    page = Page(client.get("/docs").text)
    (stylesheet,) = [url for url in page.urls if url.startswith(STYLESHEET_PATH)]
    response = client.get(stylesheet)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "body" in response.text
    assert "url(" not in response.text  # the style sheet loads nothing either


def test_every_anchor_the_page_links_to_exists(client: InProcessClient) -> None:
    text = client.get("/docs").text
    for url in Page(text).urls:
        if url.startswith("#"):
            assert f'id="{url[1:]}"' in text, url


def test_text_from_the_document_is_escaped() -> None:
    """A summary, a description or a field name holding markup is shown as text, never run."""
    document = copy.deepcopy(openapi_document())
    operation = document["paths"][METHODS[0].path]["post"]
    operation["summary"] = "<script>alert(1)</script>"
    operation["description"] = '<img src=x onerror="alert(2)"> and `<b>`'
    request = document["components"]["schemas"][METHODS[0].request.__name__]
    request["properties"]['"><script>alert(3)</script>'] = {"type": "string", "description": "<iframe>"}
    page = Page(render(document))
    assert not {"script", "img", "iframe", "b"} & page.tags
    assert page.inline_handlers == []
    html = render(document)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<code>&lt;b&gt;</code>" in html


def test_the_page_only_answers_get(client: InProcessClient) -> None:
    response = client.post("/docs")
    assert response.status_code == 405
