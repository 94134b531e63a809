"""A simulated JupiterOne: the synchronization API and the J1QL query API, for the tests, the demo
and the benchmarks.

It implements the sync-job endpoints under `/persister/synchronization/jobs` and the GraphQL
`queryV1` resolver (`monitor.simulator.j1ql`) with the documented semantics, and keeps the resulting
graph where tests can read it (`entities()`, `relationships()`, `graph_for_prefix()`) or change it
behind the publisher's back (`plant_*`, `remove_*`: drift), with a request log and switchable faults.

Documented behaviour it reproduces (pages at https://docs.jupiterone.io):

- Auth (`/api/sync-jobs/api-reference`): `Authorization: Bearer <key>` and `JupiterOne-Account:
  <account>` on every request, 401 otherwise. Bodies are JSON, optionally `Content-Encoding: gzip`.
- Create job (api-reference, "Request body properties"): `source` `api` or `integration-external`
  (needs `integrationInstanceId`; the SDK also sends `integration-managed`); `scope` required for
  DIFF, usable only with `source: api`; `syncMode` DIFF (default), PATCH, CROSS_SCOPE; the
  deprecated CREATE_OR_UPDATE "no longer functions" (400).
- DIFF (`/api/sync-jobs/diff`): "On finalize, the persister treats your upload as the complete state
  of the scope: anything that existed in the scope last time and is missing from this upload is
  deleted", entities and relationships alike.
- A relationship end is the entity `_key` in the job's own scope, or, labelled with
  `_fromEntitySource`/`_fromEntityScope` (`_to...`), the entity with that key of that source and
  scope (`/features/assets/relationships-across-scopes`: "you will need to use a _key and include a
  _source and _scope of the existing entities"). A half label (scope without source, or the
  reverse) names no entity.
- PATCH (`/api/sync-jobs/patch`): adds and updates entities, never deletes, no relationships.
- CROSS_SCOPE (`/api/sync-jobs/cross-scope`, `/api/sync-jobs/overview`): relationships only, both
  ends labelled with their scopes; finalize "Adds/updates relationships whose from and to entities
  live in different scopes" and "never creates or deletes entities". **It deletes nothing**: no page
  says a relationship missing from a CROSS_SCOPE upload is removed. A relationship whose ends are in
  the same scope is refused (400): "If the entities in question are in the same scope, use DIFF or
  PATCH".
- Deleting an entity also deletes its relationships, in whatever scope they live (the archived
  bulk-upload docs, "Deleting an entity also deletes its relationships").
- One `_key` space per job for entities and relationships together (the SDK's duplicate-key
  tracker): a repeated key is refused (`DUPLICATE_KEY_DETECTED`) unless the job was created with
  `ignoreDuplicates` ("The latest object wins").
- Property constraints (api-reference, "Property constraints"): values are strings, booleans,
  numbers, null or homogeneous arrays of one of those; no nested objects except `_rawData`.
- Finalize is asynchronous: it answers `FINALIZE_PENDING`; a later status poll answers `FINISHED`.
  Uploading to or finalizing a job that is not `AWAITING_UPLOADS` answers 400
  `JOB_NOT_AWAITING_UPLOADS`.
- The job object is the `SyncJob` of JupiterOne's Node.js client (`@jupiterone/jupiterone-client-
  nodejs`, `src/index.ts`): id, source, scope, accountId, status, done, startTimestamp, syncMode and
  the `num*` counters (uploaded, created, updated, deleted, and create/update/delete errors, for
  entities, relationships, raw-data entries and mapped relationships). There is **no per-object
  error list**: a relationship JupiterOne could not create shows only as
  `numRelationshipCreateErrors`.
- Errors are `{"error": {"code", "message"}}` (the SDK's `SynchronizationApiErrorResponse`).

Where the documentation is silent the simulator is strict rather than kind, and `monitor` is written
to be right under every reading:

- A relationship is created only if both its ends exist at finalize; otherwise it counts in
  `numRelationshipCreateErrors` and the job still reaches FINISHED (the counter exists; which
  failures it counts is not documented).
- A DIFF relationship none of whose ends is in the job's own scope is refused (400): the pages
  describe a relationship between an entity you upload and one you do not own, and send
  relationships between entities of other scopes to CROSS_SCOPE.
- `reject_at_finalize(key)` makes the object with that key fail at finalize (counted in the create
  or update error counter, not applied), for tests of job results with error counters.
- Finalized jobs are applied in the order they were finalized: a job becomes FINISHED on its
  `finalize_polls`-th status poll, and applying it first applies every job finalized before it.
  `settle()` applies every finalized job at once. A job that is never finalized is never applied.
- Bodies over the limit (default 6 MB; JupiterOne's SDK batches at 5 MB) are refused with 413, on
  the wire and after decompression.
- PATCH and CROSS_SCOPE jobs with `source: api` need a `scope` too. OVERRIDE jobs and `uploadUrl`
  are not simulated (400).
- Abort works on a job that is `AWAITING_UPLOADS`; anything else answers `JOB_NOT_AWAITING_UPLOADS`.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from monitor.simulator import j1ql
from monitor.simulator.ca import CertificateAuthority

JsonObject = dict[str, Any]
ObjectId = tuple[str, str]  # (scope, _key)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Per-request notes of the simulator (typed keys: plain strings warn in aiohttp).
_SEQ = web.RequestKey("j1_seq", int)
_WIRE_BYTES = web.RequestKey("j1_wire_bytes", int)
_BODY_BYTES = web.RequestKey("j1_body_bytes", int)

JOBS = "/persister/synchronization/jobs"
GRAPHQL = "/graphql"
RESULTS = "/query-results"  # where deferred query answers are fetched (a pre-signed URL at JupiterOne)
DEFAULT_ACCOUNT = "j1-simulated-account"
DEFAULT_API_KEY = "j1-simulated-api-key"
DEFAULT_MAX_BODY = 6_000_000
SOURCES = frozenset({"api", "integration-external", "integration-managed", "system-internal"})
SYSTEM_FIELDS = frozenset({"_id", "_scope", "_source"})
# The ends a stored relationship resolved to, shown by `relationships()` (not part of what was uploaded).
END_FIELDS = ("_fromEntityScope", "_toEntityScope")
_NAMESPACE = uuid.UUID("5b0f3c8e-8d1a-4d8e-9a47-1b7f6a2c3d4e")


def _counter_names() -> tuple[str, ...]:
    """The `num*` counters of the Node.js client's `SyncJob`, in its order."""
    names: list[str] = []
    for plural, singular in (("Entities", "Entity"), ("Relationships", "Relationship")):
        names += [f"num{plural}{what}" for what in ("Uploaded", "Created", "Updated", "Deleted")]
        names += [f"num{singular}{what}Errors" for what in ("Create", "Update", "Delete")]
        names += [f"num{singular}RawDataEntries{what}" for what in ("Uploaded", "Created", "Updated", "Deleted")]
        names += [f"num{singular}RawDataEntry{what}Errors" for what in ("Create", "Update", "Delete")]
    names += [f"numMappedRelationships{what}" for what in ("Created", "Updated", "Deleted")]
    names += [f"numMappedRelationship{what}Errors" for what in ("Create", "Update", "Delete")]
    return tuple(names)


