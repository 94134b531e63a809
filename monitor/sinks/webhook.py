"""The change-record webhook sink (`MONITOR_SINK=webhook:URL`): batches of records, POSTed signed.

Each request body is `{"records": [...]}`, the records in seq order as the change-record contract
says (docs/change-record.md), signed like every outgoing webhook (`monitor.sinks.signing`). The cursor
advances only after the receiver answered 2xx to every request of a batch, so the sink delivers at
least once: after a crash, or a batch whose later request failed, records are sent again, and
receivers drop the records they already hold, known by `(tenant, seq, observedAt)`. Not by `(tenant,
seq)` alone: a tenant's seq starts again at 1 when its log does (the tenant removed and added back,
Redis data lost), and the sink cannot tell, since the cursor went with the log; a receiver that holds
a seq with another `observedAt` has the first records of the new log, and must take them (the
contract's "Delivery" says how).

A refusal (4xx other than 429) is not retried, but unlike an alert it is not skipped either: the
change log is the product's data, and a receiver that misses records can no longer replay it into
the right state. The sink stops at that batch, the error is reported, and the next delivery tries
it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from monitor.records import ChangeRecord, encode_records
from monitor.sinks.signing import WebhookClient, redact

# Records per request: a change record with `before` and `after` is a few kilobytes, so a request
# stays around a megabyte, well inside what web servers accept by default.
MAX_RECORDS_PER_POST = 500


class WebhookSink:
    def __init__(self, url: str, client: WebhookClient, *, max_records: int = MAX_RECORDS_PER_POST) -> None:
        self.url = url
        self.client = client
        self.max_records = max_records

    @property
    def name(self) -> str:
        # The name keys the cursor and shows in `monitor status`: a digest of the whole URL keeps
        # cursors apart without printing a credential that the URL may carry.
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        return f"webhook:{redact(self.url)}#{digest}"

    async def deliver(self, records: Sequence[ChangeRecord]) -> None:
        for start in range(0, len(records), self.max_records):
            chunk = records[start : start + self.max_records]
            await self.client.post(self.url, encode_records(chunk))

    async def close(self) -> None:
        await self.client.close()
