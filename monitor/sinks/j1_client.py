"""The JupiterOne API client: sync jobs (uploads, finalize, job results) and J1QL queries, with retries.

Together with `monitor.sinks.jupiterone` (the publisher) and `monitor.sinks.j1_reconcile` (the
read-back) this is the one place that knows JupiterOne's API. Every call goes through
`JupiterOneClient._send` and the project's one HTTP client (`monitor.http`: sessions, TLS trust,
the retry loop); `_send` and `_classify` own JupiterOne's rules:

- Headers (9.3): `Authorization: Bearer <key>`, `JupiterOne-Account: <account>`,
  `Content-Type: application/json`; upload bodies are gzip-compressed with `Content-Encoding: gzip`
  and carry a `JupiterOne-Correlation-Id` that stays the same across retries of that body.
- 429 and 5xx, and transport failures, are retried under the project's `RetryPolicy`, honouring
  `Retry-After` and, when it is absent, the `RateLimit-Reset` header that JupiterOne's rate limiter
  sends (10.4).
- Any other 4xx is not retried: it is raised as `J1Refused` with JupiterOne's error code and
  message; `JOB_NOT_AWAITING_UPLOADS` (10.3: fatal for that job) as its subclass.
- Uploads are split so each request body stays under the configured limit (10.1: the backend
  refuses about 6 MB; the SDK batches at 5 MB, 10.2).
- Finalize is asynchronous (9.2): `wait_finished` polls the job until `FINISHED`; any other
  terminal status raises `J1JobFailed`. A FINISHED job is read as JupiterOne reports it: its status
  and its `num*Errors` counters (`job_errors`); the job object has no per-object error list
  (`SyncJob` in JupiterOne's Node.js client, `@jupiterone/jupiterone-client-nodejs`, `src/index.ts`).
- J1QL goes through the GraphQL `queryV1` resolver (`query`,
  https://docs.jupiterone.io/api/entity-relationship-queries), page by page until the cursor is null
  ("only a NULL cursor being returned indicates that the result pagination is complete",
  https://docs.jupiterone.io/reference/api-query-pagination-changes), with `variableResultSize`.
  Queries that may run long ask for a deferred answer (`deferredResponse: FORCE`, "recommended ...
  for queries that may take longer than 30 seconds"): its state and result URLs are fetched
  without our credentials (they point at pre-signed storage, not at the API).
- Answers are read undecompressed off the wire (gzip is decompressed here), so `bytes_received`
  counts what travelled.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from monitor import __version__
from monitor.errors import MonitorError
from monitor.http import Answer, HttpClient, Outcome, Request, first_line, retry_later
from monitor.model.types import JsonMapping, JsonObject
from monitor.retry import RetryPolicy, RetryStats, Sleep, Verdict, parse_retry_after
from monitor.settings import Settings

log = logging.getLogger(__name__)
UploadKind = Literal["entities", "relationships"]
SyncMode = Literal["DIFF", "PATCH", "CROSS_SCOPE"]

JOBS_PATH = "/persister/synchronization/jobs"  # 9.1
GRAPHQL_PATH = "/graphql"
FINISHED = "FINISHED"
# 9.2: statuses of a job that is still on its way to FINISHED.
IN_PROGRESS = frozenset({"AWAITING_UPLOADS", "FINALIZE_PENDING", "FINALIZING_ENTITIES", "FINALIZING_RELATIONSHIPS"})
JOB_NOT_AWAITING_UPLOADS = "JOB_NOT_AWAITING_UPLOADS"
# 4xx answers about the request's content (10.1, 10.3, 11): the same objects would be refused again.
DATA_ERRORS = frozenset({400, 413, 415, 422})
# The error counters of a job (`SyncJob` of the Node.js client): a FINISHED job with any of them
# above zero did not apply everything it was given.
JOB_ERROR_COUNTERS = tuple(
    f"num{kind}{op}Errors"
    for kind in ("Entity", "Relationship", "EntityRawDataEntry", "RelationshipRawDataEntry", "MappedRelationship")
    for op in ("Create", "Update", "Delete")
)
# The `queryV1` resolver (https://docs.jupiterone.io/api/entity-relationship-queries).
QUERY_V1 = (
    "query J1QL($query:String!,$cursor:String,$flags:QueryV1Flags,$deferredResponse:DeferredResponseOption)"
    "{queryV1(query:$query,cursor:$cursor,flags:$flags,deferredResponse:$deferredResponse){type data cursor url}}"
)
DEFERRED_DONE = "COMPLETED"
# A `RateLimit-Reset` above this is an epoch time in seconds rather than a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000
# gzip level: JSON of graph objects compresses ~10:1 already at a low level, at a fraction of the cost.
_GZIP_LEVEL = 5


class J1Error(MonitorError):
    """JupiterOne did not accept or confirm something; `transient` says whether trying later may help.

    `reason` names the kind of failure for status lines and metrics: `unauthorized` (401: the API key
    or account), `forbidden` (403: a permission the key lacks), `unavailable` (429/5xx or no answer
    until the retries ran out), `refused` (another 4xx: the request itself), `job_failed` (a job
    that ended otherwise than FINISHED), `query` (a J1QL query JupiterOne did not answer).
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "", key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.key = key
        self.transient = True

    @property
    def reason(self) -> str:
        if self.status == 401:
            return "unauthorized"
        if self.status == 403:
            return "forbidden"
        return "unavailable"


