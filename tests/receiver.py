"""A real HTTP receiver for webhook deliveries on 127.0.0.1 (``http.server`` in a thread): it records every request
it is sent, and can be told to fail, to hang, or to be down (its port closed) and up again on the same port."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.live import free_port

#: how long a hanging request waits at most to be released (a bound, so that no thread outlives the tests by long)
HANG_LIMIT_SECONDS = 60.0


@dataclass
class Received:
    """One request the receiver got, with the status it answered (None: it hung, and never answered in time)."""

    headers: dict[str, str]
    body: bytes
    status: int | None

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """``url`` takes POSTs. ``fail_next`` answers the next N requests with 500, ``hang_next`` makes the next N hang
    until :meth:`release` (or the hang limit); :meth:`down` closes the port, :meth:`up` opens it again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.received: list[Received] = []
        self.fail_next = 0
        self.hang_next = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    hang = receiver.hang_next > 0
                    fail = not hang and receiver.fail_next > 0
                    receiver.hang_next -= hang
                    receiver.fail_next -= fail
                    record = Received(dict(self.headers.items()), body, None)
                    receiver.received.append(record)
                if hang:
                    receiver._released.wait(HANG_LIMIT_SECONDS)
                status = 500 if fail else 204
                record.status = None if hang else status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.down()

    def delivered(self) -> list[dict[str, Any]]:
        """The events answered with a 2xx, in the order they arrived."""
        with self._lock:
            return [record.event for record in self.received if record.status is not None and record.status < 300]


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


def wait_until(condition: Callable[[], bool], step: Callable[[], None], timeout: float = 60.0) -> None:
    """Poll ``condition``, calling ``step`` between looks (which lets the application's loop run), until it holds;
    fail after ``timeout`` seconds — a generous bound, not a measurement."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        step()
