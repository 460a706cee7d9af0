"""The HTTP server: uvicorn with httptools, plus the one bound uvicorn does not have — a deadline for headers.

uvicorn closes idle keep-alive connections and our pipeline bounds the body (``promocodes.http.bodies``), but a
client that sends its request line and headers a byte at a time holds a connection for as long as it likes
("slowloris"). :class:`HeaderTimeoutProtocol` gives every request ``header_timeout`` seconds from its first byte
(or from the connection's opening) to its last header; past it the connection is closed.
docs/api.md#behind-a-reverse-proxy says what a reverse proxy in front should bound as well.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from promocodes.config import Settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools' protocol with a deadline on the request line and headers of every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Worker processes are started by uvicorn and read their settings from the environment (see ``serve``).
        self.header_timeout = Settings.from_env().header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout > 0:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request line is dropped as well

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._arm()  # a further request on a kept-alive connection gets its own deadline

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve ``promocodes.http.app:create_app`` until interrupted; worker processes build their app from the
    environment, which the caller has filled from ``settings``."""
    import uvicorn

    uvicorn.run(
        "promocodes.http.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=HeaderTimeoutProtocol,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=settings.keep_alive_timeout,
    )