class J1Unavailable(J1Error):
    """JupiterOne kept answering 429/5xx, or could not be reached, until the retries ran out."""


class J1Refused(J1Error):
    """A 4xx other than 429: not retried. `transient` only when it is not about the data (a wrong
    key, a vanished job): sending the same objects again later may then succeed."""

    def __init__(self, message: str, *, status: int = 0, code: str = "", key: str | None = None) -> None:
        super().__init__(message, status=status, code=code, key=key)
        self.transient = status not in DATA_ERRORS

    @property
    def reason(self) -> str:
        return super().reason if self.status in (401, 403) else "refused"


class JobNotAwaitingUploads(J1Refused):
    """10.3: the job no longer takes uploads (finalized or aborted); fatal for that job, but a new
    job for the same scope may well succeed."""

    def __init__(self, message: str, *, status: int = 0, code: str = "", key: str | None = None) -> None:
        super().__init__(message, status=status, code=code, key=key)
        self.transient = True


class J1JobFailed(J1Error):
    """The job ended in a terminal status other than FINISHED (9.2: not transient, JupiterOne decided
    about this data), or did not finish in time (transient)."""

    def __init__(self, message: str, *, code: str = "", ended: bool = True) -> None:
        super().__init__(message, code=code)
        self.transient = not ended

    @property
    def reason(self) -> str:
        return "job_failed"


