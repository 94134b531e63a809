"""Shared test data and a raw-HTTP Graph client for the simulator tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

TENANT_ID = "0d6bd0a4-3b3f-4c1e-9a55-1e2f3a4b5c6d"
OTHER_TENANT_ID = "7c1e5a2b-9d8f-4e3a-b6c5-0a1b2c3d4e5f"
CLIENT_ID = "3f0e4c1a-7b2d-4e5f-8a9b-0c1d2e3f4a5b"
SECRET = "s3cr3t-value"
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@dataclass
class GraphClient:
    """A thin raw-HTTP client for assertions on exact status codes, headers and bodies."""

    session: aiohttp.ClientSession
    url: str
    token: str = ""

    async def login(self, tenant: str = TENANT_ID, client_id: str = CLIENT_ID, secret: str = SECRET) -> dict[str, Any]:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": f"{self.url}/.default",
        }
        async with self.session.post(f"{self.url}/{tenant}/oauth2/v2.0/token", data=form) as response:
            body: dict[str, Any] = await response.json()
        self.token = body.get("access_token", "")
        return body

    async def get(
        self, path_or_url: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
        url = path_or_url if path_or_url.startswith("https://") else f"{self.url}{path_or_url}"
        sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        async with self.session.get(url, headers=sent, allow_redirects=False) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else {}
            return response.status, body or {}, response.headers

    async def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        sent = {"Authorization": f"Bearer {self.token}"}
        async with self.session.post(f"{self.url}{path}", json=body, headers=sent) as response:
            return response.status, await response.json(content_type=None) or {}

    async def get_ok(self, path_or_url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        status, body, _ = await self.get(path_or_url, headers)
        assert status == 200, body
        return body

    async def round(self, path_or_url: str, headers: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], str]:
        """Follow nextLinks to the deltaLink: (every object of every page, the deltaLink)."""
        objects: list[dict[str, Any]] = []
        url = path_or_url
        while True:
            body = await self.get_ok(url, headers)
            objects.extend(body["value"])
            assert not ("@odata.nextLink" in body and "@odata.deltaLink" in body)
            if "@odata.deltaLink" in body:
                return objects, body["@odata.deltaLink"]
            url = body["@odata.nextLink"]
