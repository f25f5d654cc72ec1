"""`jwo demo`: the whole pipeline on the embedded default, driven by a simulated day, checked against
the simulator's answer key.

Steps: a fresh `JWO_HOME/demo`, the retailer's shoppers and catalog written as files and loaded
through the same import path as `jwo shoppers import` / `jwo catalog import`, then everything
`jwo up` runs (embedded AWS, connectors on a free loopback port, outbox relay, consumers), the
scenario played over real HTTP, and a wait until the warehouse holds what the answer key says.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.imports import import_catalog_file, import_shoppers_file
from contracts.tables import TABLES
from jwo.payments import deliver_now, settle_debt
from jwo.reconcile_facts import Score, build_job, score
from jwo.runtime import running
from jwo.settings import Settings
from simulator.driver import RunReport, run_scenario
from simulator.eventfeed import FeedConfig, build_feed, play_feed
from simulator.files import write_retailer_files
from simulator.intraday import IntradayConfig, build_day, publish_day
from simulator.payment_service import (
    LOCAL_ACCESS_KEY,
    LOCAL_REGION,
    LOCAL_SECRET_KEY,
    PaymentServiceState,
    running_payment_service,
)
from simulator.scenario import ScenarioConfig, build_scenario
from simulator.settlement import SettlementDay, build_settlement_day
from simulator.truth import build_answer_key
from warehouse.errors import WarehouseError
from warehouse.lake import LakeWriter
from warehouse.query import run_query

LAND_WITHIN_SECONDS = 60.0
"""How long the demo waits for the warehouse to catch up after the last answer."""


@dataclass(frozen=True)
class TableCheck:
    table: str
    expected: int
    landed: int

    @property
    def ok(self) -> bool:
        return self.expected == self.landed


def demo_settings(settings: Settings) -> Settings:
    """The demo's own state under `JWO_HOME/demo`, embedded AWS, connectors on a free loopback port."""
    connectors = settings.connectors.model_copy(update={"host": "127.0.0.1", "port": 0})
    return settings.model_copy(
        update={"home": settings.home / "demo", "aws_mode": "embedded", "connectors": connectors}
    )


def count_rows(settings: Settings, tables: list[str]) -> dict[str, int]:
    """Rows per table as an analyst sees them (`jwo sql`: the Parquet lake, no writer lock)."""
    counts: dict[str, int] = {}
    for table in tables:
        try:
            result = run_query(settings.lake_dir, f"select count(*) from {table}")
        except WarehouseError:
            counts[table] = 0
            continue
        value = result.rows[0][0] if result.rows else 0
        counts[table] = value if isinstance(value, int) else 0
    return counts


async def wait_for_tables(settings: Settings, expected: dict[str, int], within: float) -> list[TableCheck]:
    """Poll the warehouse until every table holds its expected row count (or time runs out)."""
    deadline = time.monotonic() + within
    while True:
        landed = await asyncio.to_thread(count_rows, settings, list(expected))
        checks = [TableCheck(name, want, landed.get(name, 0)) for name, want in expected.items()]
        if all(check.ok for check in checks) or time.monotonic() > deadline:
            return checks
        await asyncio.sleep(0.25)


async def run_demo(settings: Settings, *, shoppers: int, stores: int, seed: int, console: Console) -> int:
    """Run the demo; returns the process exit code (0: every answer and every table as expected)."""
    demo = demo_settings(settings)
    shutil.rmtree(demo.home, ignore_errors=True)
    demo.home.mkdir(parents=True)
    started = time.monotonic()

    scenario = build_scenario(ScenarioConfig(seed=seed, shoppers=shoppers, stores=stores))
    key = build_answer_key(scenario)
    feed = build_feed(scenario, key, FeedConfig(seed=seed))
    reports = build_day(IntradayConfig(seed=seed))
    expected = (
        key.tables.model_dump()
        | feed.key.table_counts()
        | {
            "intraday_order_lines": len(reports.expected_lines),
            "quarantine": reports.expected_quarantined,
            "intraday_files": len(reports.files),
        }
    )
    files = write_retailer_files(scenario, demo.home / "retailer-files")
    store = SqliteRetailerStore(demo.retailer_db)
    try:
        loaded_shoppers = import_shoppers_file(store, files.shoppers)
        loaded_items = import_catalog_file(store, files.catalog)
    finally:
        store.close()
    console.print(
        f"scenario seed {seed}: {len(scenario.shoppers)} shoppers in {len(scenario.stores)} stores, "
        f"{len(scenario.requests)} requests; imported {loaded_shoppers} shoppers and {loaded_items} catalog items"
    )
    console.print(
        f"event feed: {feed.key.events} events in {feed.key.deliveries} deliveries "
        f"({feed.key.duplicates} duplicates, {feed.key.malformed} malformed); "
        f"intra-day reports: {len(reports.files)} files, {len(reports.deliveries)} notifications"
    )

    async with running(demo, connectors=True, consumers=True) as pipeline:
        console.print(f"embedded AWS at {pipeline.aws.endpoint.endpoint_url}; connectors at {pipeline.base_url}")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("playing Amazon's side", total=len(scenario.requests))
            report = await run_scenario(
                pipeline.base_url, scenario, progress=lambda n: progress.update(task, completed=n)
            )
            progress.add_task("Amazon's Event Feed (EventBridge)", total=None)
            resources = pipeline.aws.resources
            played = await play_feed(pipeline.aws.endpoint, resources.event_bus_name, resources.eventfeed.url, feed)
            progress.add_task("Amazon's Intra-Day reports (S3 → SNS → SQS)", total=None)
            await publish_day(pipeline.aws.endpoint, resources.reports_bucket, resources.reports_topic_arn, reports)
            progress.add_task("landing in the warehouse", total=None)
            checks = await wait_for_tables(demo, expected, LAND_WITHIN_SECONDS)
        dead = await pipeline.queue_depths()
        settlement_day = build_settlement_day()
        scored = await asyncio.to_thread(_reconcile_settlement_day, demo, pipeline.store, settlement_day)
        payoff = await asyncio.to_thread(_settle_one_debt, demo, pipeline.store, settlement_day)

    elapsed = time.monotonic() - started
    _print_summary(console, report, checks, dead, elapsed, demo)
    console.print(scored.line())
    console.print(payoff.line())
    if played.failures:
        console.print(f"[red]the event bus refused {len(played.failures)} events[/red]: {played.failures[0]}")
    ok = (
        not report.mismatches
        and not played.failures
        and all(check.ok for check in checks)
        and all(d == 0 for _, d in dead.values())
        and scored.in_expected_state == scored.trips
        and scored.money_difference == 0
        and payoff.delivered
    )
    console.print("[green]demo passed[/green]" if ok else "[red]demo FAILED[/red]")
    return 0 if ok else 1


