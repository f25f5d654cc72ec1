"""Wiring: builds the stages from one `Settings` and runs them in one asyncio loop.

This is the only place that knows which adapter backs which port (cosmicpython's bootstrap):
the embedded moto server or a configured AWS endpoint, SQLite stores under `JWO_HOME`, the
connectors' FastAPI app under uvicorn, the outbox relay, and the queue consumers writing the lake.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from aiobotocore.session import get_session
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from connectors.adapters.sqlite_outbox import SqliteOutbox
from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.app import Metrics, create_app
from connectors.directory import CachedDirectory
from connectors.service import ConnectorService
from contracts.aws import AwsEndpoint, QueueRef
from contracts.tables import TABLES
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.consumer import Consumer
from ingest.decode import decode_batch
from ingest.eventfeed import decode_event_batch
from ingest.ports import RowsRejectedError
from ingest.reports import ReportConsumer
from jwo.alerts import lake_backlog, open_alerting
from jwo.aws_resources import EmbeddedAws, Resources, provision, queue_depths, receive_config, resolve
from jwo.intraday import run_reports_consumer
from jwo.loops import BackgroundLoop
from jwo.payments import run_sender
from jwo.reconcile_facts import build_job, run_on_schedule
from jwo.relay_process import RelayConfig, RelayProcess
from jwo.serving import JoinedWritesHttpToolsProtocol
from jwo.settings import Settings
from warehouse.compact import compact_table
from warehouse.duck_writer import WarehouseDb
from warehouse.errors import TerminalWarehouseError, WarehouseError
from warehouse.lake import LakeWriter, janitor

log = logging.getLogger("jwo.runtime")

PARKED_OUTBOX = "connectors-outbox"
"""The name the connectors' parked outbox messages are alerted under, beside the dead-letter queues."""
_SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL while another waits for it, with the connectors on (default 0.005)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class LakeSink:
    """Ingest's TableSink over the warehouse: Parquet files first, then the DuckDB views."""

    def __init__(self, writer: LakeWriter, db: WarehouseDb | None) -> None:
        self._writer = writer
        self._db = db
        self._with_files: set[str] = set()
        self._views = threading.Lock()  # several consumers write at once; one DuckDB connection

    def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None:
        batch = {TABLES[name]: table_rows for name, table_rows in rows.items() if table_rows}
        try:
            self._writer.write_tables(batch, batch_id)
        except TerminalWarehouseError as exc:
            raise RowsRejectedError(str(exc)) from exc
        with self._views:
            fresh = [table for table in batch if table.name not in self._with_files]
            self._with_files.update(table.name for table in fresh)
            if fresh and self._db is not None:
                self._db.refresh_views(fresh)

    def stage(
        self, table: str, rows: Sequence[Mapping[str, object]]
    ) -> contextlib.AbstractContextManager[Sequence[Mapping[str, object]]]:
        """Start writing the rows' files (`LakeWriter.stage`): hand the context's value to `write` in place of the
        rows, which then renames the files into place with the rest of its batch."""
        try:
            return self._writer.stage(TABLES[table], rows)
        except TerminalWarehouseError as exc:
            raise RowsRejectedError(str(exc)) from exc


@dataclass
class Aws:
    endpoint: AwsEndpoint
    resources: Resources
    embedded: EmbeddedAws | None = None


@contextlib.asynccontextmanager
async def aws(settings: Settings) -> AsyncIterator[Aws]:
    """The embedded moto server with our resources, or the configured AWS (nothing created)."""
    if not settings.embedded:
        endpoint = settings.endpoint()
        yield Aws(endpoint, await resolve(endpoint, settings.resources))
        return
    embedded = EmbeddedAws(region=settings.aws_region, separate_process=True).start()
    try:
        resources = await provision(embedded.endpoint, settings.resources)
        yield Aws(embedded.endpoint, resources, embedded)
    finally:
        embedded.stop()


def _lower_priority(child_name: str, by: int) -> None:
    """Add `by` to the niceness of every thread of our child process `child_name` (Linux keeps one per
    thread; threads it starts later inherit their creator's)."""
    for child in multiprocessing.active_children():
        if child.name != child_name or child.pid is None:
            continue
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        except OSError:  # not Linux
            return
        for tid in tids:
            with contextlib.suppress(OSError):  # the thread is gone
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))


