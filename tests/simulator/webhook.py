"""A small HTTPS webhook for the subscription tests: records what the simulator sends, answers as told.

Validation replies are chosen per path (`validation[path]`): "echo" answers the decoded token as
text/plain; the other modes are the mistakes a webhook can make. Notification POSTs are answered
from `script` (one status per POST, `None` for "never answer until the test ends"), then 202.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

ValidationReply = Literal["echo", "encoded", "wrong", "error", "json", "hang"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    raw_query: str  # as sent, still percent-encoded
    query: dict[str, str]  # decoded
    content_type: str
    charset: str | None
    body: bytes

    @property
    def is_validation(self) -> bool:
        return "validationToken" in self.query

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Webhook:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    validation: dict[str, ValidationReply] = field(default_factory=dict)
    script: deque[int | None] = field(default_factory=deque)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def validations(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if r.is_validation and (path is None or r.path == path)]

    def posts(self, path: str = "/notify") -> list[Received]:
        """Notification (or lifecycle) POSTs to `path`, in arrival order."""
        return [r for r in self.received if not r.is_validation and r.path == path]

    def items(self, path: str = "/notify") -> list[dict[str, Any]]:
        return [item for post in self.posts(path) for item in post.json()["value"]]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            request.method,
            request.path,
            request.raw_path.partition("?")[2],
            dict(request.query),
            request.content_type,
            request.charset,
            body,
        )
        self.received.append(received)
        if received.is_validation:
            return await self._validate(received)
        status = self.script.popleft() if self.script else 202
        if status is None:
            await self.release.wait()
            status = 202
        return web.Response(status=status)

    async def _validate(self, received: Received) -> web.StreamResponse:
        token = received.query["validationToken"]
        mode = self.validation.get(received.path, "echo")
        if mode == "hang":
            await self.release.wait()
        if mode == "encoded":
            raw = next(part for part in received.raw_query.split("&") if part.startswith("validationToken="))
            return web.Response(text=raw.partition("=")[2], content_type="text/plain")
        if mode == "wrong":
            return web.Response(text=token + "x", content_type="text/plain")
        if mode == "error":
            return web.Response(status=500, text=token, content_type="text/plain")
        if mode == "json":
            return web.Response(text=token, content_type="application/json")
        return web.Response(text=token, content_type="text/plain")


def _port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("not listening")


@asynccontextmanager
async def serve_webhook(context: ssl.SSLContext) -> AsyncIterator[Webhook]:
    """Serve a Webhook over HTTPS on a free loopback port with this server context."""
    hook = Webhook()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        hook.url = f"https://127.0.0.1:{_port(runner)}"
        yield hook
    finally:
        hook.release.set()  # let hanging handlers finish so the runner can stop
        await runner.cleanup()