def _reconcile_settlement_day(settings: Settings, store: SqliteRetailerStore, day: SettlementDay) -> Score:
    """Reconcile the simulator's settlement day (every anomaly of SPEC §5) and score it against its key."""
    key = day.key
    assert key is not None
    LakeWriter(settings.lake_dir).write_tables(
        {TABLES[name]: rows for name, rows in day.tables().items()}, "demo-settlement-day"
    )
    build_job(settings.lake_dir, store, settings.reconcile, clock=lambda: key.as_of).run(day=key.business_date)
    return score(settings.lake_dir, key)


@dataclass(frozen=True)
class PayoffCheck:
    shopping_trip_id: str
    amount: str
    delivered: bool
    detail: str

    def line(self) -> str:
        if self.delivered:
            return (
                f"debt payoff: trip {self.shopping_trip_id} settled ({self.amount}), payment-status report "
                "delivered to Amazon's Payment Service (local simulator, SigV4-checked)"
            )
        return f"[red]debt payoff: the payment-status report was not delivered[/red]: {self.detail}"


def _settle_one_debt(settings: Settings, store: SqliteRetailerStore, day: SettlementDay) -> PayoffCheck:
    """Finance settles one of the settlement day's debts; the payoff report goes to the local Payment Service."""
    key = day.key
    assert key is not None
    owed = next(t for t in key.trips if t.debt)
    state = PaymentServiceState()
    with running_payment_service(state) as amazon:
        pay = settings.payments.model_copy(
            update={"endpoint_url": amazon.url, "region": LOCAL_REGION, "fraud_abuse_stores": ["*"]}
        )
        local = settings.model_copy(
            update={"payments": pay, "aws_access_key_id": LOCAL_ACCESS_KEY, "aws_secret_access_key": LOCAL_SECRET_KEY}
        )
        payoff = settle_debt(local, store, owed.shopping_trip_id, None)
        assert payoff.request is not None
        delivery = asyncio.run(deliver_now(local, payoff.request.request_id))
    reported = state.payment_status.get((owed.store_id, owed.shopping_trip_id))
    delivered = delivery is not None and delivery.outcome == "delivered" and reported is not None
    detail = "no answer" if delivery is None else f"{delivery.outcome}: {delivery.detail}"
    return PayoffCheck(owed.shopping_trip_id, f"{payoff.debt.amount} {payoff.debt.currency}", delivered, detail)


def _print_summary(
    console: Console,
    report: RunReport,
    checks: list[TableCheck],
    dead: dict[str, tuple[int, int]],
    elapsed: float,
    settings: Settings,
) -> None:
    requests = RichTable(title="Connector answers")
    requests.add_column("endpoint")
    requests.add_column("requests", justify="right")
    for endpoint, count in sorted(report.by_endpoint.items()):
        requests.add_row(endpoint, str(count))
    requests.add_row("all", f"{report.sent}", end_section=True)
    console.print(requests)
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(report.statuses.items()))
    console.print(
        f"statuses {statuses}; latency p50 {report.latency_ms(50):.1f} ms, p99 {report.latency_ms(99):.1f} ms, "
        f"max {report.latency_ms(100):.1f} ms; answers not as expected: {len(report.mismatches)}"
    )
    for mismatch in report.mismatches[:10]:
        console.print(f"  [red]{mismatch}[/red]", highlight=False)

    tables = RichTable(title="Warehouse rows (jwo sql) vs the simulator's answer key")
    tables.add_column("table")
    tables.add_column("expected", justify="right")
    tables.add_column("landed", justify="right")
    tables.add_column("")
    for check in checks:
        tables.add_row(check.table, str(check.expected), str(check.landed), "ok" if check.ok else "[red]MISMATCH[/red]")
    console.print(tables)
    for queue, (visible, dead_lettered) in dead.items():
        console.print(f"queue {queue}: {visible} waiting, {dead_lettered} dead-lettered")
    console.print(f"state in {settings.home} (try: JWO_HOME={settings.home} jwo sql 'select * from purchases limit 5')")
    console.print(f"finished in {elapsed:.1f} s")
