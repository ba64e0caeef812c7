"""Owns the HTTP server's connection limits: how long a client may take to send its headers and
its body, how large its headers may be, and how many connections are served at once. Works
below the ASGI app (a uvicorn protocol class); knows nothing of the gateway's routes.

A refused connection whose client awaits an answer gets a short one (408 for headers or a body
that came too slowly, 431 for headers over the cap): its write side is shut at once and it is
closed after a short linger, so the client reads the answer rather than a reset; what the
client still sends meanwhile is dropped unparsed. Any other is closed at once.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("app.httpserver")

# How long a refused connection stays half-open (our side shut) so its answer is read before
# the close; unread data at close makes the kernel send a reset, which can overtake the answer.
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits every connection of `serve` is held to (defaults: the settings' defaults)."""

    # From the connection's open, or from the end of the previous response on a kept-alive
    # connection, until the request line and all headers are in.
    header_timeout_seconds: float = 10.0
    # From the end of the headers until the last byte of the body: a total, not an idle time,
    # so a body trickled a byte at a time cannot hold the connection.
    body_timeout_seconds: float = 30.0
    # The request line and all header lines with their line ends, as received.
    max_header_bytes: int = 16 * 1024
    # Connections served at once; a request on any connection beyond them is answered 503.
    max_connections: int = 500


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The uvicorn protocol class (`http=`) that enforces `limits`."""
    configured = limits

    class GatewayHttpProtocol(LimitedHttpProtocol):
        limits = configured

    return GatewayHttpProtocol


def limit_concurrency(limits: ConnectionLimits) -> int:
    """uvicorn's `limit_concurrency` for `limits.max_connections`.

    uvicorn refuses when the open connections, the asking one included, reach its limit, so
    one more lets exactly `max_connections` be served.
    """
    return limits.max_connections + 1


def _answer(status: int, server_state: ServerState) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    body = f"{phrase}\n".encode()
    lines = [f"HTTP/1.1 {status} {phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in server_state.default_headers]
    lines += [
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (its fastest) with header and body timeouts and a cap on
    the header bytes, counted before the parser buffers them.

    httptools keeps a header line in memory until its end arrives, and uvicorn has no limit
    of its own on it, so the bytes are counted here as they come in, before parsing.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # One deadline at a time: for the headers, for the body, or none while the app works.
        # Its timer is re-armed lazily (when it fires early, for what is left): moving the
        # deadline on each request costs a clock read, not a timer scheduled and cancelled.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._reading_headers = True  # the next bytes belong to a request line or headers
        self._request_begun = False  # some of the current request's bytes have arrived
        self._header_bytes = 0
        self._message_ended_in_feed = False
        self._refused = False

    # --- connection events ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_clock(self.limits.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._deadline = None
        for timer in (self._timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._linger_timer = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: the answer is out, the rest is not read
        # While headers are expected, at most the bytes left under the cap go to the parser at
        # a time, so a header line without an end never grows past the cap in memory.
        while data and self._reading_headers:
            room = self.limits.max_header_bytes - self._header_bytes
            if room <= 0:
                log.info("http.header_too_large")
                self._refuse(431)
                return
            piece, data = data[:room], data[room:]
            self._message_ended_in_feed = False
            super().data_received(piece)
            if self._refused or self.transport.is_closing():
                return
            # When a request ended inside this piece (or inside a read fed whole below), the
            # next one's share of it is unknown and not counted: a pipelined request's headers
            # may pass the cap by at most one read, and memory stays bounded all the same.
            if self._reading_headers and not self._message_ended_in_feed:
                self._header_bytes += len(piece)
        if data:
            super().data_received(data)

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._deadline is None:  # else the clock runs from the open or the last response
            self._start_clock(self.limits.header_timeout_seconds)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._request_begun = False
        super().on_headers_complete()
        self._start_clock(self.limits.body_timeout_seconds)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = None  # the app's own time is not limited here
        self._reading_headers = True
        self._header_bytes = 0
        self._message_ended_in_feed = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The clock for the next request's headers starts when this response ends; not while
        # a pipelined request that uvicorn has just started is still being answered.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._reading_headers and not self.transport.is_closing():
            self._start_clock(self.limits.header_timeout_seconds)

    # --- limits ---

    def _start_clock(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is not None and self._timer.when() > self._deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None or self._detached():
            return
        if self.loop.time() < self._deadline:  # moved on since this timer was set
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)
            return
        if self._reading_headers:
            log.info("http.header_timeout")
            # A connection that sent nothing of a request is closed: nobody is to be told.
            self._refuse(408 if self._request_begun else None)
        else:
            log.info("http.body_timeout")
            self._refuse(408)

    def _detached(self) -> bool:
        """True when the connection is gone or no longer ours (an upgrade took it over)."""
        return self.transport.is_closing() or self.transport.get_protocol() is not self

    def _refuse(self, status: int | None) -> None:
        """Answer `status` if the client awaits an answer and none has begun; shut the
        connection either way."""
        self._refused = True
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        cycle = self.cycle
        in_flight = cycle is not None and not cycle.response_complete
        if self._reading_headers:
            # A new request: answerable unless an earlier one is still being answered.
            answerable = not in_flight
        else:
            # A body: answerable while its request has no answer yet (an early 413 has one).
            answerable = in_flight and not cycle.response_started
        if cycle is not None and in_flight:
            # The app sees the client gone: its receive() returns http.disconnect and what it
            # sends is dropped, so it never writes after our answer.
            cycle.disconnected = True
            cycle.message_event.set()
        if status is None or not answerable:
            self.transport.close()
            return
        self.transport.write(_answer(status, self.server_state))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()  # keep draining, so the close that follows is no reset
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
