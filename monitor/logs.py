"""Logging set-up from one dict: readable text on a terminal, or one JSON object per line.

JSON lines carry `tenant`, `source` and `request_id` when the log call passes them in `extra`, so a
log pipeline can follow one tenant or one webhook request across processes.
"""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from typing import Any

import orjson

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
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
            "filters": {"request": {"()": RequestContext}},
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
            "loggers": {"aiohttp.access": {"level": "WARNING"}, "msal": {"level": "WARNING"}},
        }
    )
