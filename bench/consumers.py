"""Ingest throughput: decode + write without transport, and end to end through the embedded SQS.

Run: `.venv/bin/python bench/consumers.py [--events 1000000] [--sqs-messages 5000]` (also part of
`make bench`). Prints one `name value` line per figure on stdout; progress goes to stderr.

(a) decode + write: `--events` mixed queue messages (`tests.ingest_traffic`: auth events, purchases with
    lines, bad carts, cancel charges, unknown types) already in memory. Ours: the production path, the
    events-queue `Consumer` (`decode_batch`, the real `LakeSink`: Parquet lake + the writer's DuckDB file in a
    temp dir) processing micro-batches of `--batch` messages with `process_all`, as its run loop does (the next
    batch decoded while the last one is written), the queue a no-op in memory. Baseline, in the same run: the
    previous production path, the same Consumer with the per-message decoder (`one_at_a_time(rows_for_message)`)
    and one write at a time, on `--baseline-events` messages. Also the process's CPU time per event (every
    thread), which other jobs on a shared machine disturb less than wall time. At most 100,000 distinct
    envelopes are drawn (drawing is slow); a longer run cycles through them. Goal: at least 100,000 events/s.
(b) end to end: the embedded moto server in a child process (as `jwo up` runs it). Baseline: the
    emulator's raw rate for `--sqs-messages` messages with aiobotocore (receive 10 at a time, delete the 10
    with DeleteMessageBatch, `--in-flight` such loops at once). Ours: the `Consumer` (SqsReceiver +
    LakeSink, as `jwo consume` wires it) on the same number of the same messages through the same emulator.
    Goal: ours at least 0.80 of the baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path; the project root must be there for `tests` and the stages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import gc
import itertools
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiobotocore.session import get_session

from contracts.tables import TABLES
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.consumer import Consumer
from ingest.decode import decode_batch, one_at_a_time, rows_for_message
from ingest.ports import DecodeBatch, Received
from jwo.aws_resources import EmbeddedAws, ResourceNames, provision
from jwo.runtime import LakeSink
from tests.ingest_traffic import queue_bodies
from warehouse.duck_writer import WarehouseDb
from warehouse.lake import LakeWriter

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

SOURCE = "jwo-events"
DISTINCT = 100_000


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def figure(name: str, value: float) -> None:
    print(f"{name} {value:.0f}" if abs(value) >= 100 else f"{name} {value:.3f}", flush=True)


class NoQueue:
    """The consumer's queue for (a): nothing to receive, deletes and extensions cost nothing."""

    async def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        return []

    async def delete(self, messages: Sequence[Received]) -> None:
        return None

    async def extend(self, messages: Sequence[Received], seconds: int) -> None:
        return None


def messages_for(events: int) -> list[Received]:
    progress(f"drawing {min(events, DISTINCT):,} distinct envelopes ...")
    pool = queue_bodies(min(events, DISTINCT), seed=1, huge_every=50_000).bodies
    bodies = itertools.islice(itertools.cycle(pool), events)
    return [Received(f"m-{n}", f"r-{n}", body, 1, None) for n, body in enumerate(bodies)]