SYNC_JOB_COUNTERS = _counter_names()
TERMINAL = frozenset({"ABORTED", "FINISHED", "ERROR_BAD_DATA", "ERROR_UNEXPECTED_FAILURE"})


class ApiError(Exception):
    """An error answer `{"error": {"code", "message"}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        return _json({"error": {"code": self.code, "message": str(self)}}, self.status, headers)


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


@dataclass
class SimJob:
    """One sync job and what was uploaded to it."""

    id: str
    source: str
    scope: str
    sync_mode: str
    ignore_duplicates: bool
    created_seq: int
    account: str
    started_at: int = field(default_factory=lambda: int(time.time() * 1000))
    status: str = "AWAITING_UPLOADS"
    entities: dict[str, JsonObject] = field(default_factory=dict)
    relationships: dict[str, JsonObject] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    polls_left: int = 0
    last_seq: int = 0  # the last request that concerned this job (for overlap checks in tests)

    def view(self) -> JsonObject:
        """The job as JupiterOne answers it: the Node.js client's `SyncJob`, nothing more."""
        return {
            "id": self.id,
            "source": self.source,
            "scope": self.scope,
            "accountId": self.account,
            "status": self.status,
            "done": self.status in TERMINAL,
            "startTimestamp": self.started_at,
            "syncMode": self.sync_mode,
            **{name: self.counters[name] for name in SYNC_JOB_COUNTERS},
        }


@dataclass(frozen=True, slots=True)
class RequestRecord:
    seq: int
    method: str
    path: str
    status: int
    wire_bytes: int
    body_bytes: int
    job_id: str | None
    content_encoding: str = ""
    correlation_id: str = ""
    answer_bytes: int = 0
    credentials: bool = False  # whether it carried an Authorization header


@dataclass
class _Fault:
    status: int
    remaining: int
    headers: dict[str, str]
    code: str


@dataclass
class Blocker:
    """Holds the next request of one kind until released. `arrived` is set once it has been received
    in full, `handled` once the simulator has dealt with it (also when the client gave up meanwhile)."""

    action: str
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    handled: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass(frozen=True)
class Graph:
    """The objects under one scope prefix, by `_key` (a key found in two scopes raises ValueError)."""

    entities: dict[str, JsonObject]
    relationships: dict[str, JsonObject]


def strip_system(obj: Mapping[str, Any]) -> JsonObject:
    """The object as uploaded: without the metadata JupiterOne adds (`_id`, `_scope`, `_source`)."""
    return {k: v for k, v in obj.items() if k not in SYSTEM_FIELDS}


def object_id(scope: str, key: str) -> str:
    """`_id` of a stored object: a UUIDv5 of its `_scope` and `_key` (JupiterOne's pipeline upgrade)."""
    return str(uuid.uuid5(_NAMESPACE, f"{scope}\n{key}"))


# -- upload validation (api-reference, "Property constraints") --------------------------------------


