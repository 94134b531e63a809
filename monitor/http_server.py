"""Serving the web app (`monitor web`, `monitor serve`) so that no client can stall it.

Slow or idle clients cost a connection each (a file descriptor, buffers, a task): without bounds, a
few thousand that trickle their bytes (or send nothing) hold the process's descriptors and memory
for as long as they like, and a genuine notification from Graph waits behind them. The bounds:

- aiohttp's own settings first (the request handler's arguments, passed through `web.AppRunner`:
  https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.AppRunner):
  - `max_line_size`, `max_field_size` (8190 bytes) and `max_headers` (128): a request line or
    header over them is answered 400 by aiohttp.
  - `keepalive_timeout` = `MONITOR_HTTP_IDLE_TIMEOUT`: a connection idle that long is closed, and
    so is one that has not sent a complete request line and headers within that time of opening or
    of its previous answer (aiohttp >= 3.14.5 arms the timer when the connection opens).
  - `lingering_time` = `MONITOR_HTTP_READ_TIMEOUT`: after an answer given before the body was read
    (413, 415, a GET with a body), aiohttp reads and drops the rest for at most this long.
  - `client_max_size` = `MONITOR_WEBHOOK_MAX_BODY` (set on the application, `monitor.web`).
- aiohttp has no time limit on reading a body: the webhook reads one for at most
  `MONITOR_HTTP_READ_TIMEOUT`, then answers 408 and closes (`monitor.webhook`).
- aiohttp has no cap on open connections: at most `MONITOR_HTTP_MAX_CONNECTIONS` are kept (and no
  more than half of what the process's descriptor limit leaves after a reserve, since each request
  in progress may hold a Redis connection too). A connection over the cap closes the one that has
  been open longest: under a flood of slow clients that is one of theirs, while a genuine request
  is answered within milliseconds of connecting and is never the oldest.

A proxy in front (TLS termination, ingress) should bound its side the same way: deploy/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from monitor.collector import freeze_start_up
from monitor.logs import RateLimited
from monitor.settings import Settings
from monitor.web import ssl_context

log = logging.getLogger(__name__)

# aiohttp's defaults, set explicitly: Graph's requests and an operator's browser stay far below.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128
# Descriptors kept for everything but client connections (Redis, Graph, logs, the listening socket).
RESERVED_DESCRIPTORS = 64
BACKLOG = 128
SHUTDOWN_TIMEOUT = 30.0


def connection_cap(configured: int) -> int:
    """`configured`, lowered if the descriptor limit could not hold that many clients and as many
    Redis connections besides."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    fits = max(16, (soft - RESERVED_DESCRIPTORS) // 2)
    if fits < configured:
        log.warning(
            "MONITOR_HTTP_MAX_CONNECTIONS lowered from %d to %d: the descriptor limit is %d", configured, fits, soft
        )
    return min(configured, fits)


class _CappedServer(web.Server):
    """aiohttp's connection manager, keeping at most `max_connections` open: over it, the oldest is
    closed at once."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self._open: dict[RequestHandler, None] = {}  # insertion order: the oldest first
        self._evictions = RateLimited(log)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open[handler] = None
        while len(self._open) > self.max_connections:
            oldest = next(iter(self._open))
            del self._open[oldest]
            oldest.force_close()
            self._evictions.warning(
                "%d connections open (MONITOR_HTTP_MAX_CONNECTIONS): closed the one open longest", self.max_connections
            )

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._open.pop(handler, None)
        super().connection_lost(handler, exc)


class _CappedRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        # The same server (handler, factory and the request handler's arguments), with the cap.
        return _CappedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            max_connections=self.max_connections,
            **made._kwargs,
        )


def runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """An `AppRunner` for `app` with every bound above."""
    return _CappedRunner(
        app,
        max_connections=connection_cap(settings.http_max_connections),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=settings.http_idle_timeout,
        lingering_time=settings.http_read_timeout,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
    )


async def serve(app: web.Application, settings: Settings, stop: asyncio.Event) -> None:
    """Serve `app` on MONITOR_HOST:MONITOR_PORT until `stop` is set, then shut down gracefully."""
    served = runner(app, settings)
    await served.setup()
    try:
        site = web.TCPSite(served, settings.host, settings.port, ssl_context=ssl_context(settings), backlog=BACKLOG)
        await site.start()
        log.info("listening on %s:%d", settings.host, settings.port)
        freeze_start_up()  # started: what is alive now lives as long as the process
        await stop.wait()
    finally:
        await served.cleanup()
