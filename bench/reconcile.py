"""Reconciliation: a full day of `--trips` trips (default 1M) and decline-to-alert latency.

Run: `.venv/bin/python bench/reconcile.py [--trips 1000000] [--baseline-trips 50000] [--declines 2000]`.
Prints one `name value` line per figure on stdout; progress on stderr.

The day: `--trips` trips ending on 2026-11-20, written to a Parquet lake as the consumers would (purchases,
payment_events with 2% of events delivered twice, cancel_charges, intraday_order_lines with 1-5 lines per cart),
with every anomaly of SPEC §5: declines at entry and at capture (1% each), partial capture, over-capture, a report
that disagrees, missing capture, missing report rows (0.5% each), empty carts (1%), orphan payments (0.3%).
Generated with DuckDB SQL (seeded by hash, so the same every run). The Intra-Day lines are then merged as the
ingester leaves them after every file (one segment per key, `warehouse.merge.merge_table`); `--unmerged-intraday`
leaves them as one batch file (a lake after a crash, before the next merge).

(a) full: `build_job(lake, store, settings).run(day=D)` (what `jwo reconcile --date D` runs), in a child
    process that reports its own peak RSS; then the same again (nothing changes: the second run must write
    nothing). `now` is D + 30 h: trips of the day's last 6 hours without a capture are still pending.
(b) baseline: the per-trip Python path this replaced (the code at commit BASELINE_COMMIT, extracted with
    `git archive`), same job call, on a lake of `--baseline-trips` trips generated the same way; its time is
    scaled per trip to `--trips` (it is linear in trips: one TripFacts, one reconcile_trip per trip).
(c) decline → alert: `--declines` PAYMENT CaptureDeclined events put on an in-memory SQS queue (`FakeSqsQueue`)
    at `--rate` per second, consumed by the production event-feed consumer (`ingest.consumer.Consumer` with
    `decode_event_batch`, `jwo.alerts.AlertingSink` over the lake writer, default batch and linger settings), the
    alerts delivered by `AlertDispatcher` to a sink that stamps their arrival: latency = arrival - publish.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The baseline's child runs the extracted old code: it goes first on the path.
sys.path.insert(0, os.environ.get("JWO_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import resource
import subprocess
import tempfile
import time
from datetime import UTC, date, datetime

import duckdb
import pyarrow as pa

BASELINE_COMMIT = "fa0e189"
DAY = date(2026, 11, 20)
NOW = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the day


def generate(lake: Path, trips: int, *, merged: bool = True) -> dict[str, int]:
    """Write the day's facts into `lake`, the Intra-Day lines merged as the ingester merges them unless not
    `merged`; returns rows per table."""
    from contracts.tables import CANCEL_CHARGES, INTRADAY_ORDER_LINES, PAYMENT_EVENTS, PURCHASES
    from warehouse.lake import LakeWriter
    from warehouse.merge import merge_table

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    day = f"TIMESTAMPTZ '{DAY.isoformat()} 00:00:00+00'"
    con.execute(
        f"""
        CREATE TABLE t AS
        SELECT i,
            substr(md5(i::VARCHAR), 1, 8) || '-' || substr(md5(i::VARCHAR), 9, 4) || '-4' ||
                substr(md5(i::VARCHAR), 14, 3) || '-a' || substr(md5(i::VARCHAR), 18, 3) || '-' ||
                substr(md5(i::VARCHAR), 21, 12) AS trip,
            'store-' || (i % 50)::VARCHAR AS store,
            hash(i, 'kind') % 1000 AS u,
            CASE WHEN hash(i, 'entry') % 3 = 0 THEN 'SCAN_CODE' ELSE 'FINANCIAL' END AS entry,
            'shopper-' || (hash(i, 'shopper') % 200000)::VARCHAR AS shopper,
            1 + hash(i, 'lines') % 5 AS lines,
            {day} + to_microseconds((i * (86399000000 // {trips}))::BIGINT) AS end_time,
            hash(i, 'dup') % 50 = 0 AS dup
        FROM range({trips}) r(i)
        """
    )
    con.execute(
        """
        CREATE TABLE t2 AS SELECT *,
            CASE WHEN u < 10 THEN 'auth_declined' WHEN u < 20 THEN 'capture_declined' WHEN u < 25 THEN 'partial'
                 WHEN u < 30 THEN 'over' WHEN u < 35 THEN 'missing_capture' WHEN u < 40 THEN 'missing_report'
                 WHEN u < 45 THEN 'report_mismatch' WHEN u < 55 THEN 'empty' WHEN u < 58 THEN 'orphan'
                 ELSE 'matched' END AS kind
        FROM t
        """
    )
    con.execute(
        """
        CREATE TABLE l AS
        SELECT t2.trip, t2.store, t2.end_time, t2.kind, n AS line_no,
            CAST((100 + hash(t2.i, n) % 2000) AS DECIMAL(18,4)) / 100 AS line_total
        FROM t2, range(1, 6) r(n) WHERE n <= t2.lines AND t2.kind NOT IN ('empty', 'orphan')
        """
    )
    con.execute(
        "CREATE TABLE p AS SELECT t2.*, CASE WHEN kind = 'empty' THEN 0 ELSE lines END AS line_count, "
        "coalesce((SELECT sum(line_total) FROM l WHERE l.trip = t2.trip), 0)::DECIMAL(18,4) AS total "
        "FROM t2 WHERE kind <> 'orphan'"
    )
    purchases = con.sql(
        """
        SELECT trip AS shopping_trip_id, CASE WHEN kind = 'empty' THEN '' ELSE md5(trip) END AS purchase_id,
            store AS store_id, entry AS entry_method, CASE WHEN entry = 'SCAN_CODE' THEN shopper END AS shopper_id,
            end_time - INTERVAL 12 MINUTE AS start_time, end_time, 'USD' AS currency, total AS subtotal,
            0::DECIMAL(18,4) AS promotions, 0::DECIMAL(18,4) AS tax, total, line_count,
            0::BIGINT AS unknown_item_count, end_time + INTERVAL 1 SECOND AS created_at
        FROM p
        """
    ).to_arrow_table()
    payments = con.sql(
        """
        WITH e AS (
            SELECT trip, store, dup, 'AuthorizationApproved' AS sub_type, 50.00::DECIMAL(18,4) AS amount,
                end_time - INTERVAL 12 MINUTE AS t_at FROM p WHERE kind <> 'auth_declined'
            UNION ALL SELECT trip, store, dup, 'AuthorizationDeclined', total, end_time - INTERVAL 12 MINUTE
                FROM p WHERE kind = 'auth_declined'
            UNION ALL SELECT trip, store, dup, 'CaptureApproved',
                CASE kind WHEN 'partial' THEN total / 2 WHEN 'over' THEN total + 1 ELSE total END,
                end_time + INTERVAL 1 MINUTE
                FROM p WHERE kind IN ('matched', 'partial', 'over', 'missing_report', 'report_mismatch')
            UNION ALL SELECT trip, store, dup, 'CaptureDeclined', total, end_time + INTERVAL 1 MINUTE
                FROM p WHERE kind = 'capture_declined'
            UNION ALL SELECT trip, store, dup, 'CaptureApproved', 10.00, end_time FROM t2 WHERE kind = 'orphan'
        )
        SELECT md5(trip || sub_type) AS event_id, trip AS shopping_trip_id, store AS store_id, t_at AS event_time,
            sub_type, amount::DECIMAL(18,4) AS amount, 'USD' AS currency, 'VISA' AS brand, '4242' AS card_last_four,
            md5(trip) AS reconciliation_id,
            CASE WHEN sub_type LIKE '%Declined' THEN 'DECLINED' ELSE 'APPROVED' END AS status, dup
        FROM e
        """
    ).to_arrow_table()
    lines = con.sql(
        """
        SELECT md5(trip) AS order_id, trip AS shopping_trip_id, store AS store_id, end_time AS order_time,
            end_time + INTERVAL 20 MINUTE AS last_updated, 'L' || line_no::VARCHAR AS line_item_id,
            'SKU-' || line_no::VARCHAR AS merchant_sku, 'Item ' || line_no::VARCHAR AS item_name,
            1::DECIMAL(18,4) AS quantity, line_total AS unit_price, line_total AS list_price,
            0::DECIMAL(18,4) AS promotion_amount, 0::DECIMAL(18,4) AS tax_amount,
            CASE WHEN kind = 'report_mismatch' AND line_no = 1 THEN line_total + 0.50 ELSE line_total END
                ::DECIMAL(18,4) AS line_total,
            'USD' AS currency, 'settled' AS payment_status, 'VISA' AS card_brand, '4242' AS card_last_four,
            md5(trip) AS reconciliation_id, 's3://reports/day.csv' AS source_key,
            end_time + INTERVAL 30 MINUTE AS file_published_at
        FROM l WHERE kind <> 'missing_report'
        """
    ).to_arrow_table()
    cancels = con.sql(
        "SELECT trip AS shopping_trip_id, store AS store_id, end_time + INTERVAL 1 SECOND AS requested_at, "
        "'empty cart' AS reason FROM p WHERE kind = 'empty'"
    ).to_arrow_table()
    con.close()

    writer = LakeWriter(lake)
    dup = payments.column("dup")
    payments = payments.drop_columns(["dup"])
    writer.write_arrow(PURCHASES, purchases.cast(PURCHASES.arrow_schema()), "bench-facts")
    writer.write_arrow(PAYMENT_EVENTS, payments.cast(PAYMENT_EVENTS.arrow_schema()), "bench-facts")
    writer.write_arrow(PAYMENT_EVENTS, payments.filter(dup).cast(PAYMENT_EVENTS.arrow_schema()), "bench-redelivered")
    writer.write_arrow(INTRADAY_ORDER_LINES, lines.cast(INTRADAY_ORDER_LINES.arrow_schema()), "bench-facts")
    writer.write_arrow(CANCEL_CHARGES, cancels.cast(CANCEL_CHARGES.arrow_schema()), "bench-facts")
    if merged:
        merge_table(lake, INTRADAY_ORDER_LINES)
    return {
        "purchases": purchases.num_rows,
        "payment_events": payments.num_rows,
        "payment_events_redelivered": int(pa.compute.sum(dup).as_py() or 0),
        "intraday_order_lines": lines.num_rows,
        "cancel_charges": cancels.num_rows,
    }


# --------------------------------------------------------------------------- (a), (b): a child process per run


def child(lake: Path, home: Path, runs: int) -> None:
    """Reconcile DAY `runs` times (as `jwo reconcile --date` does, with a fixed clock); print a JSON report."""
    from connectors.adapters.sqlite_retailer import SqliteRetailerStore
    from jwo.reconcile_facts import build_job
    from reconcile import job as job_module
    from reconcile.settings import ReconcileSettings

    out: dict[str, object] = {"job_module": job_module.__file__}
    store = SqliteRetailerStore(home / "retailer.db")
    ledger = {"calls": 0, "s": 0.0, "depth": 0}
    # Time the identity store's share: the batched calls (one SQLite transaction each) and, in the baseline's
    # code, the single calls (one commit per debt). A single call that delegates to a batched one counts once.
    for name in ("open_debt", "close_debt", "open_debts", "close_debts"):
        if not hasattr(store, name):
            continue
        method = getattr(store, name)

        def timed(*args: object, _method: object = method) -> object:
            started = time.perf_counter()
            ledger["depth"] += 1
            try:
                return _method(*args)  # type: ignore[operator]
            finally:
                ledger["depth"] -= 1
                if not ledger["depth"]:
                    ledger["calls"] += 1
                    ledger["s"] += time.perf_counter() - started

        setattr(store, name, timed)
    try:
        for n in range(runs):
            started, cpu = time.perf_counter(), _cpu()
            report = build_job(lake, store, ReconcileSettings(), clock=lambda: NOW).run(day=DAY)
            out[f"run{n}_s"] = time.perf_counter() - started
            out[f"run{n}_cpu_s"] = _cpu() - cpu
            out[f"run{n}_ledger_calls"], out[f"run{n}_ledger_s"] = ledger["calls"], ledger["s"]
            ledger.update(calls=0, s=0.0, depth=0)
            out[f"run{n}_trips"] = report.trips
            out[f"run{n}_changed"] = report.changed
            out[f"run{n}_batch"] = report.batch_id
            out[f"run{n}_states"] = report.states
            out[f"run{n}_debts_opened"] = report.debts_opened
            out[f"run{n}_alerts"] = report.alerts
    finally:
        store.close()
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not `ru_maxrss`: Linux carries the parent's peak into a child
    across fork and exec, and the parent has just generated the day."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(lake: Path, home: Path, runs: int, pythonpath: Path | None = None) -> dict[str, object]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["JWO_BENCH_TREE"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(lake), str(home), str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=pythonpath or REPO,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-4000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def baseline_tree(into: Path) -> Path:
    """The code of BASELINE_COMMIT (the per-trip Python path), extracted from git."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE_COMMIT], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


# --------------------------------------------------------------------------- (c) decline → alert


async def decline_latency(lake: Path, declines: int, rate: float) -> list[float]:
    from ingest.consumer import Consumer
    from ingest.eventfeed import decode_event_batch
    from ingest.fakes import FakeSqsQueue
    from jwo.alerts import AlertDispatcher, AlertingSink
    from jwo.runtime import LakeSink
    from reconcile.rules import Alert
    from simulator.eventfeed import envelope_body
    from warehouse.lake import LakeWriter

    published: dict[str, float] = {}
    latencies: list[float] = []
    all_in = asyncio.Event()

    class StampingSink:
        async def send(self, alert: Alert) -> None:
            latencies.append(time.perf_counter() - published[alert.shopping_trip_id])
            if len(latencies) == declines:
                all_in.set()

    queue = FakeSqsQueue()
    dispatcher = AlertDispatcher({"stamp": StampingSink()})
    sink = AlertingSink(LakeSink(LakeWriter(lake), None), dispatcher)
    consumer = Consumer("eventfeed", queue, sink, lambda: datetime.now(UTC), decode=decode_event_batch)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(consumer.run(stop)), asyncio.create_task(dispatcher.run(stop))]
    start = time.perf_counter()
    for n in range(declines):
        trip = f"bench-decline-{n:06d}"
        at = datetime.now(UTC)
        detail = json.dumps(
            {
                "shoppingTripId": trip,
                "storeId": "store-1",
                "eventTime": at.isoformat().replace("+00:00", "Z"),
                "subType": "CaptureDeclined",
                "amount": {"value": "12.34", "currencyCode": "USD"},
                "brand": "VISA",
                "cardLastFourDigits": "4242",
                "reconciliationId": trip,
                "status": "DECLINED",
            }
        )
        body = envelope_body(
            f"00000000-0000-4000-8000-{n:012d}", "PAYMENT", detail, at, source="jwo.eventfeed",
            account="123456789012", region="us-east-1",
        )  # fmt: skip
        published[trip] = time.perf_counter()
        queue.send(body)
        delay = start + (n + 1) / rate - time.perf_counter()
        await asyncio.sleep(max(0.0, delay))
    await asyncio.wait_for(all_in.wait(), timeout=60)
    stop.set()
    await asyncio.gather(*tasks)
    return sorted(latencies)


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, max(0, round(share * len(values)) - 1))]


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trips", type=int, default=1_000_000)
    parser.add_argument("--baseline-trips", type=int, default=50_000)
    parser.add_argument("--declines", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0, help="decline events published per second")
    parser.add_argument("--child", nargs=3, metavar=("LAKE", "HOME", "RUNS"))
    parser.add_argument(
        "--unmerged-intraday", action="store_true", help="leave the Intra-Day lines as one batch file, not merged"
    )
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return

    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        root = Path(tmp)
        log(f"generating {args.trips:,} trips ...")
        started = time.perf_counter()
        counts = generate(root / "lake", args.trips, merged=not args.unmerged_intraday)
        log(f"generated in {time.perf_counter() - started:.1f} s: {counts}")
        for name, count in counts.items():
            print(f"input_{name} {count}")
        print(f"input_intraday_layout {'one batch file' if args.unmerged_intraday else 'merged, one segment per key'}")
        (root / "home").mkdir()
        full = run_child(root / "lake", root / "home", 2)
        log(f"full: {full}")

        log(f"baseline: {args.baseline_trips:,} trips with the code of {BASELINE_COMMIT} ...")
        generate(root / "small", args.baseline_trips, merged=not args.unmerged_intraday)
        (root / "small-home").mkdir()
        (root / "old").mkdir()
        old = run_child(root / "small", root / "small-home", 1, baseline_tree(root / "old"))
        log(f"baseline: {old}")
        if not str(old["job_module"]).startswith(str(root / "old")):
            raise SystemExit(f"the baseline ran {old['job_module']}, not the extracted code")

        log(f"decline → alert: {args.declines} events at {args.rate}/s ...")
        latencies = asyncio.run(decline_latency(root / "alerts-lake", args.declines, args.rate))

    full_s, again_s = float(str(full["run0_s"])), float(str(full["run1_s"]))
    per_trip = float(str(old["run0_s"])) / int(str(old["run0_trips"]))
    scaled = per_trip * int(str(full["run0_trips"]))
    print(f"trips_reconciled {full['run0_trips']}")
    print(f"states {json.dumps(full['run0_states'], sort_keys=True)}")
    print(f"full_reconcile_s {full_s:.2f}")
    print(
        f"full_reconcile_ledger_s {float(str(full['run0_ledger_s'])):.2f} "
        f"(of the full reconcile: {full['run0_ledger_calls']} identity-store debt calls, one SQLite transaction each, "
        f"for {full['run0_debts_opened']} debts opened)"
    )
    print(f"full_reconcile_without_ledger_s {full_s - float(str(full['run0_ledger_s'])):.2f}")
    print(f"full_reconcile_cpu_s {float(str(full['run0_cpu_s'])):.2f} (user + system, all threads)")
    print(f"full_reconcile_trips_per_s {int(str(full['run0_trips'])) / full_s:,.0f}")
    print(f"rerun_s {again_s:.2f}")
    print(f"rerun_changed {full['run1_changed']}")
    print(f"rerun_batch {full['run1_batch']}")
    print(f"peak_rss_mb {float(str(full['peak_rss_mb'])):.0f} (the child process: both runs)")
    print(f"machine_load_1min {os.getloadavg()[0]:.1f} (2 cores; wall times stretch with it, cpu times do not)")
    print(f"baseline_trips {old['run0_trips']}")
    print(f"baseline_s {float(str(old['run0_s'])):.2f}")
    print(f"baseline_ledger_s {float(str(old['run0_ledger_s'])):.2f} ({old['run0_ledger_calls']} calls)")
    print(f"baseline_cpu_s {float(str(old['run0_cpu_s'])):.2f}")
    print(f"baseline_per_trip_us {per_trip * 1e6:.1f}")
    print(f"baseline_scaled_to_{full['run0_trips']}_trips_s {scaled:.1f} (per-trip Python path of {BASELINE_COMMIT}, "
          f"measured on {old['run0_trips']} trips, scaled per trip)")  # fmt: skip
    print(f"baseline_peak_rss_mb {float(str(old['peak_rss_mb'])):.0f} (on {old['run0_trips']} trips)")
    cpu_scaled = float(str(old["run0_cpu_s"])) / int(str(old["run0_trips"])) * int(str(full["run0_trips"]))
    print(
        f"speedup_vs_baseline {scaled / full_s:.1f}x (wall), {cpu_scaled / float(str(full['run0_cpu_s'])):.1f}x (cpu)"
    )
    print(f"decline_alert_p50_ms {percentile(latencies, 0.50) * 1000:.0f}")
    print(f"decline_alert_p99_ms {percentile(latencies, 0.99) * 1000:.0f}")
    print(f"decline_alert_max_ms {latencies[-1] * 1000:.0f}")
    print(f"decline_alert_events {len(latencies)}")


if __name__ == "__main__":
    main()