def _primitive(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


_PRIMITIVE_TYPES = frozenset({str, int, float, bool, type(None)})


def _value_ok(name: str, value: Any) -> bool:
    if type(value) in _PRIMITIVE_TYPES or name == "_rawData" or _primitive(value) is not None:
        return True
    if isinstance(value, list):
        kinds = {_primitive(item) for item in value}
        return None not in kinds and len(kinds) <= 1
    return False


def _check_object(obj: Any, *, relationship: bool) -> None:
    if not isinstance(obj, dict):
        raise ApiError(400, "INVALID_GRAPH_OBJECT", "every uploaded object must be a JSON object")
    key = obj.get("_key")
    if not isinstance(key, str) or len(key) < 10:
        raise ApiError(400, "INVALID_GRAPH_OBJECT", f"_key must be a string of at least 10 characters: {key!r}")
    if not isinstance(obj.get("_type"), str) or len(obj["_type"]) < 3:
        raise ApiError(400, "INVALID_GRAPH_OBJECT", f"{key}: _type must be a string of at least 3 characters")
    if not obj.get("_class"):
        raise ApiError(400, "INVALID_GRAPH_OBJECT", f"{key}: _class is required")
    if relationship and not (obj.get("_fromEntityKey") and obj.get("_toEntityKey")):
        raise ApiError(400, "INVALID_GRAPH_OBJECT", f"{key}: a relationship needs _fromEntityKey and _toEntityKey")
    for name, value in obj.items():
        if not _value_ok(name, value):
            message = f"{key}: property {name!r}: values must be primitives or homogeneous arrays of primitives"
            raise ApiError(400, "INVALID_PROPERTY_VALUE", message)


@dataclass(frozen=True, slots=True)
class EndRef:
    """What a relationship names as one end: a key, and the scope and source it was labelled with."""

    key: str
    scope: str | None
    source: str | None


def end_refs(job_scope: str, job_source: str, rel: Mapping[str, Any]) -> tuple[EndRef, EndRef]:
    """The two ends of an uploaded relationship: an unlabelled end is in the job's own scope and source."""
    refs = []
    for side in ("from", "to"):
        scope, source = rel.get(f"_{side}EntityScope"), rel.get(f"_{side}EntitySource")
        if scope is None and source is None:
            scope, source = job_scope, job_source
        refs.append(EndRef(str(rel[f"_{side}EntityKey"]), None if scope is None else str(scope), source))
    return refs[0], refs[1]


# -- the simulator ---------------------------------------------------------------------------------


class SimJupiterOne:
    """The simulated account: its graph, its jobs, a request log, and switchable faults."""

    def __init__(
        self,
        *,
        account: str = DEFAULT_ACCOUNT,
        api_key: str = DEFAULT_API_KEY,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        finalize_polls: int = 1,
        query_page_size: int = 250,
    ) -> None:
        self.account = account
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.finalize_polls = finalize_polls
        self.query_page_size = query_page_size
        self.jobs: dict[str, SimJob] = {}
        self.requests: list[RequestRecord] = []
        self.queries: list[str] = []  # every J1QL query answered, in order
        self._entities: dict[str, dict[str, JsonObject]] = {}
        self._relationships: dict[str, dict[str, JsonObject]] = {}
        # relationship (scope, key) -> the entities it joins; entity (scope, key) -> relationships
        self._ends: dict[ObjectId, tuple[ObjectId, ObjectId]] = {}
        self._links: dict[ObjectId, set[ObjectId]] = {}
        self._finalized: list[str] = []
        self._faults: list[_Fault] = []
        self._blockers: dict[str, Blocker] = {}
        self._rejected: set[str] = set()
        self._deferred: dict[str, JsonObject] = {}
        self._seq = itertools.count(1)

    # -- faults --------------------------------------------------------------------------------
    def throttle(self, requests: int = 1, *, reset: float = 1.0, retry_after: float | None = None) -> None:
        """The next `requests` requests answer 429 with `RateLimit-*` headers (docs: /api/rate-limiting)."""
        headers = {"RateLimit-Limit": "30", "RateLimit-Remaining": "0", "RateLimit-Reset": f"{reset:g}"}
        headers["RateLimit-Requested"] = "1"
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._faults.append(_Fault(429, requests, headers, "RATE_LIMIT_EXCEEDED"))

    def fail(self, status: int = 503, requests: int = 1) -> None:
        """The next `requests` requests answer `status` (a 5xx, typically)."""
        codes = {503: "SERVICE_UNAVAILABLE", 401: "UNAUTHORIZED", 403: "FORBIDDEN"}
        self._faults.append(_Fault(status, requests, {}, codes.get(status, "INTERNAL_ERROR")))

    def down(self, requests: int) -> None:
        """JupiterOne is down for the next `requests` requests (503)."""
        self.fail(503, requests)

    def clear_faults(self) -> None:
        self._faults.clear()

    def slow_finalize(self, polls: int) -> None:
        """Jobs finalized from now on need `polls` status polls before they are FINISHED."""
        self.finalize_polls = max(1, polls)

    def block(self, action: str) -> Blocker:
        """Hold the next `action` request (create, entities, relationships, upload, finalize, status,
        abort, graphql) until `release()`; then it is handled normally."""
        blocker = Blocker(action)
        self._blockers[action] = blocker
        return blocker

    def reject_at_finalize(self, *keys: str) -> None:
        """Objects with these keys fail when a job holding them is finalized (counted, not applied)."""
        self._rejected.update(keys)

    def accept_all(self) -> None:
        self._rejected.clear()

    # -- reading the graph -----------------------------------------------------------------------
    def entities(self, scope: str | None = None) -> dict[ObjectId, JsonObject]:
        return self._objects(self._entities, scope, relationships=False)

    def relationships(self, scope: str | None = None) -> dict[ObjectId, JsonObject]:
        """Stored relationships with `_id` and the scopes their ends resolved to (`END_FIELDS`)."""
        return self._objects(self._relationships, scope, relationships=True)

    def _objects(
        self, store: dict[str, dict[str, JsonObject]], scope: str | None, *, relationships: bool
    ) -> dict[ObjectId, JsonObject]:
        scopes = [scope] if scope is not None else sorted(store)
        return {(s, k): self._view(s, obj, relationships) for s in scopes for k, obj in store.get(s, {}).items()}

    def _view(self, scope: str, obj: JsonObject, relationship: bool) -> JsonObject:
        shown = {**obj, "_id": object_id(scope, obj["_key"])}
        if relationship:
            (from_scope, _), (to_scope, _) = self._ends[(scope, obj["_key"])]
            shown.update({"_fromEntityScope": from_scope, "_toEntityScope": to_scope})
        return shown

    def graph_for_prefix(self, prefix: str) -> Graph:
        """Every entity and relationship in scopes starting with `prefix`, by `_key`."""
        return Graph(self._by_key(self._entities, prefix, False), self._by_key(self._relationships, prefix, True))

    def _by_key(
        self, store: dict[str, dict[str, JsonObject]], prefix: str, relationship: bool
    ) -> dict[str, JsonObject]:
        found: dict[str, JsonObject] = {}
        for scope in sorted(s for s in store if s.startswith(prefix)):
            for key, obj in store[scope].items():
                if key in found:
                    raise ValueError(f"_key {key!r} is in two scopes: {found[key]['_scope']} and {scope}")
                found[key] = self._view(scope, obj, relationship)
        return found

    def scopes(self) -> list[str]:
        holding = [s for store in (self._entities, self._relationships) for s, objects in store.items() if objects]
        return sorted(set(holding))

    def jobs_for_scope(self, scope: str) -> list[SimJob]:
        return sorted((j for j in self.jobs.values() if j.scope == scope), key=lambda j: j.created_seq)

    def abort_job(self, job_id: str, status: str = "ABORTED") -> None:
        """End a job from JupiterOne's side (as the backend does with a job left waiting too long)."""
        self.jobs[job_id].status = status
        if job_id in self._finalized:
            self._finalized.remove(job_id)

    def settle(self) -> None:
        """Apply every finalized job now, in finalize order (what the backend does eventually)."""
        while self._finalized:
            self._finish(self.jobs[self._finalized.pop(0)])

    # -- changing the graph behind the publisher's back (drift, for tests) ----------------------
    def plant_entity(self, scope: str, obj: JsonObject, *, source: str = "api") -> None:
        """Store `obj` in `scope` as another writer would have."""
        self._entities.setdefault(scope, {})[obj["_key"]] = {**obj, "_scope": scope, "_source": source}

    def plant_relationship(self, scope: str, obj: JsonObject, *, source: str = "api") -> None:
        """Store relationship `obj` in `scope`; its ends resolve as in an upload to that scope and must exist."""
        ends = self._resolve(end_refs(scope, source, obj))
        if ends is None:
            raise ValueError(f"an end of {obj['_key']!r} does not exist")
        uploaded = {k: v for k, v in obj.items() if k not in END_FIELDS}
        self._store_relationship(scope, {**uploaded, "_scope": scope, "_source": source}, ends)

    def remove_entity(self, scope: str, key: str) -> None:
        """Delete an entity (and, as JupiterOne does, its relationships)."""
        self._delete_entity(scope, key)

    def remove_relationship(self, scope: str, key: str) -> None:
        self._delete_relationship(scope, key)

    def set_property(self, scope: str, key: str, name: str, value: Any, *, relationship: bool = False) -> None:
        store = self._relationships if relationship else self._entities
        store[scope][key][name] = value

    # -- what the J1QL module reads ----------------------------------------------------------
    def entity_view(self, scope: str, key: str) -> JsonObject:
        return self._view(scope, self._entities[scope][key], False)

    def scope_entities(self, scope: str) -> list[JsonObject]:
        return [self._view(scope, obj, False) for _, obj in sorted(self._entities.get(scope, {}).items())]

    def entity_scopes(self) -> list[str]:
        return sorted(s for s, objs in self._entities.items() if objs)

    def relationship_scopes(self, entity_prefix: str, prefix: str) -> list[str]:
        """Scopes starting with `prefix` holding a relationship with an end in a scope starting with `entity_prefix`."""
        found = set()
        for scope, held in self._relationships.items():
            if scope.startswith(prefix) and any(
                end[0].startswith(entity_prefix) for key in held for end in self._ends[(scope, key)]
            ):
                found.add(scope)
        return sorted(found)

    def relationships_of(
        self, entity: ObjectId, scope: str | None = None
    ) -> list[tuple[ObjectId, JsonObject, ObjectId, ObjectId]]:
        """(relationship id, relationship, from end, to end) of every relationship touching `entity`
        (only those stored in `scope`, when given)."""
        found = []
        for rel_id in sorted(self._links.get(entity, set())):
            if scope is not None and rel_id[0] != scope:
                continue
            from_end, to_end = self._ends[rel_id]
            stored = self._relationships[rel_id[0]][rel_id[1]]
            found.append((rel_id, {**stored, "_id": object_id(*rel_id)}, from_end, to_end))
        return found

    # -- the app ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        # aiohttp's own body limit sits above ours, so that oversize bodies get our 413 answer.
        app = web.Application(middlewares=[self._gate], client_max_size=self.max_body_bytes * 2 + 1024)
        app.router.add_post(JOBS, self._create)
        app.router.add_get(JOBS + "/{id}", self._status)
        app.router.add_post(JOBS + "/{id}/entities", self._upload)
        app.router.add_post(JOBS + "/{id}/relationships", self._upload)
        app.router.add_post(JOBS + "/{id}/upload", self._upload)
        app.router.add_post(JOBS + "/{id}/finalize", self._finalize)
        app.router.add_post(JOBS + "/{id}/abort", self._abort)
        app.router.add_post(JOBS + "/{id}/events", self._events)
        app.router.add_post(JOBS + "/{id}/uploadUrl", self._not_simulated)
        app.router.add_post(GRAPHQL, self._graphql)
        app.router.add_get(RESULTS + "/{id}/{part}", self._deferred_part)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        seq = next(self._seq)
        job_id = request.match_info.get("id") if request.path.startswith(JOBS) else None
        request[_SEQ] = seq
        response = await self._answer(request, handler)
        answer = response.body if isinstance(response, web.Response) and isinstance(response.body, bytes) else b""
        self.requests.append(
            RequestRecord(
                seq,
                request.method,
                request.path,
                response.status,
                request.get(_WIRE_BYTES, 0),
                request.get(_BODY_BYTES, 0),
                job_id,
                request.headers.get("Content-Encoding", ""),
                request.headers.get("JupiterOne-Correlation-Id", ""),
                len(answer),
                "Authorization" in request.headers,
            )
        )
        if job_id in self.jobs:
            self.jobs[job_id].last_seq = seq
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._faults:
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return ApiError(fault.status, fault.code, "simulated fault").response(fault.headers)
        blocker: Blocker | None = None
        try:
            if not request.path.startswith(RESULTS):  # pre-signed: no JupiterOne credentials
                self._authenticate(request)
            blocker = self._blockers.pop(_action(request), None)
            if blocker is not None:
                await request.read()  # received in full: a client that dies now leaves it to us
                blocker.arrived.set()
                await blocker.released.wait()
            return await handler(request)
        except ApiError as error:
            return error.response()
        finally:
            if blocker is not None:
                blocker.handled.set()

    def _authenticate(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "UNAUTHORIZED", "missing or invalid API key (Authorization: Bearer <key>)")
        if request.headers.get("JupiterOne-Account") != self.account:
            raise ApiError(401, "UNAUTHORIZED", "missing or wrong JupiterOne-Account header")

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        request[_WIRE_BYTES] = len(raw)
        if len(raw) > self.max_body_bytes:
            raise ApiError(413, "RequestEntityTooLargeException", f"request body of {len(raw):,} bytes is too large")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding == "gzip":
            raw = self._gunzip(raw)
        elif encoding != "identity":
            raise ApiError(415, "UNSUPPORTED_ENCODING", f"Content-Encoding {encoding!r} is not supported")
        request[_BODY_BYTES] = len(raw)
        if request.content_type != "application/json":
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "the simulator accepts application/json bodies only")
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise ApiError(400, "INVALID_JSON", "the body is not valid JSON") from None

    def _gunzip(self, raw: bytes) -> bytes:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = decompressor.decompress(raw, self.max_body_bytes + 1)
        except zlib.error:
            raise ApiError(400, "INVALID_BODY", "the body is not valid gzip") from None
        if len(data) > self.max_body_bytes or decompressor.unconsumed_tail:
            raise ApiError(413, "RequestEntityTooLargeException", "decompressed request body is too large")
        return data

    def _job(self, request: web.Request) -> SimJob:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise ApiError(404, "JOB_NOT_FOUND", f"no job {request.match_info['id']!r}")
        return job

    # -- sync job handlers -----------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_REQUEST", "the body must be a JSON object")
        source, scope, mode = _job_settings(body)
        job = SimJob(
            uuid.uuid4().hex, source, scope, mode, bool(body.get("ignoreDuplicates")), request[_SEQ], self.account
        )
        self.jobs[job.id] = job
        return _json({"job": job.view()})

    async def _status(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.status == "FINALIZE_PENDING":
            job.polls_left -= 1
            if job.polls_left <= 0:
                while self._finalized:
                    earlier = self.jobs[self._finalized.pop(0)]
                    self._finish(earlier)
                    if earlier is job:
                        break
        return _json({"job": job.view()})

    async def _upload(self, request: web.Request) -> web.Response:
        job = self._job(request)
        body = await self._body(request)
        if job.status != "AWAITING_UPLOADS":
            raise ApiError(400, "JOB_NOT_AWAITING_UPLOADS", f"job {job.id} is {job.status}")
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_REQUEST", "the body must be a JSON object")
        entities, relationships = _upload_lists(request.path.rsplit("/", 1)[-1], body)
        self._check_upload(job, entities, relationships)
        for obj in entities:
            job.entities[obj["_key"]] = obj
        for obj in relationships:
            job.relationships[obj["_key"]] = obj
        job.counters["numEntitiesUploaded"] += len(entities)
        job.counters["numRelationshipsUploaded"] += len(relationships)
        job.counters["numEntityRawDataEntriesUploaded"] += sum(len(o.get("_rawData") or []) for o in entities)
        return _json({"job": job.view()})

    def _check_upload(self, job: SimJob, entities: list[Any], relationships: list[Any]) -> None:
        if entities and job.sync_mode == "CROSS_SCOPE":
            raise ApiError(400, "ENTITIES_NOT_ALLOWED", "CROSS_SCOPE jobs take relationships only")
        if relationships and job.sync_mode == "PATCH":
            raise ApiError(400, "RELATIONSHIPS_NOT_ALLOWED", "PATCH sync jobs cannot target relationships")
        for obj in entities:
            _check_object(obj, relationship=False)
        for obj in relationships:
            _check_object(obj, relationship=True)
            _check_ends(job, obj)
        if job.ignore_duplicates:
            return
        seen = set(job.entities) | set(job.relationships)
        for obj in itertools.chain(entities, relationships):
            if obj["_key"] in seen:
                raise ApiError(400, "DUPLICATE_KEY_DETECTED", f"duplicate _key {obj['_key']!r} in job")
            seen.add(obj["_key"])

    async def _finalize(self, request: web.Request) -> web.Response:
        job = self._job(request)
        await self._body(request)
        if job.status != "AWAITING_UPLOADS":
            raise ApiError(400, "JOB_NOT_AWAITING_UPLOADS", f"job {job.id} is {job.status}")
        job.status = "FINALIZE_PENDING"
        job.polls_left = self.finalize_polls
        self._finalized.append(job.id)
        return _json({"job": job.view()})

    async def _abort(self, request: web.Request) -> web.Response:
        job = self._job(request)
        body = await self._body(request)
        if job.status != "AWAITING_UPLOADS":
            raise ApiError(400, "JOB_NOT_AWAITING_UPLOADS", f"job {job.id} is {job.status}")
        terminal = body.get("terminalStatus") if isinstance(body, dict) else None
        job.status = str(terminal) if terminal in ("ABORTED", "ERROR_BAD_DATA") else "ABORTED"
        return _json({"job": job.view()})

    async def _events(self, request: web.Request) -> web.Response:
        job = self._job(request)
        await self._body(request)
        return _json({"job": job.view()})

    async def _not_simulated(self, request: web.Request) -> web.Response:
        raise ApiError(400, "NOT_SIMULATED", f"{request.path.rsplit('/', 1)[-1]} is not simulated")

    # -- the query API (monitor.simulator.j1ql) ------------------------------------------------
    async def _graphql(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        answer, deferred = j1ql.answer_graphql(self, body)
        if deferred is not None:
            token = uuid.uuid4().hex
            self._deferred[token] = deferred
            answer = {"data": {"queryV1": {"type": "deferred", "url": f"{_origin(request)}{RESULTS}/{token}/state"}}}
        return _compressed(request, answer)

    async def _deferred_part(self, request: web.Request) -> web.Response:
        token, part = request.match_info["id"], request.match_info["part"]
        if token not in self._deferred or part not in ("state", "results"):
            raise ApiError(404, "NOT_FOUND", "no such query result")
        if part == "state":
            url = f"{_origin(request)}{RESULTS}/{token}/results"
            return _json({"status": "COMPLETED", "url": url, "correlationId": token})
        return _compressed(request, self._deferred[token])

    # -- finalize ----------------------------------------------------------------------------
    def _finish(self, job: SimJob) -> None:
        if job.sync_mode == "DIFF":
            self._replace_entities(job)
            self._replace_relationships(job)
        elif job.sync_mode == "PATCH":
            self._patch_entities(job)
        else:
            self._add_relationships(job)
        job.status = "FINISHED"
        job.polls_left = 0

    def _stored(self, job: SimJob, obj: JsonObject) -> JsonObject:
        return {**obj, "_scope": job.scope, "_source": job.source}

    def _refused(self, job: SimJob, key: str, existing: bool, kind: str) -> bool:
        """Whether the object `key` fails at finalize (`reject_at_finalize`); counts it if so."""
        if key not in self._rejected:
            return False
        job.counters[f"num{kind}{'Update' if existing else 'Create'}Errors"] += 1
        return True

    def _replace_entities(self, job: SimJob) -> None:
        current = self._entities.setdefault(job.scope, {})
        for key in [k for k in current if k not in job.entities]:
            self._delete_entity(job.scope, key, job)
        for key, obj in job.entities.items():
            if not self._refused(job, key, key in current, "Entity"):
                self._put(current, key, self._stored(job, obj), job, "Entities")

    def _patch_entities(self, job: SimJob) -> None:
        current = self._entities.setdefault(job.scope, {})
        for key, obj in job.entities.items():
            if not self._refused(job, key, key in current, "Entity"):
                merged = {**current.get(key, {}), **self._stored(job, obj)}
                self._put(current, key, merged, job, "Entities")

    def _put(self, store: dict[str, JsonObject], key: str, obj: JsonObject, job: SimJob, kind: str) -> None:
        before = store.get(key)
        if before is None:
            job.counters[f"num{kind}Created"] += 1
        elif before != obj:
            job.counters[f"num{kind}Updated"] += 1
        store[key] = obj

    def _delete_entity(self, scope: str, key: str, job: SimJob | None = None) -> None:
        del self._entities[scope][key]
        if job is not None:
            job.counters["numEntitiesDeleted"] += 1
        for rel_scope, rel_key in sorted(self._links.pop((scope, key), set())):
            if self._delete_relationship(rel_scope, rel_key) and job is not None:
                job.counters["numRelationshipsDeleted"] += 1

    def _delete_relationship(self, scope: str, key: str) -> bool:
        rel = self._relationships.get(scope, {}).pop(key, None)
        if rel is None:
            return False
        for end in self._ends.pop((scope, key)):
            links = self._links.get(end)
            if links is not None:
                links.discard((scope, key))
        return True

    def _replace_relationships(self, job: SimJob) -> None:
        current = self._relationships.setdefault(job.scope, {})
        for key in [k for k in current if k not in job.relationships]:
            if self._delete_relationship(job.scope, key):
                job.counters["numRelationshipsDeleted"] += 1
        self._add_relationships(job)

    def _add_relationships(self, job: SimJob) -> None:
        current = self._relationships.setdefault(job.scope, {})
        for key, obj in job.relationships.items():
            if self._refused(job, key, key in current, "Relationship"):
                continue
            ends = self._resolve(end_refs(job.scope, job.source, obj))
            if ends is None:  # an end does not exist: not created (and an older version goes)
                if self._delete_relationship(job.scope, key):
                    job.counters["numRelationshipsDeleted"] += 1
                job.counters["numRelationshipCreateErrors"] += 1
                continue
            existed = key in current
            before = current.get(key)
            stored = self._stored(job, obj)
            changed = before != stored or self._ends.get((job.scope, key)) != ends
            self._store_relationship(job.scope, stored, ends)
            if not existed:
                job.counters["numRelationshipsCreated"] += 1
            elif changed:
                job.counters["numRelationshipsUpdated"] += 1

    def _store_relationship(self, scope: str, stored: JsonObject, ends: tuple[ObjectId, ObjectId]) -> None:
        key = stored["_key"]
        if (scope, key) in self._ends:
            for end in self._ends[(scope, key)]:
                self._links.get(end, set()).discard((scope, key))
        self._relationships.setdefault(scope, {})[key] = stored
        self._ends[(scope, key)] = ends
        for end in ends:
            self._links.setdefault(end, set()).add((scope, key))

    def _resolve(self, refs: Iterable[EndRef]) -> tuple[ObjectId, ObjectId] | None:
        """The stored entities two end references name, or None if one names none."""
        found: list[ObjectId] = []
        for ref in refs:
            entity = None if ref.scope is None else self._entities.get(ref.scope, {}).get(ref.key)
            if entity is None or (ref.source is not None and entity["_source"] != ref.source):
                return None
            found.append((str(ref.scope), ref.key))
        return found[0], found[1]


def _check_ends(job: SimJob, rel: Mapping[str, Any]) -> None:
    """The end rules of DIFF and CROSS_SCOPE uploads (see the module docstring)."""
    from_ref, to_ref = end_refs(job.scope, job.source, rel)
    own = [ref.scope == job.scope and ref.source in (None, job.source) for ref in (from_ref, to_ref)]
    if job.sync_mode == "CROSS_SCOPE":
        if not (rel.get("_fromEntityScope") and rel.get("_toEntityScope")):
            message = f"{rel['_key']}: CROSS_SCOPE relationships must label both ends with their scopes"
            raise ApiError(400, "MISSING_ENTITY_SCOPE", message)
        if (from_ref.scope, from_ref.source) == (to_ref.scope, to_ref.source):
            message = f"{rel['_key']}: both ends are in scope {from_ref.scope!r}: use DIFF or PATCH"
            raise ApiError(400, "SAME_SCOPE_RELATIONSHIP", message)
    elif not any(own):
        message = f"{rel['_key']}: neither end is in the job's scope {job.scope!r}: use CROSS_SCOPE"
        raise ApiError(400, "RELATIONSHIP_OUTSIDE_SCOPE", message)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _compressed(request: web.Request, body: Any) -> web.Response:
    response = _json(body)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.body = gzip.compress(orjson.dumps(body), compresslevel=5)
        response.headers["Content-Encoding"] = "gzip"
    return response


def _action(request: web.Request) -> str:
    if request.path.startswith((GRAPHQL, RESULTS)):
        return "graphql"
    if request.method == "GET":
        return "status"
    last = request.path.rsplit("/", 1)[-1]
    return "create" if request.path.rstrip("/") == JOBS else last


def _job_settings(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """(source, scope, syncMode) of a create-job body, or ApiError (api-reference)."""
    source = body.get("source")
    mode = body.get("syncMode", "DIFF")
    scope = body.get("scope")
    if source not in SOURCES:
        raise ApiError(400, "INVALID_SOURCE", f"source must be one of {sorted(SOURCES)}, got {source!r}")
    if mode == "CREATE_OR_UPDATE":
        message = (
            "syncMode CREATE_OR_UPDATE is deprecated and no longer functions: use PATCH to add or update "
            "entities and DIFF to delete"
        )
        raise ApiError(400, "SYNC_MODE_NOT_SUPPORTED", message)
    if mode == "OVERRIDE":
        raise ApiError(400, "NOT_SIMULATED", "OVERRIDE jobs are not simulated")
    if mode not in ("DIFF", "PATCH", "CROSS_SCOPE"):
        raise ApiError(400, "INVALID_SYNC_MODE", f"unknown syncMode {mode!r}")
    if scope is not None and source != "api":
        raise ApiError(400, "INVALID_SCOPE", "scope is usable only with source api")
    if source == "api":
        if not isinstance(scope, str) or not scope:
            raise ApiError(400, "SCOPE_REQUIRED", f"scope is required for syncMode {mode} with source api")
        return source, scope, mode
    if source == "integration-external":
        instance = body.get("integrationInstanceId")
        if not instance:
            raise ApiError(400, "INTEGRATION_INSTANCE_REQUIRED", "integration-external needs integrationInstanceId")
        return source, f"integration:{instance}", mode
    return source, f"{source}:default", mode


def _upload_lists(endpoint: str, body: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    wanted = {"entities": ("entities",), "relationships": ("relationships",)}.get(
        endpoint, ("entities", "relationships")
    )
    lists: dict[str, list[Any]] = {"entities": [], "relationships": []}
    for name in wanted:
        value = body.get(name, [] if endpoint == "upload" else None)
        if not isinstance(value, list):
            code = "ENTITY_IS_NOT_ARRAY" if name == "entities" else "RELATIONSHIP_IS_NOT_ARRAY"
            raise ApiError(400, code, f"{name} must be an array")
        lists[name] = value
    return lists["entities"], lists["relationships"]


# -- serving -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningJupiterOne:
    url: str  # the MONITOR_J1_API_URL of this simulator
    ca_bundle_path: Path | None  # the CA file to trust (MONITOR_CA_BUNDLE) when served over HTTPS
    simulator: SimJupiterOne


@asynccontextmanager
async def serve_jupiterone(
    sim: SimJupiterOne,
    *,
    tls: bool = False,
    ca: CertificateAuthority | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[RunningJupiterOne]:
    """Serve `sim` in the current event loop on `host:port` (0: a free port), over HTTPS with `tls`.

    `ca` signs the server certificate (for example the Graph simulator's, so that one
    MONITOR_CA_BUNDLE trusts both); a fresh one is made when it is None.
    """
    # auto_decompress off: the simulator reads gzip bodies itself, to measure and limit them.
    runner = web.AppRunner(sim.app(), access_log=None, handle_signals=False, auto_decompress=False)
    await runner.setup()
    with tempfile.TemporaryDirectory(prefix="monitor-j1-sim-") as folder:
        context, bundle = None, None
        if tls:
            authority = ca or CertificateAuthority.create("monitor simulated JupiterOne CA")
            context = authority.issue_server_context(_hosts(host))
            bundle = authority.write_bundle(Path(folder, "ca.pem"))
        try:
            site = web.TCPSite(runner, host, port, ssl_context=context)
            await site.start()
            url_host = f"[{host}]" if ":" in host else host
            yield RunningJupiterOne(f"{'https' if tls else 'http'}://{url_host}:{_bound_port(runner)}", bundle, sim)
        finally:
            await runner.cleanup()


def _hosts(host: str) -> list[str]:
    defaults = ["localhost", "127.0.0.1", "::1"]
    return defaults if host in defaults else [*defaults, host]


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the simulated JupiterOne is not listening on a TCP port")


def gzip_json(value: Any) -> bytes:
    """A gzip-compressed JSON body (for tests that talk to the simulator directly)."""
    return gzip.compress(orjson.dumps(value))