class J1QueryError(J1Error):
    """JupiterOne answered a J1QL query with GraphQL errors, or a deferred query failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="QUERY")
        self.transient = False

    @property
    def reason(self) -> str:
        return "query"


@dataclass(slots=True)
class J1Stats(RetryStats):
    """Requests, retries, and bytes: `bytes_sent` on the wire (compressed), `raw_bytes` of JSON."""

    bytes_sent: int = 0
    raw_bytes: int = 0
    bytes_received: int = 0
    jobs: int = 0
    queries: int = 0

    def snapshot(self) -> dict[str, float]:
        sizes = {"bytes_sent": self.bytes_sent, "raw_bytes": self.raw_bytes, "bytes_received": self.bytes_received}
        return {**RetryStats.snapshot(self), **sizes, "queries": self.queries}


@dataclass(frozen=True, slots=True)
class UploadResult:
    requests: int
    raw_bytes: int
    wire_bytes: int


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: JsonObject


def batch_bodies(kind: UploadKind, encoded: Iterable[bytes], limit: int) -> list[bytes]:
    """`{"<kind>": [...]}` request bodies of already-serialized objects, each at most `limit` bytes.

    An object that cannot fit even alone raises ValueError (the publisher leaves such objects out
    before; docs/jupiterone.md 10.2: the SDK drops them too).
    """
    head, tail = b'{"' + kind.encode() + b'":[', b"]}"
    room = limit - len(head) - len(tail)
    bodies: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for item in encoded:
        if len(item) > room:
            raise ValueError(f"an object of {len(item):,} bytes cannot fit in a {limit:,}-byte request")
        if chunk and size + 1 + len(item) > room:
            bodies.append(head + b",".join(chunk) + tail)
            chunk, size = [], 0
        size += len(item) + (1 if chunk else 0)
        chunk.append(item)
    if chunk:
        bodies.append(head + b",".join(chunk) + tail)
    return bodies


def job_of(body: JsonMapping) -> JsonObject:
    """The job object of a create, finalize or status answer (`{"job": {...}}`, 9.1)."""
    job = body.get("job", body)
    return dict(job) if isinstance(job, Mapping) else {}


def job_errors(job: JsonMapping) -> dict[str, int]:
    """The error counters of a finished job that are above zero (`JOB_ERROR_COUNTERS`)."""
    found = {}
    for name in JOB_ERROR_COUNTERS:
        value = job.get(name)
        if isinstance(value, int | float) and value > 0:
            found[name] = int(value)
    return found


@dataclass(frozen=True, slots=True)
class QueryPage:
    """One page of a J1QL answer: `type` (`list`, `table`, `tree`, ...) and `data` as JupiterOne sent them."""

    type: str
    data: Any


def rate_limit_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds until a `RateLimit-Reset` (10.4): seconds, or an epoch time in seconds; None if unreadable."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number > _EPOCH_THRESHOLD:
        number -= time.time() if now is None else now
    return max(0.0, number)


class JupiterOneClient:
    """Talks to one JupiterOne account's synchronization API. Reuse one per process; `close()` at the end."""

    def __init__(self, settings: Settings, *, policy: RetryPolicy | None = None, sleep: Sleep = asyncio.sleep) -> None:
        if not settings.j1_account or settings.j1_api_key is None:
            raise MonitorError("the JupiterOne client needs MONITOR_J1_ACCOUNT and MONITOR_J1_API_KEY")
        self.base_url = settings.j1_api_url
        self._account = settings.j1_account
        self._key = settings.j1_api_key
        self.max_request_bytes = settings.j1_max_request_bytes
        self.poll_interval = settings.j1_poll_interval
        self.finalize_timeout = settings.j1_finalize_timeout
        self._sleep = sleep
        self.stats = J1Stats()
        # Answers are decompressed by `_decoded`, so that `bytes_received` counts the wire.
        self._http = HttpClient(
            timeout=settings.j1_timeout,
            ca_bundle=settings.ca_bundle,
            policy=policy or RetryPolicy(max_retries=settings.j1_max_retries, max_delay=settings.j1_max_backoff),
            stats=self.stats,
            sleep=sleep,
            logger=log,
            connections=max(8, settings.j1_concurrency * 2),
            decompress=False,
            follow_redirects=True,
        )

    @property
    def policy(self) -> RetryPolicy:
        return self._http.policy

    async def close(self) -> None:
        await self._http.close()

    # -- the API (9.1) ---------------------------------------------------------------------------
    async def create_job(self, *, scope: str, sync_mode: SyncMode, source: str = "api") -> JsonObject:
        """Start a job (9.3: `scope` is required for DIFF with `source: api`); returns the job object."""
        body = orjson.dumps({"source": source, "scope": scope, "syncMode": sync_mode})
        job = job_of(await self._send("POST", JOBS_PATH, body))
        if not job.get("id"):
            raise J1Error(f"JupiterOne created a job without an id for scope {scope}")
        self.stats.jobs += 1
        return job

    async def upload(self, job_id: str, kind: UploadKind, encoded: list[bytes]) -> UploadResult:
        """Upload serialized objects in as many requests as the size limit needs (none for no objects)."""
        requests = raw = wire = 0
        for body in batch_bodies(kind, encoded, self.max_request_bytes):
            compressed = gzip.compress(body, compresslevel=_GZIP_LEVEL)
            await self._send("POST", f"{JOBS_PATH}/{job_id}/{kind}", compressed, gzipped=True, raw_size=len(body))
            requests, raw, wire = requests + 1, raw + len(body), wire + len(compressed)
        return UploadResult(requests, raw, wire)

    async def finalize(self, job_id: str) -> JsonObject:
        return job_of(await self._send("POST", f"{JOBS_PATH}/{job_id}/finalize", b"{}"))

    async def job_status(self, job_id: str) -> JsonObject:
        return job_of(await self._send("GET", f"{JOBS_PATH}/{job_id}", None))

    async def abort(self, job_id: str, reason: str) -> None:
        """Abort a job we give up on (the SDK does the same on any upload error, 9.1); best effort."""
        try:
            await self._send("POST", f"{JOBS_PATH}/{job_id}/abort", orjson.dumps({"reason": reason}))
        except J1Error as exc:
            log.info("jupiterone: could not abort job %s: %s", job_id, exc)

    async def wait_finished(self, job_id: str, job: JsonMapping | None = None) -> JsonObject:
        """Poll a finalized job until FINISHED (9.2); `J1JobFailed` on another terminal status or timeout.

        The first poll is immediate (a small job is often done already), then the interval doubles
        from an eighth of `j1_poll_interval` up to it.
        """
        current = dict(job) if job is not None else await self.job_status(job_id)
        delay, waited = self.poll_interval / 8, 0.0
        while True:
            status = str(current.get("status", ""))
            if status == FINISHED:
                return current
            if status not in IN_PROGRESS:
                raise J1JobFailed(f"job {job_id} ended {status or 'without a status'}", code=status or "UNKNOWN")
            if waited > self.finalize_timeout:
                message = f"job {job_id} still {status} after {waited:.0f}s of polling"
                raise J1JobFailed(message, code=status, ended=False)
            current = await self.job_status(job_id)
            if str(current.get("status", "")) in IN_PROGRESS:
                await self._sleep(delay)
                waited += delay
                delay = min(self.poll_interval, delay * 2)

    # -- J1QL (the GraphQL query API) ---------------------------------------------------------
    async def query(self, j1ql: str, *, deferred: bool = False) -> AsyncIterator[QueryPage]:
        """Every page of a J1QL query's answer, following the cursor until it is null.

        `deferred` asks JupiterOne to answer through a result URL (for queries that may run long).
        """
        cursor: str | None = None
        while True:
            variables: JsonObject = {"query": j1ql, "flags": {"variableResultSize": True}}
            if cursor is not None:
                variables["cursor"] = cursor
            if deferred:
                variables["deferredResponse"] = "FORCE"
            body = orjson.dumps({"query": QUERY_V1, "variables": variables})
            self.stats.queries += 1
            answer = _query_answer(await self._send("POST", GRAPHQL_PATH, body), j1ql)
            if answer.get("type") == "deferred":
                answer = await self._deferred_result(str(answer.get("url", "")), j1ql)
            yield QueryPage(str(answer.get("type", "")), answer.get("data"))
            cursor = answer.get("cursor") or None
            if cursor is None:
                return

    async def _deferred_result(self, state_url: str, j1ql: str) -> JsonObject:
        """Poll a deferred query's state URL until COMPLETED, then fetch its result (no credentials)."""
        delay, waited = self.poll_interval / 8, 0.0
        while True:
            state = await self._send("GET", state_url, None, credentials=False)
            status = str(state.get("status", ""))
            if status == DEFERRED_DONE:
                return await self._send("GET", str(state.get("url", "")), None, credentials=False)
            if status != "IN_PROGRESS":
                raise J1QueryError(f"J1QL query ended {status or 'without a status'}: {state.get('error') or j1ql}")
            if waited > self.finalize_timeout:
                raise J1QueryError(f"J1QL query still in progress after {waited:.0f}s: {j1ql}")
            await self._sleep(delay)
            waited += delay
            delay = min(self.poll_interval, delay * 2)

    # -- transport ---------------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        target: str,
        body: bytes | None,
        *,
        gzipped: bool = False,
        raw_size: int | None = None,
        credentials: bool = True,
    ) -> JsonObject:
        """`target` is a path under the API root, or (without `credentials`) an absolute URL."""
        headers = self._headers(gzipped) if credentials else {"Accept": "application/json", "Accept-Encoding": "gzip"}
        url = f"{self.base_url}{target}" if credentials else target

        async def prepare() -> Request:
            if body is not None:  # every attempt counts: a retried body is sent again
                self.stats.bytes_sent += len(body)
                self.stats.raw_bytes += raw_size if raw_size is not None else len(body)
            return Request(method, url, headers, body)

        return await self._http.send(
            prepare,
            lambda outcome: _classify(outcome, method, target),
            label=f"jupiterone {method} {target}",
            observe=self._received,
        )

    def _headers(self, gzipped: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "JupiterOne-Account": self._account,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "User-Agent": f"monitor/{__version__}",
        }
        if gzipped:
            headers["Content-Encoding"] = "gzip"
            # 9.3: the SDK keeps one correlation id across the retries of one batch.
            headers["JupiterOne-Correlation-Id"] = str(uuid.uuid4())
        return headers

    async def _received(self, answer: Answer) -> None:
        self.stats.bytes_received += len(answer.body)


