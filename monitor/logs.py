"""Logging set-up from one dict: readable text on a terminal, or one JSON object per line.

JSON lines carry `tenant`, `source` and `request_id` when the log call passes them in `extra`, so a
log pipeline can follow one tenant or one webhook request across processes.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
import time
from contextvars import ContextVar
from types import TracebackType

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from monitor.model.types import JsonObject

CONTEXT_FIELDS = ("tenant", "source", "request_id", "subscription", "scope")
# The id of the HTTP request being served (set by the web app's request-id middleware). aiohttp runs
# every request in a task of its own, so each request sees its own value.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestContext(logging.Filter):
    """Stamps the current request id on every record logged while a request is served, so a log
    call deep in the code needs no `extra` to be traced back to its request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class RateLimited:
    """A WARNING at most every `interval` seconds (per instance); the next one says how many were
    left out. For what the outside world can trigger at will (garbage requests): each deserves a
    line, but a flood of them must not flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = float("-inf")
        self._left_out = 0

    def admit(self) -> str | None:
        """None when this one is left out; otherwise what to append to it (how many were left out)."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._left_out += 1
            return None
        suffix = (
            f" ({self._left_out} more like it in the last {now - self._last:.0f}s not logged)" if self._left_out else ""
        )
        self._last, self._left_out = now, 0
        return suffix

    def warning(self, message: str, *args: object) -> None:
        suffix = self.admit()
        if suffix is not None:
            self.logger.warning(message + suffix, *args)


class ClientErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (malformed HTTP, a header line too long, a body it
    cannot decode under its Content-Encoding) at ERROR with the traceback. That is the client's
    mistake, not ours: it becomes one short WARNING line, rate-limited (`RateLimited`)."""

    def __init__(self) -> None:
        super().__init__()
        self._gate = RateLimited(logging.getLogger("aiohttp.server"))

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError | RequestPayloadError):
            return True
        suffix = self._gate.admit()
        if suffix is None:
            return False
        reason = " ".join(str(error).split())[:200]
        record.msg, record.args = f"{record.getMessage()}: {reason}{suffix}", ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: JsonObject = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    formatter = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}
    )
    logging.Formatter.converter = __import__("time").gmtime
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "filters": {"request": {"()": RequestContext}, "client_errors": {"()": ClientErrors}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "stream": "ext://sys.stderr",
                    "filters": ["request"],
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
            # aiohttp logs every request at INFO; the access log is noise next to our own.
            "loggers": {
                "aiohttp.access": {"level": "WARNING"},
                "aiohttp.server": {"filters": ["client_errors"]},
                "msal": {"level": "WARNING"},
            },
        }
    )
    if fmt == "json":
        _log_uncaught_exceptions()


def _log_uncaught_exceptions() -> None:
    """An exception nothing caught (in the main thread or another) is logged like everything else,
    so with JSON logs a crash is one JSON line with its traceback, not raw text on stderr."""
    crash = logging.getLogger("monitor")

    def excepthook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, traceback)
            return
        crash.critical("uncaught exception: %s", error, exc_info=(kind, error, traceback))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or isinstance(args.exc_value, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        crash.critical("uncaught exception in thread %s: %s", name, args.exc_value, exc_info=args.exc_value)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
