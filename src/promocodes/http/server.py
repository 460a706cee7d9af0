"""The HTTP server: uvicorn with httptools, plus the one bound uvicorn does not have — a deadline for headers — and
the logging and metrics set-up every worker needs (the access log on stdout, ``PROMETHEUS_MULTIPROC_DIR``).

uvicorn closes idle keep-alive connections and our pipeline bounds the body (``promocodes.http.bodies``), but a
client that sends its request line and headers a byte at a time holds a connection for as long as it likes
("slowloris"). :class:`HeaderTimeoutProtocol` gives every request ``header_timeout`` seconds from its first byte
(or from the connection's opening) to its last header; past it the connection is closed.
docs/api.md#behind-a-reverse-proxy says what a reverse proxy in front should bound as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
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


#: the variable prometheus-client reads, when first imported, to keep its values in files the workers share
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """The directory where the workers keep their metrics, set in the environment before any of them starts.

    Not set: a fresh temporary directory, removed when the server stops (left behind only if the server is killed
    with SIGKILL). Set by the operator: used as it is, after removing the files a previous run left there — a
    metrics directory must start empty, or the old counts would be added to the new ones."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield given
        return
    created = tempfile.mkdtemp(prefix="promocodes-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = created
    # A single-process uvicorn, once shut down by SIGTERM, raises the signal again for the exit status; the
    # default action would end the process before the directory is removed. An exception ends it just the same,
    # with the same status, after the clean-up.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        yield created
    finally:
        signal.signal(signal.SIGTERM, previous)
        os.environ.pop(METRICS_DIR_VARIABLE, None)
        shutil.rmtree(created, ignore_errors=True)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def logging_config() -> dict[str, Any]:
    """uvicorn's logging configuration plus ours, applied by uvicorn in every worker: the access log's JSON lines
    on stdout alone (nothing else there), and the server's own messages (tracebacks of 500s, database warnings) on
    stderr, each with the id of the request it happened in."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"request_id": {"()": "promocodes.http.access_log.RequestIdFilter"}}
    config["formatters"]["access_json"] = {"format": "%(message)s"}
    config["formatters"]["promocodes"] = {
        "format": "%(asctime)s %(levelname)s %(name)s request=%(request_id)s %(message)s"
    }
    config["handlers"]["access_json"] = {
        "class": "logging.StreamHandler",
        "formatter": "access_json",
        "stream": "ext://sys.stdout",
    }
    config["handlers"]["promocodes"] = {
        "class": "logging.StreamHandler",
        "formatter": "promocodes",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["promocodes.access"] = {"handlers": ["access_json"], "level": "INFO", "propagate": False}
    config["loggers"]["promocodes"] = {"handlers": ["promocodes"], "level": "WARNING", "propagate": False}
    return config


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve ``promocodes.http.app:create_app`` until interrupted; worker processes build their app from the
    environment, which the caller has filled from ``settings``. The metrics directory is in the environment before
    uvicorn imports the app, in this process (one worker) or in the worker processes."""
    import uvicorn

    with metrics_directory():
        uvicorn.run(
            "promocodes.http.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http=HeaderTimeoutProtocol,
            log_level="warning",
            log_config=logging_config(),
            access_log=False,  # ours is the access log
            server_header=False,
            timeout_keep_alive=settings.keep_alive_timeout,
        )