def _decoded(raw: bytes, headers: Mapping[str, str]) -> bytes:
    if headers.get("Content-Encoding", "").lower() != "gzip" or not raw:
        return raw
    try:
        return zlib.decompress(raw, 16 + zlib.MAX_WBITS)
    except zlib.error:
        return b""  # read as an empty answer; `_json` of the status decides the rest


def _classify(outcome: Outcome, method: str, target: str) -> Verdict[JsonObject]:
    """The body of a success; a 4xx other than 429 is refused at once; 429, 5xx and transport failures
    are retried after `Retry-After` or, on a 429 without it, `RateLimit-Reset` (10.4)."""
    if not isinstance(outcome, Answer):
        return retry_later(outcome, lambda retries: _unavailable(outcome, method, target, retries))
    response = _Response(outcome.status, outcome.headers, _json(_decoded(outcome.body, outcome.headers)))
    if response.status < 400:
        return response.body
    if not RetryPolicy.retryable_status(response.status):
        raise _refused(response, method, target)
    retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
    if response.status == 429 and retry_after is None:
        retry_after = rate_limit_reset(outcome.headers.get("RateLimit-Reset"))
    return retry_later(
        outcome, lambda retries: _unavailable(response, method, target, retries), retry_after=retry_after
    )


def _query_answer(body: JsonMapping, j1ql: str) -> JsonObject:
    """The `queryV1` object of a GraphQL answer; `J1QueryError` for GraphQL errors."""
    errors = body.get("errors")
    data = body.get("data")
    answer = data.get("queryV1") if isinstance(data, Mapping) else None
    if errors or not isinstance(answer, Mapping):
        messages = [str(e.get("message", e)) for e in errors] if isinstance(errors, list) else ["no answer"]
        raise J1QueryError(f"JupiterOne did not answer {j1ql!r}: {'; '.join(messages)}")
    return dict(answer)


