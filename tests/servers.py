"""Runs an ASGI app under a real uvicorn server on a free loopback port, in a thread.

Tests use it to talk to the gateway and the Bitrix24 emulator over real HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp

from app import httpserver


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A uvicorn server in a background thread; `stop()` and `start()` may be repeated.

    With `limits`, it holds connections to them as `serve` does (app/httpserver.py).
    """

    app: ASGIApp
    port: int = field(default_factory=free_port)
    limits: httpserver.ConnectionLimits | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        if self.limits is not None:
            config.http = httpserver.protocol_class(self.limits)
            config.limit_concurrency = httpserver.limit_concurrency(self.limits)
        server = uvicorn.Server(config)

        async def serve() -> None:
            await server.serve()
            # Browsers keep connections open, and a request cut off by the graceful-shutdown
            # timeout leaves its transport open: close what is left, and give the transports
            # the loop turns they need to finish closing before asyncio.run closes the loop,
            # or they are collected unclosed (ResourceWarning, an error under our filters).
            for connection in list(server.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.close()
            await asyncio.sleep(0.2)

        thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("server thread exited before it started")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 15 s")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._server = self._thread = None


@contextmanager
def running(app: ASGIApp, *, port: int | None = None) -> Iterator[RunningServer]:
    server = RunningServer(app, port=port) if port is not None else RunningServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()
