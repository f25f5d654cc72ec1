"""`jwo`: run the pipeline, query the warehouse, manage the retailer's shoppers and catalog."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table as RichTable

from connectors.adapters.sqlite_outbox import SqliteOutboxQueue
from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.errors import ImportFileError
from connectors.imports import import_catalog_file, import_shoppers_file, parse_shoppers
from connectors.ports import Shopper
from contracts.tables import INTRADAY_ORDER_LINES
from ingest.intraday import ReportFileError
from jwo import eventloop, logs
from jwo.intraday import ReplayError, build_applier, ingest_sources, replay_day
from jwo.payments import LakeRefunds, PayoffError, deliver_now, drain_now, issue_refund, open_outbox, settle_debt
from jwo.reconcile_facts import build_job, settlement_report
from jwo.runtime import LakeSink, running
from jwo.settings import Settings
from reconcile.errors import RefundRefusedError
from reconcile.job import DebtNotFoundError
from reconcile.payment_sender import Delivery
from reconcile.payments import QueuedRequest
from warehouse.errors import WarehouseError
from warehouse.lake import LakeWriter
from warehouse.merge import merge_table
from warehouse.query import QueryResult, run_query
from warehouse.render import render
from warehouse.views import quote_literal

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
shoppers_app = typer.Typer(help="The identity store: who may enter.", no_args_is_help=True)
catalog_app = typer.Typer(help="The catalog the Ordering Connector prices carts with.", no_args_is_help=True)
app.add_typer(shoppers_app, name="shoppers")
app.add_typer(catalog_app, name="catalog")
ingest_app = typer.Typer(help="Load files into the warehouse by hand (backfills, re-runs).", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
debts_app = typer.Typer(help="Bad debts: shoppers refused at the gate until settled.", no_args_is_help=True)
app.add_typer(debts_app, name="debts")
report_app = typer.Typer(help="Finance reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")
replay_app = typer.Typer(help="Rebuild tables from the raw files kept in the lake.", no_args_is_help=True)
app.add_typer(replay_app, name="replay")
refunds_app = typer.Typer(help="Refunds through Amazon's Payment Service.", no_args_is_help=True)
app.add_typer(refunds_app, name="refunds")
payments_app = typer.Typer(
    help="Requests we owe Amazon's Payment Service (payment-status reports, refunds).", no_args_is_help=True
)
app.add_typer(payments_app, name="payments")
outbox_app = typer.Typer(
    help="The connectors' outbox: the events they answered for, on their way to SQS.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")

console = Console()
errors = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _settings() -> Settings:
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=1)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(settings: Settings, *, connectors: bool, consumers: bool) -> None:
    async with running(settings, connectors=connectors, consumers=consumers) as pipeline:
        where = "embedded AWS (moto server) at " if settings.embedded else "AWS at "
        errors.print(f"[green]ready[/green]: {where}{pipeline.aws.endpoint.endpoint_url or settings.aws_region}")
        if pipeline.base_url:
            errors.print(f"connectors on {pipeline.base_url} (metrics at {pipeline.base_url}/metrics)")
        if pipeline.metrics_url:
            errors.print(f"metrics at {pipeline.metrics_url}")
        errors.print("Ctrl-C or SIGTERM stops after draining in-flight work.")
        await _until_signalled()
        errors.print("stopping: draining the outbox and the consumers ...")


HostOpt = Annotated[str | None, typer.Option(help="interface to listen on (default 127.0.0.1)")]
PortOpt = Annotated[int | None, typer.Option(help="port to listen on (default 8000)")]


def _with_listen(settings: Settings, host: str | None, port: int | None) -> Settings:
    updates: dict[str, object] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if updates:
        settings.connectors = settings.connectors.model_copy(update=updates)
    return settings


@app.command()
def up(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run everything: AWS (embedded unless configured), connectors, relay and consumers."""
    settings = _with_listen(_settings(), host, port)
    asyncio.run(_run(settings, connectors=True, consumers=True))


