"""Delta queries for users and groups (docs/graph.md 7 and 8): the Graph side only.

A round starts from the initial URL (with `$select`) or from the deltaLink the previous round
ended with, follows `@odata.nextLink` page by page and ends on the page carrying
`@odata.deltaLink`. Links are opaque and carry the query options, so they are followed verbatim
(docs/graph.md 7.2). Expired or invalid state (`410 Gone` with a `Location`, or `syncStateNotFound` /
`resyncRequired`) surfaces as `ResyncRequired`, and the caller starts a full round (docs/graph.md 8).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from monitor.graph.client import GraphClient, GraphError
from monitor.model.types import JsonObject

RESYNC_CODES = frozenset({"syncStateNotFound", "resyncRequired"})
# What the mirror keeps beside each user and group for the next round; a new value makes every
# saved deltaLink start a full round once. "graph-residue": the Graph residues of
# monitor.model.graph_state, written by full rounds.
STATE_FORMAT = "graph-residue"


class ResyncRequired(Exception):
    """The delta state is gone; start over with a full round (from `location` when Graph gave one)."""

    def __init__(self, reason: str, location: str | None) -> None:
        super().__init__(reason)
        self.location = location or None


@dataclass(frozen=True, slots=True)
class DeltaResource:
    name: str
    path: str
    select: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """Identifies the query a deltaLink was made for: links carry their `$select` (docs/graph.md
        7.2), so a link saved by a version of monitor that selected other properties must not be
        reused; a different fingerprint starts a full round. `STATE_FORMAT` is in it too: a link
        saved before the mirror kept what merging partial updates needs is not reused either."""
        query = f"{self.path}?{','.join(self.select)}"
        return hashlib.sha256(f"{query}#{STATE_FORMAT}".encode()).hexdigest()[:16]

    def initial_url(self, graph_url: str) -> str:
        return f"{graph_url}{self.path}?$select={','.join(self.select)}"


@dataclass(frozen=True, slots=True)
class DeltaPage:
    objects: list[JsonObject]
    next_link: str | None
    delta_link: str | None


async def delta_pages(
    client: GraphClient, tenant: str, url: str, headers: Mapping[str, str] | None = None
) -> AsyncGenerator[DeltaPage, None]:
    """The pages of one round from `url` to the deltaLink, each request with `headers`. Raises
    `ResyncRequired` or `GraphError`."""
    while True:
        try:
            response = await client.get(tenant, url, headers=headers)
        except GraphError as exc:
            if exc.status == 410 or exc.code in RESYNC_CODES:
                raise ResyncRequired(str(exc), exc.headers.get("Location")) from exc
            raise
        body = response.body
        next_link, delta_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
        if not next_link and not delta_link:
            raise GraphError(f"delta page from {client.url(url)[:80]} has neither nextLink nor deltaLink")
        yield DeltaPage(list(body.get("value", [])), next_link, delta_link)
        if delta_link:
            return
        url = str(next_link)
