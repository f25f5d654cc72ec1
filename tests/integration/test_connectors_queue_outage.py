"""SPEC §2.6 "nothing is lost if the queue service is slow or down", wired as `jwo/runtime.py` wires it
(SqliteOutbox + Relay + SqsPublisher + create_app under uvicorn on 127.0.0.1), under steady identity load:

1. the queue endpoint refuses connections, then
2. it accepts TCP connections and never answers (a hung load balancer or a black-holed route),
3. then the relay is pointed at a working SQS (embedded moto, provisioned as `jwo up` provisions it).

Throughout the outage the identity answers keep their p99 under 250 ms; afterwards every event the
connectors answered for is on the queue (0 lost).

The relay's publisher is a `SwitchingPublisher` (a proxy over three `SqsPublisher`s, one per endpoint),
since an SQS endpoint cannot be changed under a client. The SQS clients are built with the short
timeouts of `CLIENT_CONFIG` and one attempt per call (the relay retries by itself): with botocore's
defaults (60 s connect, 60 s read, legacy retries) one send to a hung endpoint held the relay for 303 s.

The issue asks for a 30 s outage; the suite uses `JWO_TEST_OUTAGE_SECONDS` (default 8: 4 s refused,
4 s hung), which already covers several connect failures and several read timeouts with backoff in
between. Set it to 30 for the full-length run (passed on 2026-12-04 on a loaded machine: 176 s in all, most of it
moto taking the backlog in and handing it out again; too long for the suite's budget).

The outbox file lies in memory (/dev/shm, where the machine has it): what this test measures is the queue's
effect on the answers, and the disk's own fsync stalls (seen here up to 422 ms on a busy machine, with the queue
fine) are not the queue's. The disk's share is measured by `bench/connectors.py` and its commit histograms.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.adapters.sqs_publisher import SqsPublisher
from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.ports import PendingMessage, QueuePublisher, Sent
from connectors.relay import Relay
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from contracts.aws import AwsEndpoint
from jwo.aws_resources import EmbeddedAws, ResourceNames, provision
from tests.connectors_traffic import Population, Traffic, outbox_rows, serving, wait_until

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

OUTAGE_SECONDS = float(os.environ.get("JWO_TEST_OUTAGE_SECONDS", "8"))
P99_LIMIT = 0.25
LOAD_WORKERS = 2
LOAD_INTERVAL = 0.04  # per worker: about 45 identity requests a second in all
RECOVERY_SECONDS = 30.0
# What a relay's SQS client needs so that a dead or hung endpoint costs a bounded time per attempt;
# the relay does its own retrying, with backoff.
CLIENT_CONFIG = AioConfig(
    connect_timeout=0.5,
    read_timeout=1.0,
    retries={"mode": "standard", "total_max_attempts": 1},
)
WORKING_CONFIG = AioConfig(
    connect_timeout=0.5,
    read_timeout=10.0,
    retries={"mode": "standard", "total_max_attempts": 1},
)
"""The recovered queue's client: moto (unlike SQS) takes a second or more per batch on a loaded machine once
a long outage's backlog is on its queue, and a 1 s read timeout then gave up on sends moto went on to accept."""


def clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class SwitchingPublisher:
    """A QueuePublisher that forwards to whichever publisher is `current`, and records what failed."""

    current: QueuePublisher
    failures: Counter[str] = field(default_factory=Counter)
    accepted: int = 0

    async def send_batch(self, messages: Sequence[PendingMessage]) -> Sent:
        try:
            sent = await self.current.send_batch(messages)
        except Exception as exc:
            self.failures[type(exc).__name__] += 1
            raise
        self.accepted += len(sent.accepted)
        return sent


class HangingEndpoint:
    """Accepts TCP connections on 127.0.0.1, reads whatever comes, never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()


def refusing_endpoint() -> tuple[socket.socket, str]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def sqs_client(endpoint: AwsEndpoint, url: str, config: AioConfig = CLIENT_CONFIG) -> AsyncIterator[SQSClient]:
    kwargs: dict[str, Any] = endpoint.client_kwargs() | {"endpoint_url": url}
    async with get_session().create_client("sqs", config=config, **kwargs) as client:
        yield client


@dataclass
class Load:
    """Steady identity traffic; latencies and statuses per phase."""

    base_url: str
    traffic: Traffic
    phase: str = "warm-up"
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            request = self.traffic.identity()
            started = time.perf_counter()
            response = await client.post(request.path, json=request.body)
            elapsed = time.perf_counter() - started
            assert response.status_code == request.expected_status, response.text
            self.latencies.setdefault(self.phase, []).append(elapsed)
            self.statuses[(request.route, response.status_code)] += 1
            await asyncio.sleep(LOAD_INTERVAL)

    def answered(self) -> int:
        return sum(self.statuses.values())


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def receive_all(client: SQSClient, queue_url: str, expected: int, idle: float) -> list[str]:
    """Every message id on the queue (held invisible once received), until `expected` and then one empty
    receive more, or until `idle` seconds pass without a new message (moto hands out 10 at a time, slower
    the longer its queue, so a fixed deadline would cut a long outage's backlog short)."""
    ids: list[str] = []
    deadline = time.monotonic() + idle
    while time.monotonic() < deadline:
        got = await client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if len(ids) < expected else 0,
            VisibilityTimeout=600,
        )  # fmt: skip
        messages = got.get("Messages", [])
        if not messages and len(ids) >= expected:
            break
        if messages:
            deadline = time.monotonic() + idle
        ids += [str(_message_id(m["Body"])) for m in messages]
    return ids


