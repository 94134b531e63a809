"""Fixtures for alert and webhook delivery: a webhook receiver that checks every signature the way a
customer's would, retry waits recorded instead of slept, and runtimes with alert rules."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from monitor.app import Runtime
from monitor.simulator import RunningSimulator
from monitor.sinks.alerts import AlertDispatcher
from monitor.sinks.signing import WebhookClient
from tests.conftest import RedisServer, simulator_settings

SECRET = "whsec-test-5f1d2c"


@dataclass
class Sleeps:
    """An injected `sleep`: records each wait and only yields to the loop."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    signed: bool
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A customer's endpoint. `answers` are given in order, one per request, then 200 for good;
    a request whose signature does not verify gets 401 whatever the script says."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    @property
    def accepted(self) -> list[Any]:
        return [d.json for d in self.deliveries if d.status == 200]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What the README tells receivers to do, written out independently of monitor's code."""
    timestamp = headers.get("X-Monitor-Timestamp", "")
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return bool(timestamp) and hmac.compare_digest(expected, headers.get("X-Monitor-Signature", ""))


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    box: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        target = box[0]
        body = await request.read()
        headers = dict(request.headers)
        signed = verify(SECRET, headers, body) and request.content_type == "application/json"
        status, extra = target.answers.pop(0) if target.answers else (200, {})
        status = status if signed else 401
        target.deliveries.append(Delivery(body, headers, signed, status))
        return web.Response(status=status, headers=extra, text="ok" if status == 200 else "no")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    box.append(Receiver(str(server.make_url("/hook"))))
    return box[0]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def toml_rules(rules: list[dict[str, Any]]) -> str:
    # JSON strings, numbers, booleans and arrays of them are also valid TOML values.
    return "\n".join("[[alert]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in r.items()) for r in rules)


MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(
    graph: RunningSimulator, redis_server: RedisServer, redis: Any, tmp_path: Path, sleeps: Sleeps
) -> AsyncIterator[MakeRuntime]:
    """A runtime on the simulated tenant with `rules` in MONITOR_ALERTS_FILE; its webhook waits are
    recorded in `sleeps`."""
    opened: list[Runtime] = []

    async def make(rules: list[dict[str, Any]], *, sink: str = "", max_retries: int = 2) -> Runtime:
        path = tmp_path / "alerts.toml"
        path.write_text(toml_rules(rules))
        settings = simulator_settings(
            graph,
            redis_server,
            alerts_file=str(path),
            webhook_secret=SECRET,
            webhook_max_retries=max_retries,
            sink=sink,
        )
        runtime = await Runtime.open(settings)
        runtime.alerts = AlertDispatcher(WebhookClient.from_settings(settings, sleep=sleeps))
        opened.append(runtime)
        return runtime

    yield make
    for runtime in opened:
        await runtime.close()
