"""The simulator as strict as Graph's metadata (graph_metadata.py), around every Graph request.

Before a handler runs, the request's path, `$select`, `$expand`, `$filter`, `$orderby` and an action's
or entity's JSON body are checked against the metadata of the version it calls; what Graph's metadata
lacks gets Graph's `400 BadRequest` with Graph's wording ("Resource not found for the segment '...'.",
"Could not find a property named '...' on type '...'.", https://learn.microsoft.com/en-us/graph/errors).
After it, the answer is cut to the properties the addressed type has in that version, so a v1.0 answer
never carries a beta-only property; a property that neither version has is a simulator bug, recorded in
`problems` (the test fixture fails on it). `$batch` inner requests go through `check` and `conform` too.
A handler that leaves the object it answered on the request (`request_keys.ANSWER`) has that object read
where it stands; the response is parsed and conformed again only when something in it needs cutting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from monitor.simulator._json import json_response
from monitor.simulator.errors import bad_request
from monitor.simulator.graph_metadata import (
    MetadataError,
    Target,
    conform_response,
    conforms,
    metadata,
    split_path,
)
from monitor.simulator.request_keys import ANSWER, BODY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REFUSED = ("segment", "property", "parameter")


class Conformance:
    """One per simulator: the checks, and the problems found in the simulator's own answers."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Target | None:
        """The target of a Graph request, or None when the metadata does not cover it (the handler
        decides); raises Graph's 400 for what the metadata refuses."""
        split = split_path(path)
        if split is None or split[1] == ["$batch"]:
            return None
        version, segments = split
        meta = metadata()[version]
        try:
            target = meta.resolve(segments)
        except MetadataError as exc:
            if exc.problem.kind in REFUSED:
                raise bad_request(exc.problem.message) from None
            return None
        for problem in (*meta.check_query(target, query), *meta.check_body(method, target, body)):
            if problem.kind in REFUSED:
                raise bad_request(problem.message)
        return target

    def conform(self, path: str, target: Target | None, body: Any) -> tuple[Any, bool]:
        """`body` cut to the target type's properties in the path's version; (body, changed)."""
        split = split_path(path)
        if target is None or split is None:
            return body, False
        result = conform_response(split[0], target, body)
        self.problems.extend(f"{path}: {problem}" for problem in result.invented)
        return result.body, result.changed

    def conforms(self, path: str, target: Target, answer: Any) -> bool:
        """Whether `conform` would leave `answer`, as JSON, as it is and find no problem in it."""
        split = split_path(path)
        return split is not None and conforms(split[0], target, answer)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if split_path(request.path) is None:
            return await handler(request)
        body = await _json_body(request)
        request[BODY] = body
        target = self.check(request.method, request.path, request.query, body)
        response = await handler(request)
        if target is None or not isinstance(response, web.Response) or response.status >= 300:
            return response
        if response.content_type != "application/json" or not isinstance(response.body, bytes):
            return response
        if ANSWER in request and self.conforms(request.path, target, request[ANSWER]):
            return response  # what parsing the body and conforming it would find: nothing to change
        conformed, changed = self.conform(request.path, target, orjson.loads(response.body))
        if not changed:
            return response
        return json_response(conformed, status=response.status, headers=_kept_headers(response))


async def _json_body(request: web.Request) -> Any:
    if not request.body_exists or request.content_type != "application/json":
        return None
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


def _kept_headers(response: web.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
