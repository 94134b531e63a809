"""`$batch` through the one Graph client, Intune pacing, and Intune throttling by the simulator.

No test waits for real: the client's sleeps move the simulator's clock (`Sleeps`), and the pacer
runs on a clock the test owns.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left

import pytest

from monitor.graph.client import BatchRequest, GraphError
from monitor.graph.pacing import ARRIVAL_MARGIN, INTUNE_LIMITS, WINDOW_SECONDS, IntunePacer, intune_bucket
from monitor.retry import RetryPolicy
from monitor.simulator import Simulator
from monitor.simulator.intune import IntuneTenant
from tests.conftest import TENANT_ID

from .conftest import ClientFactory, Sleeps


@pytest.mark.parametrize(
    ("path", "bucket"),
    [
        ("/beta/deviceManagement/managedDevices", "devices"),
        ("/v1.0/deviceManagement/managedDevices/abc", "devices"),
        ("/v1.0/deviceManagement/detectedApps/abc/managedDevices", "devices"),
        ("/v1.0/deviceManagement/deviceCompliancePolicies/abc/deviceStatuses", "configuration"),
        ("/v1.0/deviceManagement/deviceConfigurations", "configuration"),
        ("/v1.0/deviceManagement", "configuration"),
        ("/v1.0/deviceAppManagement/mobileApps", "apps"),
        ("/v1.0/deviceManagement/reports/retrieveDeviceAppInstallationStatusReport", "other"),
        ("/v1.0/users/delta", None),
        ("/v1.0/organization/abc", None),
        ("/v1.0/$batch", None),
    ],
)
def test_intune_bucket(path: str, bucket: str | None) -> None:
    assert intune_bucket(path) == bucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def busiest_window(times: list[float], window: float = 20.0) -> int:
    """The most requests any `window`-second interval holds (times sorted)."""
    return max(bisect_left(times, start + window) - i for i, start in enumerate(times))


async def test_pacer_keeps_every_20_second_window_under_the_limit() -> None:
    fake = FakeTime()
    pacer = IntunePacer(clock=fake.clock, sleep=fake.sleep)
    times = []
    for _ in range(6000):
        await pacer.acquire("t", "devices")
        times.append(fake.now)
    assert busiest_window(times, WINDOW_SECONDS + ARRIVAL_MARGIN) <= INTUNE_LIMITS["devices"]
    # ...and uses it: the whole limit at once (a sweep that needs fewer never waits), then the
    # next limit's worth as soon as the window has passed.
    assert times[1999] == 0 and times[2000] == times[3999] == WINDOW_SECONDS + ARRIVAL_MARGIN
    assert times[-1] == pytest.approx(2 * (WINDOW_SECONDS + ARRIVAL_MARGIN))
    assert pacer.stats.requests == 6000 and pacer.stats.waits > 0


async def test_pacer_queues_concurrent_callers_and_keeps_buckets_apart() -> None:
    fake = FakeTime()
    pacer = IntunePacer(clock=fake.clock, sleep=fake.sleep)
    times: dict[str, list[float]] = {"devices": [], "configuration": []}

    async def call(bucket: str) -> None:
        await pacer.acquire("t", bucket, 20)  # a batch of 20 counts as 20
        times[bucket].append(fake.now)

    await asyncio.gather(*(call(b) for b in ("devices", "configuration") for _ in range(300)))
    assert busiest_window(sorted(times["devices"])) * 20 <= INTUNE_LIMITS["devices"]
    assert busiest_window(sorted(times["configuration"])) * 20 <= INTUNE_LIMITS["configuration"]
    # Other tenants have buckets of their own; an unknown bucket or no limits pace nothing.
    assert await pacer.acquire("other tenant", "devices") == 0.0
    assert await pacer.acquire("t", None) == 0.0
    assert await IntunePacer(limits={}).acquire("t", "devices") == 0.0


async def test_the_client_paces_intune_calls_and_nothing_else(
    make_client: ClientFactory, sleeps: Sleeps, estate: IntuneTenant
) -> None:
    pacer = IntunePacer(limits={"devices": 2}, clock=lambda: 0.0, sleep=sleeps)
    client = make_client(pacer=pacer)
    for _ in range(5):
        await client.get(TENANT_ID, "/v1.0/users", params={"$top": "1"})
    assert pacer.stats.requests == 0
    for _ in range(4):
        await client.get(TENANT_ID, "/beta/deviceManagement/managedDevices", params={"$top": "1"})
    assert pacer.stats.requests == 4
    # Two per window, a clock that stands still: the third and fourth wait for the window to pass.
    assert pacer.stats.waits == 2
    assert client.stats.paced == pytest.approx(2 * (WINDOW_SECONDS + ARRIVAL_MARGIN))


def status_requests(estate: IntuneTenant, count: int) -> list[BatchRequest]:
    policies = list(estate.compliance_policies) + list(estate.configurations)
    lists = [
        "deviceCompliancePolicies" if p in estate.compliance_policies else "deviceConfigurations" for p in policies
    ]
    return [
        BatchRequest(
            "GET", f"/deviceManagement/{lists[i % len(policies)]}/{policies[i % len(policies)]}/deviceStatuses"
        )
        for i in range(count)
    ]


async def test_batch_splits_by_20_and_answers_in_request_order(
    make_client: ClientFactory, sim: Simulator, estate: IntuneTenant
) -> None:
    client = make_client()
    requests = status_requests(estate, 45)
    answers = await client.batch(TENANT_ID, requests)
    assert sim.count(r"/\$batch$", method="POST") == 3
    assert [a.request for a in answers] == requests  # the simulator answers in reverse order
    for answer, request in zip(answers, requests, strict=True):
        assert answer.status == 200 and answer.error() is None
        policy = request.url.split("/")[3]
        assert all(f"_{policy}_" in status["id"] for status in answer.body["value"])
    assert sum(1 for a in answers if a.body["value"]) > 30
    assert (client.stats.requests, client.stats.inner_requests, client.stats.retries) == (3, 45, 0)


async def test_an_inner_429_is_retried_after_its_retry_after(
    make_client: ClientFactory, sim: Simulator, sleeps: Sleeps, estate: IntuneTenant
) -> None:
    client = make_client()
    told: list[tuple[str, int]] = []

    async def listener(tenant: str, count: int) -> None:
        told.append((tenant, count))

    client.on_throttled = listener
    requests = status_requests(estate, 5)
    throttled = requests[2].url.split("/")[3]
    sim.faults.inject("GET", f"{throttled}/deviceStatuses", 429, headers={"Retry-After": "7"}, times=2)
    answers = await client.batch(TENANT_ID, requests)
    assert [a.status for a in answers] == [200] * 5
    assert told == [(TENANT_ID, 1), (TENANT_ID, 1)]  # each inner 429, for /metrics
    assert len(sleeps.delays) == 2 and all(7 <= d <= 7.7 for d in sleeps.delays)
    assert (client.stats.throttled, client.stats.retries) == (2, 2)
    assert sim.count(f"{throttled}/deviceStatuses", status=429) == 2
    assert sim.count(f"{throttled}/deviceStatuses", status=200) == 1
    assert sim.count(r"/\$batch$", method="POST") == 3  # the retries carry only the throttled request


async def test_inner_4xx_come_back_per_request_without_retries(
    make_client: ClientFactory, sim: Simulator, estate: IntuneTenant
) -> None:
    client = make_client()
    good, missing = (
        status_requests(estate, 1)[0],
        BatchRequest("GET", "/deviceManagement/deviceConfigurations/nope/deviceStatuses"),
    )
    answers = await client.batch(TENANT_ID, [good, missing])
    assert [a.status for a in answers] == [200, 404]
    error = answers[1].error()
    assert isinstance(error, GraphError) and error.status == 404
    assert client.stats.retries == 0 and sim.count("nope/deviceStatuses") == 1


async def test_inner_retries_are_bounded_by_the_policy(
    make_client: ClientFactory, sim: Simulator, estate: IntuneTenant
) -> None:
    client = make_client(policy=RetryPolicy(max_retries=2))
    request = status_requests(estate, 1)[0]
    sim.faults.inject("GET", "deviceStatuses", 503, times=10)
    [answer] = await client.batch(TENANT_ID, [request])
    assert answer.status == 503 and answer.error() is not None
    assert sim.count("deviceStatuses", status=503) == 3


async def test_the_simulator_throttles_by_intune_limits_and_the_client_honours_retry_after(
    make_client: ClientFactory, sim: Simulator, sleeps: Sleeps, estate: IntuneTenant
) -> None:
    estate.limits["devices"] = 3  # per 20 s per app: the real limit is 2,000 (docs/graph.md 10.3)
    client = make_client()  # pacing off: let Graph throttle
    for _ in range(5):
        await client.get(TENANT_ID, "/beta/deviceManagement/managedDevices", params={"$top": "1"})
    assert sim.count("managedDevices", status=429) >= 1
    assert sleeps.delays and all(d >= 1 for d in sleeps.delays)
    assert client.stats.throttled == sim.count("managedDevices", status=429)
    # The configuration bucket is separate, so it is not throttled meanwhile.
    await client.get(TENANT_ID, "/v1.0/deviceManagement/deviceCompliancePolicies")
    assert sim.count("deviceCompliancePolicies", status=429) == 0


async def test_paced_client_is_never_throttled_by_the_simulated_limits(
    make_client: ClientFactory, sim: Simulator, sleeps: Sleeps, estate: IntuneTenant
) -> None:
    estate.limits["devices"] = 10
    client = make_client(pacer=IntunePacer(limits={"devices": 10}, clock=sim.clock.timestamp, sleep=sleeps))
    for _ in range(25):
        await client.get(TENANT_ID, "/beta/deviceManagement/managedDevices", params={"$top": "1"})
    assert sim.count("managedDevices", status=429) == 0
    assert sim.count("managedDevices", status=200) == 25 and client.pacer.stats.waits > 0


def test_relative_url_keeps_the_token_on_the_graph_host(make_client: ClientFactory) -> None:
    client = make_client()
    link = f"{client.base_url}/v1.0/deviceManagement/detectedApps/x/managedDevices?$select=id&$skiptoken=abc"
    assert client.relative_url(link) == "/deviceManagement/detectedApps/x/managedDevices?$select=id&$skiptoken=abc"
    with pytest.raises(GraphError, match="off the Graph host"):
        client.relative_url("https://evil.example/v1.0/deviceManagement/managedDevices")
    with pytest.raises(GraphError, match="outside /v1.0"):
        client.relative_url(f"{client.base_url}/beta/deviceManagement/managedDevices")
