"""A synchronous HTTP client for the application running in the test's own thread.

Starlette's ``TestClient`` runs the application on an event loop in another thread and crosses threads several
times per request: on a 2-core machine that costs about 3 ms a request, three times what the request itself costs,
and the suite makes tens of thousands of them. This client keeps one event loop in the calling thread instead
(``asyncio.Runner``): the application's lifespan is a task on that loop, and each request runs the loop until the
answer is complete (httpx's ASGI transport, which also re-raises the application's exceptions like ``TestClient``).
Between requests the loop is stopped, and whatever the application runs in the background waits for the next one.

It speaks the same ``httpx`` API as ``TestClient`` (``client.post(path, json=…, headers=…)``). Use ``TestClient``
only where a test needs something this one does not do (WebSockets, a request from another thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

import httpx2
from starlette.types import ASGIApp, Message

T = TypeVar("T")
# TestClient's address: the rate limits count failures per client address (docs/api.md#rate-limits).
CLIENT_ADDRESS = ("testclient", 50000)


class _LoopTransport(httpx2.BaseTransport):
    """Hands each request to httpx's ASGI transport on the client's loop and waits for the whole answer."""

    def __init__(self, app: ASGIApp, runner: asyncio.Runner, raise_app_exceptions: bool) -> None:
        self._asgi = httpx2.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions, client=CLIENT_ADDRESS)
        self._runner = runner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        # The ASGI transport wants an asynchronous body; a request built from bytes has one.
        body = request.read()
        buffered = httpx2.Request(request.method, request.url, headers=request.headers, content=body)

        async def send() -> httpx2.Response:
            response = await self._asgi.handle_async_request(buffered)
            content = await response.aread()
            return httpx2.Response(response.status_code, headers=response.headers, content=content)

        return self._runner.run(send())


class InProcessClient(httpx2.Client):
    """``with InProcessClient(app) as client:`` starts the application's lifespan, and stops it on leaving."""

    def __init__(self, app: ASGIApp, *, raise_server_exceptions: bool = True) -> None:
        self._runner = asyncio.Runner()
        self.app = app  # as on TestClient: tests reach `client.app.state`
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: asyncio.Queue[Message] | None = None
        self._lifespan: asyncio.Task[None] | None = None
        super().__init__(
            transport=_LoopTransport(app, self._runner, raise_server_exceptions),
            base_url="http://testserver",
            follow_redirects=True,
        )

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the application's loop (to reach ``app.state`` objects bound to that loop)."""
        return self._runner.run(work)

    def __enter__(self) -> InProcessClient:
        self.run(self._start())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self.run(self._stop())
        finally:
            self._runner.close()
            super().__exit__(kind, error, trace)

    async def _start(self) -> None:
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        # The lifespan task lives as long as the client: it is suspended while the loop is stopped between runs.
        self._lifespan = asyncio.get_running_loop().create_task(
            self.app(scope, self._to_app.get, self._from_app.put)  # type: ignore[arg-type]
        )
        await self._lifespan_step("lifespan.startup")

    async def _stop(self) -> None:
        if self._lifespan is None:
            return
        try:
            await self._lifespan_step("lifespan.shutdown")
        finally:
            await self._lifespan

    async def _lifespan_step(self, event: str) -> None:
        assert self._to_app is not None and self._from_app is not None and self._lifespan is not None
        await self._to_app.put({"type": event})
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, self._lifespan}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():  # the lifespan task ended without answering: its exception says why
            answer.cancel()
            self._lifespan.result()
            raise RuntimeError(f"The application's lifespan ended without answering {event}")
        message = answer.result()
        if message["type"].endswith(".failed"):
            raise RuntimeError(f"{event} failed: {message.get('message', '')}")
