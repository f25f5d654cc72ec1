"""Intra-Day report ingest throughput: ours against dlt's `merge`, on the same simulated day of 96 files.

Run: `.venv/bin/python bench/intraday.py [--rows 2300000]` (dlt comes from the `bench` extra:
`.venv/bin/pip install -e '.[bench]'`). Prints one `name value` line per figure on stdout; progress on stderr.

The day is `simulator.intraday.build_day` with `orders_per_step` scaled so the 96 files hold about `--rows`
input rows (each line in ~4 files, so ~rows/4 distinct lines). Each side runs in its own child process, which
reports its own peak RSS:

(a) ours, per file: the files in publication order, one at a time as production receives them: each applied
    through `ReportApplier` into a Parquet lake (`MergingSink` over `LakeSink`, as `jwo ingest intraday` wires
    it: the lines merged into each day's one current file before the ledger row), then
    `select count(*) from intraday_order_lines` through `warehouse.query.run_query` (the de-duplicated view)
    before the next. `ours_apply_*` is the applying alone, `ours_query_s` the 96 count queries.
(b) ours, backfill: all files applied, then one count query.
(c) dlt: the same files one by one, each a `pipeline.run` with `write_disposition="merge"` (primary key
    shopping_trip_id + line_item_id, `dedup_sort` desc on last_updated) into DuckDB, rows read with the
    csv module (money and times hinted as decimal and timestamp).

Both sides' final counts are printed: they must equal the answer key's distinct lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import gzip
import hashlib
import io
import json
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime

FILES = 96
ROWS_PER_ORDER_STEP = 96 * 2 * 4  # files x ~2 lines an order x each line in ~4 files


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# --------------------------------------------------------------------------- the day


def generate(folder: Path, rows: int) -> None:
    from simulator.intraday import IntradayConfig, build_day

    config = IntradayConfig(seed=5, files=FILES, orders_per_step=max(1, round(rows / ROWS_PER_ORDER_STEP)))
    started = time.perf_counter()
    day = build_day(config)
    manifest = []
    for n, file in enumerate(day.files):
        path = folder / f"{n:03d}-{Path(file.key).name}"
        path.write_bytes(file.content)
        manifest.append({"path": str(path), "key": file.key, "published_at": file.published_at.isoformat()})
    meta = {
        "files": manifest,
        "rows_in": sum(f.rows for f in day.files),
        "expected_lines": len(day.expected_lines),
        "expected_quarantined": day.expected_quarantined,
    }
    (folder / "manifest.json").write_text(json.dumps(meta))
    say(f"generated {len(day.files)} files, {meta['rows_in']} rows in {time.perf_counter() - started:.1f}s")


def manifest(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / "manifest.json").read_text())
    return data


def day_files(folder: Path) -> list[tuple[str, bytes, datetime]]:
    files = manifest(folder)["files"]
    assert isinstance(files, list)
    return [(f["key"], Path(f["path"]).read_bytes(), datetime.fromisoformat(f["published_at"])) for f in files]


# --------------------------------------------------------------------------- ours


def run_ours(folder: Path, work: Path, *, per_file_query: bool) -> None:
    from contracts.tables import INTRADAY_ORDER_LINES
    from ingest.intraday import FileId
    from ingest.reports import ReportApplier
    from ingest.settings import IngestSettings
    from jwo.intraday import MergingSink
    from jwo.runtime import LakeSink
    from warehouse.lake import LakeWriter
    from warehouse.query import run_query

    lake = work / "lake"
    applier = ReportApplier(
        MergingSink(LakeSink(LakeWriter(lake), None), lake),
        lambda: datetime.now(UTC),
        columns=IngestSettings().intraday.columns,
    )

    def count() -> int:
        [(n,)] = run_query(lake, "select count(*) from intraday_order_lines", tables=[INTRADAY_ORDER_LINES]).rows
        assert isinstance(n, int)
        return n

    prefix = "ours" if per_file_query else "backfill"
    applying = querying = 0.0
    rows_in = 0
    final = 0
    for key, content, published_at in day_files(folder):
        started = time.perf_counter()
        outcome = applier.apply_bytes(FileId("bench", key, hashlib.md5(content).hexdigest()), content, published_at)
        applying += time.perf_counter() - started
        rows_in += outcome.rows_in
        if per_file_query:
            started = time.perf_counter()
            final = count()
            querying += time.perf_counter() - started
    if not per_file_query:
        started = time.perf_counter()
        final = count()
        querying = time.perf_counter() - started
    total = applying + querying
    print(f"{prefix}_rows_in {rows_in}")
    print(f"{prefix}_seconds {total:.2f}")
    print(f"{prefix}_rows_per_s {round(rows_in / total)}")
    print(f"{prefix}_apply_seconds {applying:.2f}")
    print(f"{prefix}_apply_rows_per_s {round(rows_in / applying)}")
    print(f"{prefix}_query_seconds {querying:.2f}")
    print(f"{prefix}_final_count {final}")
    print(f"{prefix}_quarantined {applier.stats.rows_quarantined}")
    print(f"{prefix}_peak_rss_mb {peak_rss_mb()}")


# --------------------------------------------------------------------------- dlt


def run_dlt(folder: Path, work: Path) -> None:
    import dlt

    money = ("quantity", "unit_price", "list_price", "promotion_amount", "tax_amount", "line_total")
    columns: dict[str, dict[str, object]] = {c: {"data_type": "decimal", "precision": 18, "scale": 4} for c in money}
    columns["order_time"] = {"data_type": "timestamp"}
    columns["last_updated"] = {"data_type": "timestamp", "dedup_sort": "desc"}

    def rows(content: bytes) -> Iterator[dict[str, str]]:
        if content[:2] == b"\x1f\x8b":
            content = gzip.decompress(content)
        yield from csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline=""))

    pipeline = dlt.pipeline(
        pipeline_name="intraday_bench",
        destination=dlt.destinations.duckdb(str(work / "dlt.duckdb")),
        dataset_name="bench",
        pipelines_dir=str(work / "dlt_pipelines"),
    )
    rows_in = 0
    started = time.perf_counter()
    for _, content, _ in day_files(folder):
        resource = dlt.resource(
            rows(content),
            name="intraday_order_lines",
            write_disposition="merge",
            primary_key=("shopping_trip_id", "line_item_id"),
            columns=columns,
        )
        pipeline.run(resource)
        rows_in += int(pipeline.last_trace.last_normalize_info.row_counts.get("intraday_order_lines", 0))
    elapsed = time.perf_counter() - started
    with pipeline.sql_client() as client:
        [(final,)] = client.execute_sql("select count(*) from intraday_order_lines")
    print(f"dlt_rows_in {rows_in}")
    print(f"dlt_seconds {elapsed:.2f}")
    print(f"dlt_rows_per_s {round(rows_in / elapsed)}")
    print(f"dlt_final_count {final}")
    print(f"dlt_peak_rss_mb {peak_rss_mb()}")


# --------------------------------------------------------------------------- driver


def child(side: str, folder: Path, work: Path) -> dict[str, str]:
    command = [sys.executable, __file__, "--side", side, "--dir", str(folder), "--work", str(work)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    figures = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    for name, value in figures.items():
        print(f"{name} {value}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_300_000, help="input rows in the day (about)")
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--side", choices=["ours", "backfill", "dlt"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:
        if args.side == "dlt":
            run_dlt(args.dir, args.work)
        else:
            run_ours(args.dir, args.work, per_file_query=args.side == "ours")
        return
    with tempfile.TemporaryDirectory(prefix="jwo-bench-intraday-") as tmp:
        root = Path(tmp)
        folder = root / "files"
        folder.mkdir()
        generate(folder, args.rows)
        meta = manifest(folder)
        print(f"day_files {FILES}")
        print(f"day_rows_in {meta['rows_in']}")
        print(f"day_distinct_lines {meta['expected_lines']}")
        say("ours: one file at a time, queryable after each")
        ours = child("ours", folder, _fresh(root / "ours"))
        say("ours: whole-day backfill")
        child("backfill", folder, _fresh(root / "backfill"))
        if args.skip_dlt:
            return
        say("dlt: merge, one file at a time")
        theirs = child("dlt", folder, _fresh(root / "dlt"))
        print(f"ours_vs_dlt {float(ours['ours_rows_per_s']) / float(theirs['dlt_rows_per_s']):.1f}")


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