def land(messages: list[Received], batch: int, decode: DecodeBatch, writes_in_flight: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process, every thread) the consumer takes to decode and write the
    messages in batches of `batch`, into a fresh lake."""
    chunks = [messages[start : start + batch] for start in range(0, len(messages), batch)]
    with tempfile.TemporaryDirectory(prefix="jwo-bench-") as folder:
        home = Path(folder)
        with WarehouseDb(home, home / "lake") as db:
            db.refresh_views(TABLES.values())
            worker = Consumer(
                SOURCE,
                NoQueue(),
                LakeSink(LakeWriter(home / "lake"), db),
                lambda: datetime.now(UTC),
                decode=decode,
                writes_in_flight=writes_in_flight,
            )
            started, cpu = time.perf_counter(), time.process_time()
            consumed = asyncio.run(worker.process_all(chunks))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert consumed == len(messages), (consumed, len(messages))
    return elapsed, cpu


def decode_and_write(events: int, baseline_events: int, batch: int) -> None:
    messages = messages_for(max(events, baseline_events))
    gc.freeze()  # as `jwo`'s runtime does once the consumers are built: the messages are start-up state here
    ours, baseline = messages[:events], messages[:baseline_events]
    progress(f"ours: decoding and writing {len(ours):,} messages in batches of {batch:,} ...")
    ours_s, ours_cpu = land(ours, batch, decode_batch, 2)
    progress(f"ours, one write at a time ({len(ours):,} messages) ...")
    serial_s, _ = land(ours, batch, decode_batch, 1)
    progress("ours, decode only ...")
    started = time.perf_counter()
    rows = 0
    for start in range(0, len(ours), batch):
        rows += sum(len(r) for r in decode_batch(SOURCE, ours[start : start + batch], datetime.now(UTC)).rows.values())
    decode_s = time.perf_counter() - started
    progress(f"baseline: the per-message decoder, one write at a time, {len(baseline):,} messages ...")
    baseline_s, baseline_cpu = land(baseline, batch, one_at_a_time(rows_for_message), 1)
    ours_rate, baseline_rate = len(ours) / ours_s, len(baseline) / baseline_s
    ours_us, baseline_us = ours_cpu / len(ours) * 1e6, baseline_cpu / len(baseline) * 1e6
    figure("decode_write_events_per_s", ours_rate)
    figure("decode_write_rows_per_s", rows / ours_s)
    figure("decode_write_one_write_at_a_time_events_per_s", len(ours) / serial_s)
    figure("decode_only_events_per_s", len(ours) / decode_s)
    figure("baseline_decode_write_events_per_s", baseline_rate)
    figure("decode_write_vs_baseline_ratio", ours_rate / baseline_rate)
    figure("decode_write_cpu_us_per_event", ours_us)
    figure("baseline_decode_write_cpu_us_per_event", baseline_us)
    figure("baseline_vs_ours_cpu_ratio", baseline_us / ours_us)
    figure("decode_write_goal_events_per_s", 100_000)


async def send_all(sqs: SQSClient, url: str, bodies: list[str]) -> None:
    async def send(chunk: list[str]) -> None:
        result = await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
        )
        assert not result.get("Failed"), result["Failed"]

    chunks = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    for start in range(0, len(chunks), 8):
        await asyncio.gather(*(send(c) for c in chunks[start : start + 8]))


async def through_sqs(messages: int, in_flight: int) -> None:
    bodies = queue_bodies(messages, seed=2).bodies[:messages]
    names = ResourceNames(receive_wait_seconds=0)
    aws = EmbeddedAws(separate_process=True).start()
    try:
        resources = await provision(aws.endpoint, names)
        url = resources.events.url
        async with get_session().create_client("sqs", **aws.endpoint.client_kwargs()) as sqs:
            progress(f"baseline: {len(bodies):,} messages, raw receive + delete, {in_flight} loops ...")
            await send_all(sqs, url, bodies)
            done = 0

            async def drain() -> None:
                nonlocal done
                while done < len(bodies):
                    got = (await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)).get(
                        "Messages", []
                    )
                    if got:
                        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
                        await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
                        done += len(got)

            started = time.perf_counter()
            await asyncio.gather(*(drain() for _ in range(in_flight)))
            raw = len(bodies) / (time.perf_counter() - started)
            figure("sqs_raw_receive_delete_messages_per_s", raw)

            progress(f"ours: the Consumer on {len(bodies):,} messages into a temp lake ...")
            await send_all(sqs, url, bodies)
            with tempfile.TemporaryDirectory(prefix="jwo-bench-") as folder:
                home = Path(folder)
                with WarehouseDb(home, home / "lake") as db:
                    db.refresh_views(TABLES.values())
                    worker = Consumer(
                        resources.events.name,
                        SqsReceiver(sqs, url),
                        LakeSink(LakeWriter(home / "lake"), db),
                        lambda: datetime.now(UTC),
                        receivers=in_flight,
                        batch_max=1_000,
                        linger_seconds=0.2,
                        wait_seconds=1,
                    )
                    stop = asyncio.Event()
                    started = time.perf_counter()
                    task = asyncio.create_task(worker.run(stop))
                    while worker.stats.consumed < len(bodies):
                        if task.done():
                            await task
                        await asyncio.sleep(0.01)
                    ours = len(bodies) / (time.perf_counter() - started)
                    stop.set()
                    await task
            figure("consumer_messages_per_s", ours)
            figure("consumer_vs_raw_ratio", ours / raw)
            figure("consumer_vs_raw_goal_ratio", 0.80)
    finally:
        aws.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="messages to decode and write")
    parser.add_argument(
        "--baseline-events", type=int, default=200_000, help="messages for the baseline (the previous path)"
    )
    parser.add_argument("--batch", type=int, default=5_000, help="messages per micro-batch")
    parser.add_argument(
        "--sqs-messages", type=int, default=5_000, help="messages through the embedded SQS (0: skip part (b))"
    )
    parser.add_argument("--in-flight", type=int, default=4, help="receive loops at once (both sides)")
    args = parser.parse_args()
    decode_and_write(args.events, args.baseline_events, args.batch)
    if args.sqs_messages > 0:
        asyncio.run(through_sqs(args.sqs_messages, args.in_flight))


if __name__ == "__main__":
    main()