@app.command()
def serve(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run the connectors and their outbox relay only (production: consumers run elsewhere)."""
    settings = _with_listen(_settings(), host, port)
    eventloop.run(_run(settings, connectors=True, consumers=False))


@app.command()
def consume() -> None:
    """Run the queue consumers only (the one DuckDB writer of this JWO_HOME)."""
    asyncio.run(_run(_settings(), connectors=False, consumers=True))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="a read-only SQL query over the warehouse tables")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")] = OutputFormat.table,
) -> None:
    """Run a read-only query over the warehouse (reads the Parquet lake; never takes the writer's lock)."""
    settings = Settings()
    try:
        result = run_query(settings.lake_dir, query)
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(render(result, format.value))
    if format is OutputFormat.json:
        sys.stdout.write("\n")


@app.command()
def demo(
    shoppers: Annotated[int, typer.Option(help="shoppers in the scenario")] = 200,
    stores: Annotated[int, typer.Option(help="stores in the scenario")] = 3,
    seed: Annotated[int, typer.Option(help="scenario seed (same seed, same day)")] = 7,
) -> None:
    """Run the whole pipeline on the embedded default with a simulated day, then print a summary."""
    from jwo.demo import run_demo

    settings = Settings()
    logs.configure("WARNING", settings.log_format)
    code = asyncio.run(run_demo(settings, shoppers=shoppers, stores=stores, seed=seed, console=console))
    raise typer.Exit(code=code)


# --- shoppers and catalog ----------------------------------------------------------------------


@contextlib.contextmanager
def _store() -> Iterator[SqliteRetailerStore]:
    settings = Settings()
    store = SqliteRetailerStore(settings.retailer_db)
    try:
        yield store
    finally:
        store.close()


FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header row, or JSON list")]


@shoppers_app.command("import")
def shoppers_import(file: FileArg) -> None:
    """Load or update shoppers from a file (shopper_id, identity_key, visitor_type, phone_number, status)."""
    with _store() as store:
        try:
            count = import_shoppers_file(store, file)
        except ImportFileError as exc:
            raise _fail(str(exc)) from None
    console.print(f"imported {count} shopper(s) from {file}")


@shoppers_app.command("add")
def shoppers_add(
    shopper_id: Annotated[str, typer.Option(help="our stable shopper id")],
    identity_key: Annotated[str, typer.Option(help="the decoded key the app puts in the QR code")],
    visitor_type: Annotated[str, typer.Option(help="SHOPPER, ASSOCIATE or CASH_SHOPPER")] = "SHOPPER",
    phone_number: Annotated[str | None, typer.Option(help="E.123, e.g. '+1 617 555 1234'")] = None,
) -> None:
    """Add or update one shopper (active)."""
    row = {"shopper_id": shopper_id, "identity_key": identity_key, "visitor_type": visitor_type,
           "phone_number": phone_number or "", "status": "active"}  # fmt: skip
    with _store() as store:
        try:
            store.upsert_shoppers(parse_shoppers([(1, row)], "command line"))
        except ImportFileError as exc:
            raise _fail(str(exc)) from None
    console.print(f"shopper {shopper_id} saved")


def _set_status(shopper_id: str, status: Literal["active", "blocked"]) -> None:
    with _store() as store:
        if not store.set_status(shopper_id, status):
            raise _fail(f"no shopper {shopper_id!r}")
    console.print(f"shopper {shopper_id} is now {status} (the gate follows within seconds)")


@shoppers_app.command("block")
def shoppers_block(shopper_id: str) -> None:
    """Refuse this shopper at the gate."""
    _set_status(shopper_id, "blocked")


@shoppers_app.command("unblock")
def shoppers_unblock(shopper_id: str) -> None:
    """Admit this shopper at the gate again."""
    _set_status(shopper_id, "active")


@shoppers_app.command("show")
def shoppers_show(shopper_id: str) -> None:
    """Show a shopper, whether the gate admits them, and their debts."""
    with _store() as store:
        shopper: Shopper | None = store.get_shopper(shopper_id)
        if shopper is None:
            raise _fail(f"no shopper {shopper_id!r}")
        debts = store.debts(shopper_id)
    table = RichTable(show_header=False)
    open_debts = [d for d in debts if d.status == "OPEN"]
    admitted = shopper.status == "active" and not open_debts
    for key, value in (
        ("shopper_id", shopper.shopper_id),
        ("visitor_type", shopper.visitor_type),
        ("status", shopper.status),
        ("phone_number", _mask_phone(shopper.phone_number)),
        ("gate", "ACCEPT" if admitted else "REJECT"),
        ("open debts", ", ".join(f"{d.shopping_trip_id} {d.amount} {d.currency}" for d in open_debts) or "none"),
    ):
        table.add_row(key, value)
    console.print(table)


def _mask_phone(number: str | None) -> str:
    if not number:
        return ""
    return "*" * max(0, len(number) - 4) + number[-4:]


@catalog_app.command("import")
def catalog_import(file: FileArg) -> None:
    """Load or update catalog items (store_id, sku, name, barcodes, unit_price, currency, tax_rate, ...)."""
    with _store() as store:
        try:
            count = import_catalog_file(store, file)
        except ImportFileError as exc:
            raise _fail(str(exc)) from None
    console.print(f"imported {count} catalog item(s) from {file}")


# --- ingest ------------------------------------------------------------------------------------


@ingest_app.command("intraday")
def ingest_intraday(
    sources: Annotated[list[str], typer.Argument(help="report files, folders of them, or s3://bucket/prefix")],
) -> None:
    """Apply Intra-Day report files (each file version once; rows upserted latest-wins; bad rows quarantined)."""
    settings = _settings()
    applier = build_applier(
        settings.ingest, settings.lake_dir, LakeSink(LakeWriter(settings.lake_dir), None), merge_each_file=False
    )
    endpoint = None if settings.embedded else settings.endpoint()
    if endpoint is None and any(s.startswith("s3://") for s in sources):
        raise _fail("an s3:// source needs AWS (set JWO_AWS_MODE=aws or JWO_AWS_ENDPOINT_URL)")
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task("intraday files", total=None)
        try:
            stats = asyncio.run(
                ingest_sources(
                    applier, sources, endpoint, lambda done, total: progress.update(task, completed=done, total=total)
                )
            )
            progress.update(task, description="merging each day's lines")
            merge_table(settings.lake_dir, INTRADAY_ORDER_LINES)  # once, not after every file of a backfill
        except (ReportFileError, WarehouseError, OSError) as exc:
            raise _fail(str(exc)) from None
    table = RichTable(title="Intra-Day reports", show_header=False)
    for label, value in (
        ("files applied", stats.files_applied),
        ("skipped as already applied", stats.files_skipped),
        ("rows in", stats.rows_in),
        ("rows upserted", stats.rows_upserted),
        ("rows quarantined", stats.rows_quarantined),
    ):
        table.add_row(label, str(value))
    console.print(table)


# --- reconciliation, debts, reports ----------------------------------------------------------------


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    parquet = "parquet"
    html = "html"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"not a date (YYYY-MM-DD): {text!r}") from None


@app.command()
def reconcile(
    day: Annotated[str | None, typer.Option("--date", help="every trip of this UTC day (YYYY-MM-DD)")] = None,
    since: Annotated[str | None, typer.Option("--since", help="trips with a fact since this ISO time")] = None,
) -> None:
    """Match purchases, payment events and reports: trip states, bad debts, alerts, daily settlement."""
    settings = _settings()
    try:
        since_at = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise _fail(f"not an ISO date-time: {since!r}") from None
    with _store() as store, console.status("reconciling ..."):
        report = build_job(settings.lake_dir, store, settings.reconcile).run(
            day=_day(day) if day else None, since=since_at
        )
    console.print(
        f"{report.trips} trips, {report.changed} changed, {report.transitions} transitions, "
        f"{report.debts_opened} debts opened, {report.debts_closed} closed, {report.alerts} alerts"
    )


@debts_app.command("list")
def debts_list(open_only: Annotated[bool, typer.Option("--open/--all", help="open debts only")] = True) -> None:
    """Debts by opening time."""
    where = " where status = 'OPEN'" if open_only else ""
    result = run_query(
        Settings().lake_dir,
        "select debt_id, shopping_trip_id, shopper_id, store_id, amount, currency, reason, status, opened_at,"
        f" settled_at from bad_debts{where} order by opened_at",
    )
    sys.stdout.write(render(result, "table"))


def _amount(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise _fail(f"not an amount: {text!r}") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise _fail(f"an amount must be positive, in cents (e.g. 12.34): {text!r}")
    return value


def _try_delivery(settings: Settings, request_id: str, what: str) -> Delivery | None:
    """One try right after queueing; says what happened (delivered, refused, or still queued and why)."""
    if not settings.payments.endpoint_url:
        console.print(
            f"{what} queued (request {request_id}); no Payment Service endpoint is configured "
            "(JWO_PAYMENTS__ENDPOINT_URL), so it waits in JWO_HOME/payments.db: see `jwo payments list`"
        )
        return None
    delivery = asyncio.run(deliver_now(settings, request_id))
    if delivery is None:
        queued = _outbox_row(settings, request_id)
        state = queued.status if queued is not None else "unknown"
        console.print(f"{what}: request {request_id} is {state} (not due for a try now)")
    elif delivery.outcome == "delivered":
        console.print(f"{what} delivered to Amazon (request {request_id}): {delivery.detail}")
    elif delivery.outcome == "failed":
        console.print(f"[red]{what} refused by Amazon[/red] (request {request_id}): {delivery.detail}")
    else:
        when = delivery.next_attempt_at.isoformat(timespec="seconds") if delivery.next_attempt_at else "later"
        console.print(
            f"[yellow]{what} queued[/yellow]: Amazon not reachable ({delivery.detail}); `jwo up` (or "
            f"`jwo payments send`) delivers it, next try from {when} (request {request_id})"
        )
    return delivery


def _outbox_row(settings: Settings, request_id: str) -> QueuedRequest | None:
    with open_outbox(settings) as outbox:
        return outbox.get(request_id)


@debts_app.command("settle")
def debts_settle(
    trip: Annotated[str, typer.Argument(help="the shopping trip id of the debt")],
    amount: Annotated[str | None, typer.Option(help="amount paid (default: the whole debt)")] = None,
) -> None:
    """Record a payoff; a fully paid debt closes and the shopper is admitted at the gate again. In an
    Amazon-managed fraud-and-abuse store (JWO_PAYMENTS__FRAUD_ABUSE_STORES) the payoff is reported to Amazon."""
    settings = _settings()
    paid = _amount(amount)
    with _store() as store:
        try:
            payoff = settle_debt(settings, store, trip, paid)
        except (DebtNotFoundError, PayoffError) as exc:
            raise _fail(str(exc)) from None
    debt = payoff.debt
    console.print(f"trip {trip}: debt {debt.status} (remaining {debt.amount} {debt.currency})")
    if payoff.request is None:
        console.print(f"store {debt.store_id} manages its own fraud and abuse: nothing reported to Amazon")
        return
    _try_delivery(settings, payoff.request.request_id, "payment-status report")


@debts_app.command("write-off")
def debts_write_off(trip: Annotated[str, typer.Argument(help="the shopping trip id of the debt")]) -> None:
    """Write the debt off; the shopper is admitted at our gate again. Nothing is reported to Amazon: no payment was
    received, and the payment-status report is for payoffs."""
    settings = _settings()
    with _store() as store:
        try:
            debt = build_job(settings.lake_dir, store, settings.reconcile).close_debt(trip, "WRITTEN_OFF", None)
        except DebtNotFoundError as exc:
            raise _fail(str(exc)) from None
    console.print(f"trip {trip}: debt {debt.status} (remaining {debt.amount} {debt.currency})")
    console.print("not reported to Amazon: a write-off is not a payoff (Amazon keeps its own view of the card)")


@refunds_app.command("issue")
def refunds_issue(
    trip: Annotated[str, typer.Argument(help="the shopping trip id to refund")],
    amount: Annotated[str, typer.Option(help="amount to refund, e.g. 4.99")],
    reason: Annotated[str, typer.Option(help="refundReasonCode sent to Amazon, e.g. DAMAGED_ITEM")],
    key: Annotated[
        str, typer.Option(help="a reference that makes a second refund of the same amount and reason a new refund")
    ] = "",
) -> None:
    """Refund a captured trip through Amazon's Payment Service (idempotent: the same refund twice is one refund)."""
    settings = _settings()
    value = _amount(amount)
    assert value is not None
    try:
        issued = issue_refund(settings, trip, value, reason, key)
    except RefundRefusedError as exc:
        raise _fail(f"refund refused: {exc}") from None
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    refund = issued.refund
    if not issued.new:
        console.print(
            f"refund {refund.refund_id} of {refund.amount} {refund.currency} for trip {trip} was issued before "
            f"(status {refund.status}); nothing new sent. Use --key for a second refund of the same amount."
        )
        if issued.queued is None or issued.queued.status != "QUEUED":
            return
    else:
        console.print(f"refund {refund.refund_id}: {refund.amount} {refund.currency} for trip {trip} recorded")
    _try_delivery(settings, issued.request.request_id, "refund")
    after = LakeRefunds(settings.lake_dir).refund(refund.refund_id)
    if after is not None and after.status != "REQUESTED":
        console.print(f"refund {after.refund_id} is {after.status}" + (f": {after.message}" if after.message else ""))


@refunds_app.command("list")
def refunds_list(trip: Annotated[str | None, typer.Option(help="one trip only")] = None) -> None:
    """Refunds by the time they were issued, with Amazon's answer."""
    where = f" where shopping_trip_id = {quote_literal(trip)}" if trip else ""
    result = run_query(
        Settings().lake_dir,
        "select refund_id, shopping_trip_id, store_id, amount, currency, reason_code, status, business_date, "
        f"requested_at, answered_at, message from refunds{where} order by requested_at, refund_id",
    )
    sys.stdout.write(render(result, "table"))


@payments_app.command("list")
def payments_list(
    status: Annotated[str | None, typer.Option(help="QUEUED, DELIVERED or FAILED")] = None,
    limit: Annotated[int, typer.Option(help="newest first, at most this many")] = 100,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")] = OutputFormat.table,
) -> None:
    """Requests for Amazon's Payment Service (payment-status reports, refunds) and whether they were delivered."""
    if status is not None and status not in ("QUEUED", "DELIVERED", "FAILED"):
        raise _fail(f"status must be QUEUED, DELIVERED or FAILED, not {status!r}")
    with open_outbox(Settings()) as outbox:
        rows = outbox.requests(status, limit)
    columns = ("request_id", "operation", "store_id", "shopping_trip_id", "status", "attempts", "queued_at",
               "next_attempt_at", "finished_at", "detail")  # fmt: skip
    result = QueryResult(
        columns,
        ("VARCHAR",) * 5 + ("BIGINT",) + ("TIMESTAMPTZ",) * 3 + ("VARCHAR",),
        [
            (
                q.request.request_id,
                q.request.operation,
                q.request.store_id,
                q.request.shopping_trip_id,
                q.status,
                q.attempts,
                q.queued_at,
                q.next_attempt_at,
                q.finished_at,
                (q.response if q.status == "DELIVERED" else q.last_error) or "",
            )
            for q in rows
        ],
    )
    sys.stdout.write(render(result, format.value))
    if format is OutputFormat.json:
        sys.stdout.write("\n")


@payments_app.command("send")
def payments_send() -> None:
    """Deliver every queued request that is due now (what `jwo up` does every few seconds)."""
    settings = _settings()
    deliveries = asyncio.run(drain_now(settings))
    if deliveries is None:
        raise _fail("no Payment Service endpoint is configured (JWO_PAYMENTS__ENDPOINT_URL)")
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d.outcome] = counts.get(d.outcome, 0) + 1
    console.print(
        f"{len(deliveries)} request(s) tried: "
        + (", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing was due")
    )


@contextlib.contextmanager
def _outbox_queue() -> Iterator[SqliteOutboxQueue]:
    """The outbox file of `JWO_HOME` (WAL: safe beside a running `jwo up`); an error if there is none yet."""
    path = Settings().outbox_db
    if not path.exists():
        raise _fail(f"no outbox at {path}: the connectors have not run with this JWO_HOME")
    queue = SqliteOutboxQueue(path)
    try:
        yield queue
    finally:
        queue.close()


@outbox_app.command("status")
def outbox_status() -> None:
    """Messages waiting for the relay, the oldest one's age, and the messages parked because SQS refused them."""
    with _outbox_queue() as queue:
        pending, age = queue.stats(datetime.now().astimezone())
        parked = queue.parked()
    console.print(f"pending {pending} (oldest {age:.1f} s), parked {parked}")
    if parked:
        console.print("see `jwo outbox parked`; once the cause is fixed, `jwo outbox requeue --all` sends them again")


@outbox_app.command("parked")
def outbox_parked(
    limit: Annotated[int, typer.Option(help="oldest first, at most this many")] = 100,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")] = OutputFormat.table,
) -> None:
    """Messages SQS refused for good (e.g. InvalidMessageContents), with its reason: the relay sends no more of
    them until they are requeued."""
    with _outbox_queue() as queue:
        rows = queue.parked_messages(limit)
    result = QueryResult(
        ("seq", "message_id", "reason", "parked_at"),
        ("BIGINT", "VARCHAR", "VARCHAR", "TIMESTAMPTZ"),
        [(p.seq, p.message_id, p.reason, p.parked_at) for p in rows],
    )
    sys.stdout.write(render(result, format.value))
    if format is OutputFormat.json:
        sys.stdout.write("\n")


@outbox_app.command("requeue")
def outbox_requeue(
    seqs: Annotated[list[int] | None, typer.Argument(help="sequence numbers from `jwo outbox parked`")] = None,
    all_parked: Annotated[bool, typer.Option("--all", help="every parked message")] = False,
) -> None:
    """Put parked messages back on the outbox; the relay (`jwo up`) sends them first, with their message ids."""
    if bool(seqs) == all_parked:
        raise _fail("name the sequence numbers to requeue, or --all (not both)")
    with _outbox_queue() as queue:
        back = queue.requeue(None if all_parked else seqs)
    missing = sorted(set(seqs or ()) - set(back))
    console.print(f"{len(back)} message(s) requeued" + (f"; not parked: {missing}" if missing else ""))
    if missing:
        raise typer.Exit(code=1)


@report_app.command("settlement")
def report_settlement(
    day: Annotated[str, typer.Option("--date", help="business day (YYYY-MM-DD)")],
    store: Annotated[str | None, typer.Option(help="one store only")] = None,
    format: Annotated[ReportFormat, typer.Option("--format", "-f", help="output format")] = ReportFormat.table,
) -> None:
    """The daily settlement per store, with the exception trips finance works through."""
    try:
        out = settlement_report(Settings().lake_dir, _day(day), store, format.value)
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.buffer.write(out)


@replay_app.command("intraday")
def replay_intraday(
    day: Annotated[str, typer.Option("--date", help="the UTC day the report files were published (YYYY-MM-DD)")],
    into: Annotated[
        Path | None, typer.Option("--into", help="the lake to replay into (default JWO_HOME/replay/intraday-DATE)")
    ] = None,
) -> None:
    """Re-apply a day's Intra-Day files from lake/_landing into a fresh lake: the same Parquet files, byte for byte."""
    settings = _settings()
    when = _day(day)
    target = into if into is not None else settings.home / "replay" / f"intraday-{when.isoformat()}"
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task("replaying intraday files", total=None)
        try:
            stats = replay_day(
                settings.lake_dir,
                when,
                target,
                columns=settings.ingest.intraday.columns,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except (ReplayError, ReportFileError, WarehouseError, OSError) as exc:
            raise _fail(str(exc)) from None
    table = RichTable(title=f"Intra-Day replay of {when.isoformat()} into {target}", show_header=False)
    for label, value in (
        ("files applied", stats.files_applied),
        ("skipped as already there", stats.files_skipped),
        ("rows in", stats.rows_in),
        ("rows upserted", stats.rows_upserted),
        ("rows quarantined", stats.rows_quarantined),
    ):
        table.add_row(label, str(value))
    console.print(table)