def _listen(host: str, port: int) -> socket.socket:
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # every keep-alive answer waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@dataclass
class Pipeline:
    """Handles on everything that runs; built by `running()`."""

    settings: Settings
    aws: Aws
    store: SqliteRetailerStore
    directory: CachedDirectory | None = None
    service: ConnectorService | None = None
    app: FastAPI | None = None
    outbox: SqliteOutbox | None = None
    consumers: list[Consumer] = field(default_factory=list)
    base_url: str = ""
    metrics_url: str = ""
    reports: list[ReportConsumer] = field(default_factory=list)
    depths: dict[str, tuple[int, int]] = field(default_factory=dict)
    """(visible, dead-lettered) per consumed queue, kept fresh by the consumers' loop."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def queue_depths(self) -> dict[str, tuple[int, int]]:
        """(visible, dead-lettered) messages per queue."""
        r = self.aws.resources
        refs = {"events": r.events, "eventfeed": r.eventfeed, "reports": r.reports}
        return {name: await queue_depths(self.aws.endpoint, ref) for name, ref in refs.items()}

    async def in_queue(self) -> int:
        """Messages on the consumed queues, visible or being processed."""
        total = 0
        async with get_session().create_client("sqs", **self.aws.endpoint.client_kwargs()) as sqs:
            for ref in (self.aws.resources.events, self.aws.resources.eventfeed, self.aws.resources.reports):
                attrs = await sqs.get_queue_attributes(
                    QueueUrl=ref.url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )
                values = attrs.get("Attributes", {})
                total += int(values.get("ApproximateNumberOfMessages", 0))
                total += int(values.get("ApproximateNumberOfMessagesNotVisible", 0))
        return total

    async def settle(self, within: float) -> bool:
        """Wait until the outbox is drained and the consumers emptied the queue (embedded shutdown:
        the emulator's queues vanish with the process, so nothing may be left on them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            pending = self.outbox.stats(utc_now())[0] if self.outbox is not None else 0
            if pending == 0 and (not self.consumers or await self.in_queue() == 0):
                return True
            await asyncio.sleep(0.2)
        return False


async def _refresh_directory(directory: CachedDirectory, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        try:
            if await asyncio.to_thread(directory.refresh):
                log.info("directory reloaded", extra={"generation": directory.generation})
        except Exception:
            log.exception("directory refresh failed; keeping the previous snapshot")


async def _prune(outbox: SqliteOutbox, retention: timedelta, stop: asyncio.Event) -> None:
    while not stop.is_set():
        keys, sent = await asyncio.to_thread(outbox.prune, utc_now(), retention)
        if keys or sent:
            log.info("pruned idempotency keys and sent messages", extra={"keys": keys, "sent": sent})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 3600)


def _consumer_gauges(
    metrics: Metrics, consumers: list[Consumer], depths: dict[str, tuple[int, int]], reports: list[ReportConsumer]
) -> Callable[[], None]:
    consumed = Gauge("jwo_consumer_messages_consumed", "Messages landed", ["queue"], registry=metrics.registry)
    lag = Gauge("jwo_consumer_oldest_age_seconds", "Age of the oldest message in the last batch", ["queue"],
                registry=metrics.registry)  # fmt: skip
    latency = Gauge("jwo_consumer_batch_seconds", "Write latency of the last batch", ["queue"],
                    registry=metrics.registry)  # fmt: skip
    failures = Gauge("jwo_consumer_write_failures", "Batches that failed to write", ["queue"],
                     registry=metrics.registry)  # fmt: skip
    visible = Gauge("jwo_queue_visible_messages", "Messages waiting on the queue", ["queue"],
                    registry=metrics.registry)  # fmt: skip
    dead = Gauge("jwo_queue_dead_letters", "Messages on the queue's dead-letter queue", ["queue"],
                 registry=metrics.registry)  # fmt: skip

    report_files = Gauge("jwo_intraday_files", "Intra-Day report files since start", ["outcome"],
                         registry=metrics.registry)  # fmt: skip
    report_rows = Gauge("jwo_intraday_rows", "Intra-Day report rows since start", ["kind"], registry=metrics.registry)

    def refresh() -> None:
        for r in reports:
            stats = r.stats
            report_files.labels("applied").set(stats.files_applied)
            report_files.labels("skipped").set(stats.files_skipped)
            report_files.labels("failed").set(stats.failures)
            report_rows.labels("in").set(stats.rows_in)
            report_rows.labels("upserted").set(stats.rows_upserted)
            report_rows.labels("quarantined").set(stats.rows_quarantined)
        for queue, (waiting, dead_lettered) in depths.items():
            visible.labels(queue).set(waiting)
            dead.labels(queue).set(dead_lettered)
        for c in consumers:
            consumed.labels(c.source).set(c.stats.consumed)
            lag.labels(c.source).set(c.stats.oldest_age_seconds)
            latency.labels(c.source).set(c.stats.last_batch_seconds)
            failures.labels(c.source).set(c.stats.write_failures)

    return refresh


async def _serve_metrics(
    settings: Settings,
    metrics: Metrics,
    refresh: Callable[[], None],
    pipeline: Pipeline,
    tasks: list[asyncio.Task[None]],
) -> uvicorn.Server:
    """`/metrics` and `/healthz` for a process without connectors (`jwo consume`)."""
    app = FastAPI(title="jwo consumer metrics", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/metrics")
    async def prometheus() -> Response:
        refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    sock = _listen(settings.ingest.metrics_host, settings.ingest.metrics_port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
    while not server.started:
        if tasks[-1].done():
            await tasks[-1]
            raise RuntimeError("the metrics server stopped during start-up")
        await asyncio.sleep(0.01)
    pipeline.metrics_url = f"http://{host}:{port}/metrics"
    log.info("metrics listening", extra={"url": pipeline.metrics_url})
    return server


async def _supervise(consumer: Consumer, stop: asyncio.Event) -> None:
    """Run a consumer until stopped; if it crashes, log it and start it again after a pause."""
    while not stop.is_set():
        try:
            await consumer.run(stop)
        except Exception:
            log.exception("consumer crashed; restarting in 1 s", extra={"queue": consumer.source})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def _compact_periodically(lake_dir: Path, every: float, stop: asyncio.Event) -> None:
    """The writer merges small batch files (warehouse.compact); readers see the same rows throughout."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        for table in TABLES.values():
            try:
                done = await asyncio.to_thread(compact_table, lake_dir, table)
            except WarehouseError:
                log.exception("compaction failed; the small files stay and are merged on the next run")
                continue
            for c in done:
                log.info(
                    "compacted",
                    extra={"table": table.name, "partition": c.directory.name, "files": c.inputs, "rows": c.rows_out},
                )


async def _watch_depths(
    endpoint: AwsEndpoint,
    queues: dict[str, QueueRef],
    every: float,
    into: dict[str, tuple[int, int]],
    stop: asyncio.Event,
) -> None:
    """Keep `into` at the (visible, dead-lettered) depth of each queue, for the metrics."""
    while not stop.is_set():
        for name, ref in queues.items():
            try:
                into[name] = await queue_depths(endpoint, ref)
            except Exception as exc:  # a metrics read must never stop the consumers
                log.warning("could not read the depth of queue %s: %s", name, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _supervise_reports(
    settings: Settings,
    endpoint: AwsEndpoint,
    resources: Resources,
    sink: LakeSink,
    reports: list[ReportConsumer],
    stop: asyncio.Event,
) -> None:
    """The Intra-Day reports consumer (S3 notifications → files → intraday_order_lines); restarted if it crashes."""
    while not stop.is_set():
        try:
            await run_reports_consumer(
                settings.ingest, settings.lake_dir, endpoint, settings.resources.reports_queue,
                resources.reports.url, sink, stop, started=reports.append,
            )  # fmt: skip
        except Exception:
            log.exception("reports consumer crashed; restarting in 1 s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def _run_consumers(
    settings: Settings,
    endpoint: AwsEndpoint,
    resources: Resources,
    sink: LakeSink,
    depths: dict[str, tuple[int, int]],
    reports: list[ReportConsumer],
    ready: concurrent.futures.Future[tuple[list[Consumer], asyncio.Event]],
    outbox_age: Callable[[], float | None] | None = None,
    outbox_parked: Callable[[], int] | None = None,
) -> None:
    """The consumers' whole life, on their background loop. `outbox_parked` counts the connectors' messages
    the queue refused for good: dead letters too, alerted like a dead-letter queue's."""
    try:
        stop = asyncio.Event()
        ing = settings.ingest
        config = receive_config(ing.wait_seconds)
        queues = {  # consumer source (the queue name) -> (queue, what its bodies mean)
            settings.resources.events_queue: (resources.events, decode_batch),
            settings.resources.eventfeed_queue: (resources.eventfeed, decode_event_batch),
        }
        alert_settings = settings.reconcile.alerts
        backlog_grace = timedelta(minutes=alert_settings.backlog_grace_minutes)
        async with (
            get_session().create_client("sqs", config=config, **endpoint.client_kwargs()) as sqs,
            open_alerting(alert_settings, sink, endpoint) as alerting,
        ):
            consumers = [
                Consumer(
                    source,
                    SqsReceiver(sqs, ref.url),
                    alerting.sink if decode is decode_event_batch else sink,
                    utc_now,
                    decode=decode,
                    receivers=ing.receivers,
                    batch_max=ing.batch_max,
                    linger_seconds=ing.linger_seconds,
                    wait_seconds=ing.wait_seconds,
                    visibility_timeout=settings.resources.visibility_timeout_seconds,
                    visibility_extension=ing.visibility_extension_seconds,
                    writes_in_flight=ing.writes_in_flight,
                )
                for source, (ref, decode) in queues.items()
            ]
            # What start-up built lives as long as the process: keep it out of the cyclic collector's scans, which
            # the consumers' batches (many new containers each) set off often.
            gc.freeze()
            ready.set_result((consumers, stop))
            alerts_stop = asyncio.Event()

            async def consume() -> None:
                try:
                    await asyncio.gather(
                        *(_supervise(c, stop) for c in consumers),
                        _compact_periodically(settings.lake_dir, ing.compact_interval_seconds, stop),
                        _watch_depths(
                            endpoint,
                            {name: ref for name, (ref, _) in queues.items()}
                            | {settings.resources.reports_queue: resources.reports},
                            ing.depth_poll_seconds,
                            depths,
                            stop,
                        ),
                        _supervise_reports(settings, endpoint, resources, sink, reports, stop),
                    )
                finally:
                    alerts_stop.set()  # the consumers flushed their last batch: deliver its alerts, then stop

            await asyncio.gather(
                consume(),
                alerting.run(
                    alerts_stop,
                    dead_letters=lambda: (
                        {queue: dead for queue, (_, dead) in depths.items()}
                        | ({PARKED_OUTBOX: outbox_parked()} if outbox_parked is not None else {})
                    ),
                    outbox_age=outbox_age,
                    backlog=lambda: lake_backlog(settings.lake_dir, backlog_grace, utc_now()),
                ),
            )
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


@contextlib.asynccontextmanager
async def running(settings: Settings, *, connectors: bool = True, consumers: bool = True) -> AsyncIterator[Pipeline]:
    """Start what was asked for; on exit stop taking requests, drain the outbox, flush the consumers.

    The connectors' HTTP server has this loop to itself; the relay and the consumers each run on a
    `BackgroundLoop` so their AWS calls never sit between a request and its answer.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(aws(settings))
        store = SqliteRetailerStore(settings.retailer_db)
        stack.callback(store.close)
        pipeline = Pipeline(settings=settings, aws=cloud, store=store)
        tasks: list[asyncio.Task[None]] = []
        server: uvicorn.Server | None = None
        metrics = Metrics()
        refresh_consumers = _consumer_gauges(metrics, pipeline.consumers, pipeline.depths, pipeline.reports)
        consumers_done: asyncio.Future[None] | None = None
        stop_consumers: Callable[[], None] | None = None

        if consumers:
            removed = janitor(settings.lake_dir)
            if removed:
                log.info("removed leftover temp files", extra={"count": removed})
            db = WarehouseDb(settings.home, settings.lake_dir)
            stack.callback(db.close)
            db.refresh_views(TABLES.values())
            sink = LakeSink(LakeWriter(settings.lake_dir), db)
            consumer_loop = BackgroundLoop("jwo-consumers").start()
            stack.callback(consumer_loop.close)
            consumers_ready: concurrent.futures.Future[tuple[list[Consumer], asyncio.Event]] = (
                concurrent.futures.Future()
            )
            consumers_done = asyncio.wrap_future(
                consumer_loop.submit(
                    _run_consumers(
                        settings,
                        cloud.endpoint,
                        cloud.resources,
                        sink,
                        pipeline.depths,
                        pipeline.reports,
                        consumers_ready,
                        outbox_age=lambda: pipeline.outbox.stats(utc_now())[1] if pipeline.outbox is not None else None,
                        outbox_parked=lambda: pipeline.outbox.parked() if pipeline.outbox is not None else 0,
                    )
                )
            )
            started, consumer_stop_event = await asyncio.wrap_future(consumers_ready)
            pipeline.consumers.extend(started)
            stop_consumers = functools.partial(consumer_loop.call, consumer_stop_event.set)

        relay: RelayProcess | None = None
        if connectors:
            cs = settings.connectors
            # The outbox writer thread gets the GIL back after every SQLite call (each releases it) and
            # after every fsync; with the default 5 ms switch interval a busy event loop makes it wait
            # that long each time, and every request in its commit group waits with it.
            stack.callback(sys.setswitchinterval, sys.getswitchinterval())
            sys.setswitchinterval(_SWITCH_INTERVAL)
            directory = CachedDirectory(store)
            outbox = SqliteOutbox(
                settings.outbox_db, commit_timeout=cs.commit_timeout_seconds, on_group=metrics.observe_group
            )
            stack.callback(outbox.close)
            relay = RelayProcess(
                RelayConfig(
                    outbox_path=settings.outbox_db,
                    endpoint=cloud.endpoint,
                    queue_url=cloud.resources.events.url,
                    in_flight=cs.relay_in_flight,
                    max_backoff=cs.relay_max_backoff_seconds,
                    log_level=settings.log_level,
                    log_format=settings.log_format,
                    nice=cs.background_nice,
                )
            )
            stack.callback(relay.kill)
            if cloud.embedded is not None:
                _lower_priority("jwo-moto", cs.background_nice)
            await relay.ready()
            relay_counters = relay  # a name the metrics closure sees as never None

            service = ConnectorService(directory, outbox, utc_now, default_currency=cs.default_currency)

            def refresh_metrics() -> None:
                depth, age = outbox.stats(utc_now())
                metrics.outbox_depth.set(depth)
                metrics.outbox_age.set(age)
                metrics.outbox_parked.set(outbox.parked())
                metrics.relay_errors.set(relay_counters.errors.value)
                metrics.relay_sent.set(relay_counters.sent.value)
                refresh_consumers()

            app = create_app(service, cs, metrics=metrics, refresh_metrics=refresh_metrics)
            sock = _listen(cs.host, cs.port)
            host, port = sock.getsockname()[:2]
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=5,
                    timeout_keep_alive=75,  # above a load balancer's idle timeout (ALB: 60 s), or it sees 502s
                    http=JoinedWritesHttpToolsProtocol,  # an answer's head and body in one send
                )
            )
            pipeline.directory, pipeline.service, pipeline.app = directory, service, app
            pipeline.outbox = outbox
            pipeline.base_url = f"http://{host}:{port}"
            tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
            tasks.append(
                asyncio.create_task(_refresh_directory(directory, cs.directory_refresh_seconds, pipeline.stop))
            )
            tasks.append(
                asyncio.create_task(_prune(outbox, timedelta(hours=cs.idempotency_retention_hours), pipeline.stop))
            )
            while not server.started:
                if tasks[0].done():
                    await tasks[0]
                    raise RuntimeError("the connector server stopped during start-up")
                await asyncio.sleep(0.01)
            log.info("connectors listening", extra={"url": pipeline.base_url})
            # What start-up built (modules, the app and its models, the directory) lives as long as the
            # process: keep it out of the cyclic collector's full scans, each a pause of every request.
            gc.freeze()

        if consumers:  # the lake's one writer also runs reconciliation
            job = build_job(settings.lake_dir, store, settings.reconcile)
            tasks.append(asyncio.create_task(run_on_schedule(job, settings.reconcile.interval_seconds, pipeline.stop)))
            # Payment-Service requests (payoff reports, refunds) queued by the CLI; refund answers land in the lake.
            tasks.append(asyncio.create_task(run_sender(settings, pipeline.stop)))

        if consumers and not connectors and settings.ingest.metrics_port >= 0:
            server = await _serve_metrics(settings, metrics, refresh_consumers, pipeline, tasks)

        try:
            yield pipeline
        finally:
            if server is not None:
                server.should_exit = True
            pipeline.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if relay is not None:
                await relay.stop()  # the relay drains the outbox, then ends
            if cloud.embedded is not None and pipeline.consumers and not await pipeline.settle(within=30.0):
                log.warning("the embedded queues still held messages at shutdown")
            if stop_consumers is not None:
                stop_consumers()
            if consumers_done is not None:
                await asyncio.gather(consumers_done, return_exceptions=True)