def _message_id(body: str) -> str:
    return str(orjson.loads(body)["message_id"])


@pytest.fixture
def in_memory(tmp_path: Path) -> Iterator[Path]:
    """A folder in /dev/shm (tmpfs), removed after the test; `tmp_path` where the machine has none."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path, prefix="jwo-outage-") as folder:
        yield Path(folder)


@pytest.mark.slow
def test_identity_answers_stay_fast_while_the_queue_is_down_or_hung_and_every_event_arrives_after(
    in_memory: Path,
) -> None:
    population = Population.build()
    db = in_memory / "outbox.db"
    refusing, refusing_url = refusing_endpoint()
    aws = EmbeddedAws(separate_process=True)  # moto's request handling stays off this process's GIL
    hanging = HangingEndpoint()
    try:
        aws.start()

        async def scenario() -> tuple[Load, SwitchingPublisher, Relay, list[str], float]:
            endpoint = aws.endpoint
            resources = await provision(endpoint, ResourceNames())
            queue_url = resources.events.url
            async with AsyncExitStack() as stack:
                hanging_url = await hanging.start()
                stack.push_async_callback(hanging.stop)
                refused = await stack.enter_async_context(sqs_client(endpoint, refusing_url))
                hung = await stack.enter_async_context(sqs_client(endpoint, hanging_url))
                working = await stack.enter_async_context(
                    sqs_client(endpoint, str(endpoint.endpoint_url), WORKING_CONFIG)
                )
                loop = asyncio.get_running_loop()
                relay_box: list[Relay] = []

                def wake_relay() -> None:  # called by the outbox writer thread after each commit
                    loop.call_soon_threadsafe(relay_box[0].wake)

                outbox = SqliteOutbox(db, on_commit=wake_relay)
                stack.callback(outbox.close)
                publisher = SwitchingPublisher(SqsPublisher(refused, queue_url))
                relay = Relay(outbox, publisher, in_flight=4, base_backoff=0.05, max_backoff=1.0, idle_seconds=0.1)
                relay_box.append(relay)
                service = ConnectorService(CachedDirectory(population.source()), outbox, clock)
                base_url = await stack.enter_async_context(serving(create_app(service, ConnectorSettings())))
                stop_relay = asyncio.Event()
                relay_task = asyncio.create_task(relay.run(stop_relay))
                load = Load(base_url, Traffic(population, seed=77))
                client = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=5))
                workers = [asyncio.create_task(load.worker(client)) for _ in range(LOAD_WORKERS)]
                try:
                    await asyncio.sleep(0.5)
                    load.phase = "refused"
                    await asyncio.sleep(OUTAGE_SECONDS / 2)
                    publisher.current = SqsPublisher(hung, queue_url)
                    load.phase = "hung"
                    await asyncio.sleep(OUTAGE_SECONDS / 2)
                finally:
                    load.stop.set()
                    await asyncio.gather(*workers)
                assert publisher.accepted == 0
                # The queue is back (the load has stopped: moto takes messages far slower than SQS does, and
                # ever slower as its queue grows, so it could not catch up with traffic that goes on).
                publisher.current = SqsPublisher(working, queue_url)
                try:
                    recovery = await wait_until(lambda: outbox.stats(clock())[0] == 0, within=RECOVERY_SECONDS)
                finally:
                    stop_relay.set()
                    await asyncio.wait_for(relay_task, 5)
                assert await relay.drain(within=5)
                ids = await receive_all(working, queue_url, expected=len(outbox_rows(db)), idle=10)
                return load, publisher, relay, ids, recovery

        load, publisher, relay, received, recovery = asyncio.run(scenario())
    finally:
        refusing.close()
        aws.stop()

    recorded = [message_id for message_id, _ in outbox_rows(db)]
    outage = load.latencies["refused"] + load.latencies["hung"]
    # The load was steady and the answers fast while the queue was unreachable.
    assert min(len(load.latencies["refused"]), len(load.latencies["hung"])) > 10 * OUTAGE_SECONDS
    assert p99(outage) <= P99_LIMIT, f"p99 {p99(outage) * 1000:.0f} ms during the outage"
    assert {route for route, _ in load.statuses} == {"scan", "identity_keys", "shopper"}
    # Both kinds of outage happened, and the relay kept trying through them.
    assert publisher.failures["EndpointConnectionError"] >= 2
    assert publisher.failures["ReadTimeoutError"] >= 2
    assert hanging.connections >= 2
    assert relay.stats.errors == sum(publisher.failures.values())
    # Every answer became exactly one message, and every message reached the queue once the queue was back.
    assert len(recorded) == len(set(recorded)) == load.answered()
    assert recovery < RECOVERY_SECONDS
    assert set(received) == set(recorded), f"{len(set(recorded) - set(received))} events lost"
    assert len(received) == len(recorded), f"{len(received) - len(recorded)} delivered twice"