def _json(raw: bytes) -> JsonObject:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": {"code": "INVALID_RESPONSE", "message": raw[:200].decode(errors="replace")}}
    return value if isinstance(value, dict) else {"value": value}


def _error_fields(body: JsonMapping) -> tuple[str, str, str | None]:
    """(code, message, offending key) of `{error: {code, message}}` (10.3), whatever is present."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        return "", str(body.get("message", "")), None
    key = error.get("key", error.get("_key"))
    return str(error.get("code", "")), str(error.get("message", "")), None if key is None else str(key)


def _refused(response: _Response, method: str, path: str) -> J1Refused:
    code, message, key = _error_fields(response.body)
    text = f"JupiterOne {method} {path} answered {response.status}" + (f" {code}" if code else "")
    text += f": {message}" if message else ""
    kind = JobNotAwaitingUploads if code == JOB_NOT_AWAITING_UPLOADS else J1Refused
    return kind(text, status=response.status, code=code or str(response.status), key=key)


def _unavailable(outcome: _Response | BaseException, method: str, path: str, retries: int) -> J1Unavailable:
    if isinstance(outcome, BaseException):
        detail = first_line(outcome)
        return J1Unavailable(f"JupiterOne {method} {path}: cannot reach JupiterOne after {retries} retries: {detail}")
    code, message, _ = _error_fields(outcome.body)
    text = f"JupiterOne {method} {path} answered {outcome.status} after {retries} retries"
    return J1Unavailable(text + (f": {code} {message}".rstrip() if code or message else ""), status=outcome.status)
