"""The real server (uvicorn with our protocol) drops clients that send their headers or body too slowly: 300 such
connections used to be held for as long as the clients liked."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from promocodes.config import Settings
from promocodes.http.app import create_app
from promocodes.http.server import HeaderTimeoutProtocol


@contextlib.contextmanager
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: float) -> Iterator[int]:
    """A live server on a free port, in a thread; the protocol reads its settings from the environment."""
    for name, value in settings.items():
        monkeypatch.setenv(f"PROMOCODES_{name.upper()}", str(value))
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/s.db", **settings), migrate=True)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=HeaderTimeoutProtocol, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _status_of_one_answer(sock: socket.socket) -> bytes:
    """Read exactly one HTTP answer (headers, then ``Content-Length`` bytes); return its status line."""
    sock.settimeout(20)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head.split(b"\r\n")[0]


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection (or resets it) before ``within`` seconds pass."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.timeout(60)
def test_headers_sent_too_slowly_close_the_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(tmp_path, monkeypatch, header_timeout=0.5) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for sock in slow:
            sock.sendall(b"POST /api/v1.1/promocodes/get HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
        silent = socket.create_connection(("127.0.0.1", port))  # not even a request line
        assert all(_closed_by_server(sock, 20) for sock in [*slow, silent])
        # A request that sends its headers in time is served as ever.
        with socket.create_connection(("127.0.0.1", port)) as fine:
            fine.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status_of_one_answer(fine) == b"HTTP/1.1 200 OK"
        for sock in [*slow, silent]:
            sock.close()


@pytest.mark.timeout(60)
def test_a_kept_alive_connection_gets_a_new_deadline_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        serving(tmp_path, monkeypatch, header_timeout=0.5) as port,
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status_of_one_answer(sock) == b"HTTP/1.1 200 OK"
        time.sleep(0.7)  # longer than the header deadline, shorter than keep-alive: the first deadline is gone
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status_of_one_answer(sock) == b"HTTP/1.1 200 OK"
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the second request's headers stall: dropped
        assert _closed_by_server(sock, 20)


@pytest.mark.timeout(60)
def test_a_trickling_body_is_answered_408_and_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        serving(tmp_path, monkeypatch, body_timeout=0.5) as port,
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        sock.sendall(
            b"POST /api/v1.1/promocodes/programs/list HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        sock.settimeout(20)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"error":408' in answer
