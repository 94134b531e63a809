"""Bad input gets a clear answer and a short log line: garbage request bodies against a real
`monitor web`, and crashes logged as JSON when the logs are JSON."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson

from tests.conftest import RedisServer
from tests.faults.conftest import Launch, start_web

GARBAGE = b"\x00\x01not what the header says\xff" * 40
ENCODINGS = [b"gzip", b"deflate", b"br", b"zstd"]


async def post_raw(port: int, encoding: bytes, extra_header: bytes = b"X-Extra: 1") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        b"POST /graph/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + extra_header
        + b"\r\nContent-Encoding: "
        + encoding
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(GARBAGE)
    )
    writer.write(head + GARBAGE)
    response = await reader.read()
    writer.close()
    return int(response.split(b" ", 2)[1])


async def test_garbage_bodies_with_a_content_encoding_are_one_short_warning_each_at_most(
    redis_server: RedisServer, launch: Launch
) -> None:
    web = await start_web(launch, redis_server, MONITOR_LOG_FORMAT="json")
    port = web.port

    statuses = [await post_raw(port, encoding) for _ in range(10) for encoding in ENCODINGS]
    too_long = await post_raw(port, b"gzip", b"X-Padding: " + b"a" * 9000)  # over aiohttp's 8190 bytes
    assert await web.stop() == 0

    assert set(statuses) == {400} and too_long == 400
    lines = [orjson.loads(line) for line in web.output().splitlines()]
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL") or "exception" in line] == []
    warnings = [line for line in lines if line["level"] == "WARNING"]
    # Each garbage request is worth a line, but 41 within seconds are worth a few (rate-limited).
    assert 1 <= len(warnings) <= 4 and all(len(line["message"]) < 300 for line in warnings)
    assert any("content-encoding" in line["message"].lower() for line in warnings)


def test_an_uncaught_exception_is_a_json_line_when_logs_are_json() -> None:
    crash = (
        "import threading\n"
        "from monitor.logs import configure\n"
        "configure('INFO', 'json')\n"
        "thread = threading.Thread(target=lambda: 1 / 0, name='side')\n"
        "thread.start(); thread.join()\n"
        "raise RuntimeError('the main thread crashed')\n"
    )
    run = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1
    lines = [orjson.loads(line) for line in run.stderr.splitlines()]  # every line is JSON
    thread, main = lines
    assert thread["level"] == "CRITICAL" and "ZeroDivisionError" in thread["exception"]
    assert "thread side" in thread["message"]
    assert main["level"] == "CRITICAL" and "RuntimeError: the main thread crashed" in main["exception"]
