"""Typed per-request state shared by the middlewares and the handlers (aiohttp RequestKeys)."""

from __future__ import annotations

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
TENANT = web.RequestKey("tenant", str)  # the caller's tenant id, when known (for the request log)
CLIENT = web.RequestKey("client", str)  # the caller's client id, when known
DROPPED = web.RequestKey("dropped", bool)  # a fault closed the connection: there is no response
EXTRA_HEADERS = web.RequestKey("extra_headers", dict[str, str])  # added to the response
BODY = web.RequestKey("body", object)  # the JSON body of a Graph request, None when there is none
# What a handler's JSON response was serialised from, when the handler says so (conformance.py reads it
# instead of parsing the response again); set just before the response is made, never changed after.
ANSWER = web.RequestKey("answer", object)
