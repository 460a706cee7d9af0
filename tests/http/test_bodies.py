"""Bodies are bounded before they cost anything: a bad token outside the body is refused before a byte of it is
read, the bytes held at once are bounded, and a trickling body is dropped (docs/api.md#limits-on-hostile-input)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message

from promocodes.config import Settings
from promocodes.errors import ServerBusy
from promocodes.http.app import create_app
from promocodes.http.bodies import BodyBudget
from promocodes.models import Role
from promocodes.service import Services
from promocodes.store import open_store


class _Asgi:
    """One request straight through the ASGI interface, counting the body bytes the application asks for."""

    def __init__(self, body_chunks: list[bytes], delay: float = 0.0) -> None:
        self.chunks = list(body_chunks)
        self.delay = delay
        self.bytes_read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.delay:
            await asyncio.sleep(self.delay)
        chunk = self.chunks.pop(0) if self.chunks else b""
        self.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def answer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
        return start["status"], headers, json.loads(body)


def _scope(headers: dict[str, str], query: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1.1/promocodes/import",
        "raw_path": b"/api/v1.1/promocodes/import",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


async def _call(app: Any, scope: dict[str, Any], request: _Asgi) -> None:
    await app(scope, request.receive, request.send)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_bad_token_outside_the_body_is_401_before_a_byte_is_read(database_url: str, where: str) -> None:
    """A 50 MB body with a wrong token used to be read and decoded whole (RSS 449 MB; 16 at once 1.27 GB)."""
    app = create_app(Settings(database_url=database_url), migrate=True)
    chunk = b"x" * (1024 * 1024)
    headers = {"content-type": "application/json", "content-length": str(50 * len(chunk))}
    if where == "header":
        headers["authorization"] = "Bearer pc_wrong"
    async with _lifespan(app):
        request = _Asgi([chunk] * 50)
        await _call(app, _scope(headers, "token=pc_wrong" if where == "query" else ""), request)
    status, answer_headers, body = request.answer()
    assert (status, body["error"]) == (200, 401)
    assert request.bytes_read == 0
    assert answer_headers["connection"] == "close"  # the unread body cannot be followed by another request


@pytest.mark.anyio
async def test_a_trickling_body_is_408_and_dropped(tmp_path: Any) -> None:
    database_url = f"sqlite:///{tmp_path}/t.db"
    app = create_app(Settings(database_url=database_url, body_timeout=0.3), migrate=True)
    async with _lifespan(app):
        token = await _admin_token(database_url)
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        request = _Asgi([b"{"] + [b" "] * 1000 + [b"}"], delay=0.05)  # 1,002 chunks, 50 ms apart: 50 s in all
        await _call(app, _scope(headers), request)
    status, answer_headers, body = request.answer()
    assert (status, body["error"]) == (408, 408)
    assert answer_headers["connection"] == "close"
    assert request.chunks, "the server waited for the whole body"


@pytest.mark.anyio
async def test_past_the_body_budget_a_request_waits_then_gets_503(tmp_path: Any) -> None:
    """While one body holds the worker's budget, another that does not fit waits, then gets 503 + Retry-After."""
    database_url = f"sqlite:///{tmp_path}/t.db"
    settings = Settings(database_url=database_url, body_memory_bytes=100, body_memory_wait=0.2, body_timeout=30)
    app = create_app(settings, migrate=True)
    async with _lifespan(app):
        token = await _admin_token(database_url)
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}", "content-length": "80"}
        slow = _Asgi([b"{"] + [b" "] * 78 + [b"}"], delay=0.01)  # declares 80 bytes and takes ~0.8 s to send them
        holding = asyncio.create_task(_call(app, _scope(headers), slow))
        await asyncio.sleep(0.1)
        refused = _Asgi([b"{" + b" " * 78 + b"}"])
        await _call(app, _scope(headers), refused)
        await asyncio.wait_for(holding, 30)
        after = _Asgi([b"{" + b" " * 78 + b"}"])
        await _call(app, _scope(headers), after)
    status, answer_headers, body = refused.answer()
    assert (status, body["error"]) == (503, 503)
    assert answer_headers["retry-after"] == "1"
    assert refused.bytes_read == 0
    assert slow.answer()[2]["error"] == 400  # served: `codes` and `loyalty_id` are missing
    assert after.answer()[2]["error"] == 400  # the budget was given back


@pytest.mark.anyio
async def test_the_body_budget_serves_what_fits_and_a_lone_large_body() -> None:
    budget = BodyBudget(capacity=100, wait=0.1)
    async with budget.hold() as first:
        await first.grow(80)
        async with budget.hold() as second:
            with pytest.raises(ServerBusy):
                await second.grow(80)
        async with budget.hold() as small:
            await small.grow(20)  # what fits beside the first is served at once
    assert budget.used == 0
    async with budget.hold() as alone:
        await alone.grow(1000)  # larger than the whole budget, but alone: served
    assert budget.used == 0


async def _admin_token(database_url: str) -> str:
    store = open_store(database_url)
    await store.open()
    try:
        view = await Services(store).tokens.issue("default", Role.ADMIN)
    finally:
        await store.close()
    assert isinstance(view.token, str)
    return view.token


class _lifespan:
    """Run the application's lifespan (open and migrate the store) around direct ASGI calls."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.started: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: asyncio.Queue[Message] = asyncio.Queue()

    async def __aenter__(self) -> None:
        async def receive() -> Message:
            return await self.queue.get()

        async def send(message: Message) -> None:
            await self.sent.put(message)

        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        await self.queue.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self.sent.get(), 30)
        assert message["type"] == "lifespan.startup.complete", message

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self.sent.get(), 30)
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)
