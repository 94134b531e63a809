"""Graph's error shape, raised from anywhere in the simulator and rendered in one place.

docs/graph.md 2.9 / S20: errors are `{"error": {"code", "message", "innerError": {"request-id",
"date"}}}`; clients branch on `code`, never on `message`, but the messages are kept verbatim where
Graph's wording is known because people grep logs for them.
"""

from __future__ import annotations

from typing import Any


class GraphError(Exception):
    """A Graph error response: HTTP status, error code, message, extra headers."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def forbidden(message: str = "Insufficient privileges to complete the operation.") -> GraphError:
    return GraphError(403, "Authorization_RequestDenied", message)


def not_found(object_id: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not present.",
    )


def error_body(code: str, message: str, request_id: str, date: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "innerError": {"request-id": request_id, "date": date}}}
