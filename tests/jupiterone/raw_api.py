"""Talking to the simulated JupiterOne over raw HTTP, for the tests of the simulator itself."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from monitor.simulator.jupiterone import JOBS, SimJupiterOne

JsonObject = dict[str, Any]
USERS = "test/e:users"
GROUPS = "test/e:groups"
EDGES = "test/r:groups"


def entity(key: str, **props: Any) -> JsonObject:
    return {"_key": key, "_type": "azure_user", "_class": ["User"], "name": key, "displayName": key, **props}


def edge(from_key: str, to_key: str, **props: Any) -> JsonObject:
    return {
        "_key": f"{from_key}|has|{to_key}",
        "_type": "azure_group_has_member",
        "_class": "HAS",
        "_fromEntityKey": from_key,
        "_toEntityKey": to_key,
        **props,
    }


def cross(from_key: str, to_key: str) -> JsonObject:
    return edge(from_key, to_key, _fromEntityScope=GROUPS, _toEntityScope=USERS)


def to_user(from_key: str, to_key: str) -> JsonObject:
    """A relationship from an entity of the job's scope to a user of scope USERS, labelled as documented."""
    return edge(from_key, to_key, _toEntitySource="api", _toEntityScope=USERS)


@dataclass
class Api:
    session: aiohttp.ClientSession
    url: str
    sim: SimJupiterOne

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sim.api_key}", "JupiterOne-Account": self.sim.account}

    async def call(
        self, method: str, path: str, body: Any = None, *, compress: bool = False, headers: dict[str, str] | None = None
    ) -> tuple[int, JsonObject, dict[str, str]]:
        sent = self.headers() if headers is None else headers
        data = None
        if body is not None:
            data = orjson.dumps(body) if not isinstance(body, bytes) else body
            sent = {**sent, "Content-Type": "application/json"}
            if compress:
                data, sent = gzip.compress(data), {**sent, "Content-Encoding": "gzip"}
        stream = io.BytesIO(data) if data is not None else None  # aiohttp warns on large raw bytes
        async with self.session.request(method, f"{self.url}{path}", data=stream, headers=sent) as response:
            return response.status, await response.json(), dict(response.headers)

    async def create(self, scope: str, mode: str = "DIFF", **extra: Any) -> str:
        status, body, _ = await self.call("POST", JOBS, {"source": "api", "scope": scope, "syncMode": mode, **extra})
        assert status == 200, body
        job_id: str = body["job"]["id"]
        return job_id

    async def upload(
        self, job_id: str, entities: Sequence[JsonObject] = (), relationships: Sequence[JsonObject] = ()
    ) -> int:
        status, body, _ = await self.call(
            "POST", f"{JOBS}/{job_id}/upload", {"entities": list(entities), "relationships": list(relationships)}
        )
        assert status in (200, 400), body
        return status

    async def finish(self, job_id: str) -> JsonObject:
        status, body, _ = await self.call("POST", f"{JOBS}/{job_id}/finalize", {})
        assert status == 200 and body["job"]["status"] == "FINALIZE_PENDING", body
        while True:
            _, body, _ = await self.call("GET", f"{JOBS}/{job_id}")
            if body["job"]["status"] != "FINALIZE_PENDING":
                job: JsonObject = body["job"]
                return job

    async def run(
        self,
        scope: str,
        mode: str = "DIFF",
        entities: Sequence[JsonObject] = (),
        relationships: Sequence[JsonObject] = (),
    ) -> JsonObject:
        job_id = await self.create(scope, mode)
        assert await self.upload(job_id, entities, relationships) == 200
        return await self.finish(job_id)
