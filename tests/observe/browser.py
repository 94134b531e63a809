"""A real headless Chromium (Debian's `chromium` package), driven over the DevTools protocol.

Enough of the protocol to use a page as an operator does: open a URL, type into a field, click,
wait for the next page to load, read what the browser rendered, take a screenshot. Chromium is
started on a free port (`--remote-debugging-port=0`; it writes the port it took to
`DevToolsActivePort` in its profile folder) with a throw-away profile, resolves no host but the
loopback (`--host-resolver-rules`), and is stopped at the end by its process id.

Protocol reference: https://chromedevtools.github.io/devtools-protocol/ (Page.navigate,
Page.loadEventFired, Runtime.evaluate, Input.insertText, Page.captureScreenshot).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Deadlines, not measurements: a cold Chromium on a busy two-core machine can take a while.
START_DEADLINE = 90.0
STEP_DEADLINE = 60.0
WIDTH = 1280


def chromium_path() -> str:
    """The browser, or a test failure saying how to get it (never a silent skip: `./dev test`
    installs it, so a missing browser is a broken machine)."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Chromium is not installed, so the status page cannot be tested in a real browser: "
        "run ./dev test (it installs Debian's chromium package) or apt-get install chromium"
    )


def chromium_command(profile: Path) -> list[str]:
    return [
        chromium_path(),
        "--headless",
        "--no-sandbox",  # tests run as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        # The app's certificate comes from the simulator's test CA, which this profile does not know.
        "--ignore-certificate-errors",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},900",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]


class Page:
    """One browser tab, over its DevTools websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        command_id = self._next_id
        await self._socket.send_json({"id": command_id, "method": method, "params": params})
        while True:
            message = await self._receive()
            if message.get("id") == command_id:
                if "error" in message:
                    raise AssertionError(f"DevTools {method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._events.append(message)

    async def wait_for(self, event: str) -> dict[str, Any]:
        while True:
            for index, message in enumerate(self._events):
                if message.get("method") == event:
                    del self._events[: index + 1]
                    return message
            self._events.append(await self._receive())

    async def _receive(self) -> dict[str, Any]:
        message = await self._socket.receive(timeout=STEP_DEADLINE)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"DevTools connection: {message.type.name} {message.data!r}")
        decoded: dict[str, Any] = json.loads(message.data)
        return decoded

    async def open(self, url: str) -> None:
        """Navigate and wait until the page has loaded."""
        self._events.clear()
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise AssertionError(f"Chromium could not open {url}: {result['errorText']}")
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools evaluates it; the page's own
        Content-Security-Policy forbids scripts of the page, not the debugger's)."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def type_into(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def click_and_wait(self, selector: str) -> None:
        """Click (a submit button, a link) and wait for the page that follows to load."""
        self._events.clear()
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        await self.wait_for("Page.loadEventFired")

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window), written to `path`."""
        metrics = await self.send("Page.getLayoutMetrics")
        height = int(metrics["cssContentSize"]["height"]) + 1
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False
        )
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path


@asynccontextmanager
async def chromium(folder: Path) -> AsyncIterator[Page]:
    """A headless Chromium with one tab; its log goes to `folder/chromium.log`."""
    profile = folder / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    log = folder / "chromium.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *chromium_command(profile), stdout=output, stderr=output, stdin=subprocess.DEVNULL
        )
    try:
        port = await _devtools_port(profile, process, log)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            tab = next(target for target in targets if target.get("type") == "page")
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                page = Page(socket)
                await page.send("Page.enable")
                yield page
    finally:
        await _stop(process)


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process, log: Path) -> int:
    marker = profile / "DevToolsActivePort"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_DEADLINE
    while loop.time() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"Chromium exited with {process.returncode}; its log is {log}")
        text = await asyncio.to_thread(_read, marker)
        if text.strip():
            return int(text.splitlines()[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"Chromium did not open its DevTools port within {START_DEADLINE:g}s; its log is {log}")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=15)
    except TimeoutError:
        process.kill()
        await process.wait()
