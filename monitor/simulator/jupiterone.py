"""A simulated JupiterOne synchronization API, for the tests, the demo and the benchmarks.

It implements the endpoints of reference/JUPITERONE.md 9.1 under `/persister/synchronization/jobs`
with the documented semantics, and keeps the resulting graph where tests can read it
(`entities()`, `relationships()`, `graph_for_prefix()`), with a request log and switchable faults.

Documented behaviour it reproduces:

- Auth (9.3): `Authorization: Bearer <key>` and `JupiterOne-Account: <account>` on every request,
  401 otherwise. Bodies are JSON, optionally `Content-Encoding: gzip`.
- Create job (9.3): `source` one of `api`, `integration-external` (needs `integrationInstanceId`),
  `integration-managed`, `system-internal`; `scope` required for DIFF with `source: api` and usable
  only with `source: api`; `syncMode` DIFF (default), PATCH, CROSS_SCOPE; CREATE_OR_UPDATE is
  refused with a 400 saying it no longer functions (9.4).
- DIFF (9.4): at finalize the job's entities and relationships *are* the scope: missing ones are
  deleted. PATCH: entities only (relationships are refused at upload), merged into what exists,
  never deletes. CROSS_SCOPE: relationships only, each naming `_fromEntityScope` and
  `_toEntityScope`.
- Deleting an entity also deletes its relationships, in whatever scope they live (9.5).
- One `_key` space per job for entities and relationships together (section 2): a repeated key is
  refused (`DUPLICATE_KEY_DETECTED`) unless the job was created with `ignoreDuplicates` (last wins).
- Bodies over the limit (default 6 MB, 10.1) are refused with 413.
- Finalize is asynchronous (9.2): it answers `FINALIZE_PENDING`; a later status poll answers
  `FINISHED` with the counters. Uploading to or finalizing a job that is not `AWAITING_UPLOADS`
  answers 400 `JOB_NOT_AWAITING_UPLOADS` (10.3).
- Errors are `{"error": {"code", "message"}}` (10.3); the simulator adds the offending `key`.

Where the documentation is silent, the simulator decides (and `monitor`'s publisher is written
against these decisions):

- **A CROSS_SCOPE finalize replaces the relationships earlier jobs with the same `scope` value
  uploaded** (DESIGN.md; unverified at JupiterOne). DIFF and CROSS_SCOPE jobs share one set of
  relationships per scope value.
- **A relationship is created only if both ends exist at finalize** (an end is `(scope, _key)`: the
  `_from/_toEntityScope` it names, or the job's own scope for a DIFF relationship without one).
  Otherwise it is skipped, the job still reaches FINISHED, and the job answer counts it in
  `numRelationshipCreateErrors` and lists it under `errors` as `RELATIONSHIP_ENDPOINT_NOT_FOUND`.
- Finalized jobs are applied in the order they were finalized: a job becomes FINISHED on its
  `finalize_polls`-th status poll, and applying it first applies every job finalized before it.
  `settle()` applies every finalized job at once (the backend "eventually"). A job that is never
  finalized is never applied.
- The size limit applies to the body after decompression as well as on the wire (conservative:
  the SDK sizes its batches by the uncompressed JSON, 10.2).
- Upload validation (11.1-11.2) refuses the whole request on the first offending object, naming
  it: `_key` of 10+ characters, `_type` of 3+, `_class` present, no nested values except
  `_rawData`, no mixed-type arrays. Required class properties are not checked.
- PATCH and CROSS_SCOPE jobs with `source: api` need a `scope` too (it says where the entities
  live, or which relationships the job owns). OVERRIDE jobs and `uploadUrl` are not simulated (400).
- Abort works on a job that is `AWAITING_UPLOADS`; anything else answers `JOB_NOT_AWAITING_UPLOADS`.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from monitor.simulator.ca import CertificateAuthority

JsonObject = dict[str, Any]
ObjectId = tuple[str, str]  # (scope, _key)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Per-request notes of the simulator (typed keys: plain strings warn in aiohttp).
_SEQ = web.RequestKey("j1_seq", int)
_WIRE_BYTES = web.RequestKey("j1_wire_bytes", int)
_BODY_BYTES = web.RequestKey("j1_body_bytes", int)

JOBS = "/persister/synchronization/jobs"
DEFAULT_ACCOUNT = "j1-simulated-account"
DEFAULT_API_KEY = "j1-simulated-api-key"
DEFAULT_MAX_BODY = 6_000_000
SOURCES = frozenset({"api", "integration-external", "integration-managed", "system-internal"})
SYSTEM_FIELDS = frozenset({"_id", "_scope", "_source"})
_NAMESPACE = uuid.UUID("5b0f3c8e-8d1a-4d8e-9a47-1b7f6a2c3d4e")
_COUNTERS = tuple(
    f"num{kind}{what}"
    for kind in ("Entities", "Relationships")
    for what in ("Uploaded", "Created", "Updated", "Deleted")
) + ("numRelationshipCreateErrors",)


class ApiError(Exception):
    """An error answer `{"error": {"code", "message", "key"?}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.key = key

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        error: JsonObject = {"code": self.code, "message": str(self)}
        if self.key is not None:
            error["key"] = self.key
        return _json({"error": error}, self.status, headers)


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
    status: str = "AWAITING_UPLOADS"
    entities: dict[str, JsonObject] = field(default_factory=dict)
    relationships: dict[str, JsonObject] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    errors: list[JsonObject] = field(default_factory=list)
    polls_left: int = 0
    last_seq: int = 0  # the last request that concerned this job (for overlap checks in tests)

    def view(self) -> JsonObject:
        return {
            "id": self.id,
            "source": self.source,
            "scope": self.scope,
            "syncMode": self.sync_mode,
            "status": self.status,
            **{name: self.counters[name] for name in _COUNTERS},
            "errors": list(self.errors),
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


# -- upload validation (JUPITERONE.md 11.1-11.2) ----------------------------------------------------


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
        raise ApiError(400, "INVALID_GRAPH_OBJECT", "_type must be a string of at least 3 characters", key=key)
    if not obj.get("_class"):
        raise ApiError(400, "INVALID_GRAPH_OBJECT", "_class is required", key=key)
    if relationship and not (obj.get("_fromEntityKey") and obj.get("_toEntityKey")):
        raise ApiError(400, "INVALID_GRAPH_OBJECT", "a relationship needs _fromEntityKey and _toEntityKey", key=key)
    for name, value in obj.items():
        if not _value_ok(name, value):
            message = f"property {name!r}: values must be primitives or homogeneous arrays of primitives"
            raise ApiError(400, "INVALID_PROPERTY_VALUE", message, key=key)


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
    ) -> None:
        self.account = account
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.finalize_polls = finalize_polls
        self.jobs: dict[str, SimJob] = {}
        self.requests: list[RequestRecord] = []
        self._entities: dict[str, dict[str, JsonObject]] = {}
        self._relationships: dict[str, dict[str, JsonObject]] = {}
        # entity (scope, key) -> the relationships that touch it, for cascading deletions (9.5)
        self._links: dict[ObjectId, set[ObjectId]] = {}
        self._finalized: list[str] = []
        self._faults: list[_Fault] = []
        self._blockers: dict[str, Blocker] = {}
        self._seq = itertools.count(1)

    # -- faults --------------------------------------------------------------------------------
    def throttle(self, requests: int = 1, *, reset: float = 1.0, retry_after: float | None = None) -> None:
        """The next `requests` requests answer 429 with `RateLimit-*` headers (10.4)."""
        headers = {"RateLimit-Limit": "30", "RateLimit-Remaining": "0", "RateLimit-Reset": f"{reset:g}"}
        headers["RateLimit-Requested"] = "1"
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._faults.append(_Fault(429, requests, headers, "RATE_LIMIT_EXCEEDED"))

    def fail(self, status: int = 503, requests: int = 1) -> None:
        """The next `requests` requests answer `status` (a 5xx, typically)."""
        self._faults.append(_Fault(status, requests, {}, "SERVICE_UNAVAILABLE" if status == 503 else "INTERNAL_ERROR"))

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
        abort) until `release()`; then it is handled normally."""
        blocker = Blocker(action)
        self._blockers[action] = blocker
        return blocker

    # -- reading the graph -----------------------------------------------------------------------
    def entities(self, scope: str | None = None) -> dict[ObjectId, JsonObject]:
        return self._objects(self._entities, scope)

    def relationships(self, scope: str | None = None) -> dict[ObjectId, JsonObject]:
        return self._objects(self._relationships, scope)

    @staticmethod
    def _objects(store: dict[str, dict[str, JsonObject]], scope: str | None) -> dict[ObjectId, JsonObject]:
        scopes = [scope] if scope is not None else sorted(store)
        return {(s, k): _with_id(obj) for s in scopes for k, obj in store.get(s, {}).items()}

    def graph_for_prefix(self, prefix: str) -> Graph:
        """Every entity and relationship in scopes starting with `prefix`, by `_key`."""
        return Graph(self._by_key(self._entities, prefix), self._by_key(self._relationships, prefix))

    @staticmethod
    def _by_key(store: dict[str, dict[str, JsonObject]], prefix: str) -> dict[str, JsonObject]:
        found: dict[str, JsonObject] = {}
        for scope in sorted(s for s in store if s.startswith(prefix)):
            for key, obj in store[scope].items():
                if key in found:
                    raise ValueError(f"_key {key!r} is in two scopes: {found[key]['_scope']} and {scope}")
                found[key] = _with_id(obj)
        return found

    def scopes(self) -> list[str]:
        return sorted(set(self._entities) | set(self._relationships))

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
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        seq = next(self._seq)
        job_id = request.match_info.get("id")
        request[_SEQ] = seq
        response = await self._answer(request, handler)
        wire = request.get(_WIRE_BYTES, 0)
        self.requests.append(
            RequestRecord(
                seq,
                request.method,
                request.path,
                response.status,
                wire,
                request.get(_BODY_BYTES, 0),
                job_id,
                request.headers.get("Content-Encoding", ""),
                request.headers.get("JupiterOne-Correlation-Id", ""),
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

    # -- handlers --------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_REQUEST", "the body must be a JSON object")
        source, scope, mode = _job_settings(body)
        job = SimJob(uuid.uuid4().hex, source, scope, mode, bool(body.get("ignoreDuplicates")), request[_SEQ])
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
            if job.sync_mode == "CROSS_SCOPE" and not (obj.get("_fromEntityScope") and obj.get("_toEntityScope")):
                message = "CROSS_SCOPE relationships must name _fromEntityScope and _toEntityScope"
                raise ApiError(400, "MISSING_ENTITY_SCOPE", message, key=obj["_key"])
        if job.ignore_duplicates:
            return
        seen = set(job.entities) | set(job.relationships)
        for obj in itertools.chain(entities, relationships):
            if obj["_key"] in seen:
                raise ApiError(400, "DUPLICATE_KEY_DETECTED", f"duplicate _key {obj['_key']!r} in job", key=obj["_key"])
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

    # -- finalize ----------------------------------------------------------------------------
    def _finish(self, job: SimJob) -> None:
        if job.sync_mode == "DIFF":
            self._replace_entities(job)
            self._replace_relationships(job)
        elif job.sync_mode == "PATCH":
            self._patch_entities(job)
        else:
            self._replace_relationships(job)
        job.status = "FINISHED"
        job.polls_left = 0

    def _stored(self, job: SimJob, obj: JsonObject) -> JsonObject:
        return {**obj, "_scope": job.scope, "_source": job.source}

    def _replace_entities(self, job: SimJob) -> None:
        current = self._entities.setdefault(job.scope, {})
        for key in [k for k in current if k not in job.entities]:
            self._delete_entity(job, key)
        for key, obj in job.entities.items():
            self._put(current, key, self._stored(job, obj), job, "Entities")

    def _patch_entities(self, job: SimJob) -> None:
        current = self._entities.setdefault(job.scope, {})
        for key, obj in job.entities.items():
            merged = {**current.get(key, {}), **self._stored(job, obj)}
            self._put(current, key, merged, job, "Entities")

    def _put(self, store: dict[str, JsonObject], key: str, obj: JsonObject, job: SimJob, kind: str) -> None:
        before = store.get(key)
        if before is None:
            job.counters[f"num{kind}Created"] += 1
        elif before != obj:
            job.counters[f"num{kind}Updated"] += 1
        store[key] = obj

    def _delete_entity(self, job: SimJob, key: str) -> None:
        del self._entities[job.scope][key]
        job.counters["numEntitiesDeleted"] += 1
        for rel_scope, rel_key in sorted(self._links.pop((job.scope, key), set())):
            if self._delete_relationship(rel_scope, rel_key):
                job.counters["numRelationshipsDeleted"] += 1

    def _delete_relationship(self, scope: str, key: str) -> bool:
        rel = self._relationships.get(scope, {}).pop(key, None)
        if rel is None:
            return False
        for end in _ends(rel):
            links = self._links.get(end)
            if links is not None:
                links.discard((scope, key))
        return True

    def _replace_relationships(self, job: SimJob) -> None:
        current = self._relationships.setdefault(job.scope, {})
        for key in [k for k in current if k not in job.relationships]:
            if self._delete_relationship(job.scope, key):
                job.counters["numRelationshipsDeleted"] += 1
        for key, obj in job.relationships.items():
            stored = self._stored(job, obj)
            stored.setdefault("_fromEntityScope", job.scope)
            stored.setdefault("_toEntityScope", job.scope)
            missing = [end for end in _ends(stored) if end[1] not in self._entities.get(end[0], {})]
            if missing:
                self._skip_relationship(job, key, stored, missing)
                continue
            previous = current.get(key)
            if previous is not None:  # its ends may have changed: forget the old ones
                for end in _ends(previous):
                    self._links.get(end, set()).discard((job.scope, key))
            self._put(current, key, stored, job, "Relationships")
            for end in _ends(stored):
                self._links.setdefault(end, set()).add((job.scope, key))

    def _skip_relationship(self, job: SimJob, key: str, rel: JsonObject, missing: list[ObjectId]) -> None:
        if self._delete_relationship(job.scope, key):
            job.counters["numRelationshipsDeleted"] += 1
        job.counters["numRelationshipCreateErrors"] += 1
        where = ", ".join(f"{k!r} in scope {s!r}" for s, k in missing)
        job.errors.append(
            {
                "key": key,
                "type": rel.get("_type", ""),
                "code": "RELATIONSHIP_ENDPOINT_NOT_FOUND",
                "message": f"no entity {where}",
            }
        )


def _with_id(obj: Mapping[str, Any]) -> JsonObject:
    """A stored object as JupiterOne shows it: with `_id`, a UUIDv5 of `_scope` and `_key` (10.5).
    Computed when read: the simulator's own bookkeeping goes by (scope, key)."""
    return {**obj, "_id": str(uuid.uuid5(_NAMESPACE, f"{obj['_scope']}\n{obj['_key']}"))}


def _ends(rel: Mapping[str, Any]) -> tuple[ObjectId, ObjectId]:
    return (
        (str(rel["_fromEntityScope"]), str(rel["_fromEntityKey"])),
        (str(rel["_toEntityScope"]), str(rel["_toEntityKey"])),
    )


def _action(request: web.Request) -> str:
    if request.method == "GET":
        return "status"
    last = request.path.rsplit("/", 1)[-1]
    return "create" if request.path.rstrip("/") == JOBS else last


def _job_settings(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """(source, scope, syncMode) of a create-job body, or ApiError (9.3-9.4)."""
    source = body.get("source")
    mode = body.get("syncMode", "DIFF")
    scope = body.get("scope")
    if source not in SOURCES:
        raise ApiError(400, "INVALID_SOURCE", f"source must be one of {sorted(SOURCES)}, got {source!r}")
    if mode == "CREATE_OR_UPDATE":
        message = (
            "syncMode CREATE_OR_UPDATE no longer functions since the synchronization pipeline upgrade "
            "(28 April 2025): use PATCH to add or update entities and DIFF to delete"
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
