"""Intra-Day report ingest throughput: ours against dlt's `merge`, on the same simulated days of 96 files.

Run: `.venv/bin/python bench/intraday.py [--rows 2300000] [--sample-rows 200000]` (dlt comes from the `bench`
extra: `.venv/bin/pip install -e '.[bench]'`). Prints one `name value` line per figure on stdout; progress on
stderr.

Two days are generated with `simulator.intraday.build_day`, `orders_per_step` scaled so the 96 files hold about
`--rows` (the full day) and `--sample-rows` (the sample) input rows (each line in ~4 files, so ~rows/4 distinct
lines). dlt needs about half an hour for the full day, so it runs on the sample only; ours runs on both, and
both ratios are printed: `sample_ours_vs_dlt` (same files on both sides) and `full_ours_vs_sample_dlt` (our
full day against dlt's sample rate; dlt's merge slows as its table grows, so its full-day rate would be lower).
Each side runs in its own child process, which reports its own peak RSS (the bench syncs the disk before
each; ours runs `--repeats` times on the sample, the median reported):

(a) ours, per file: the files in publication order, one at a time as production receives them: each applied
    through `ReportApplier` into a Parquet lake (`MergingSink` over `LakeSink`, as the reports consumer wires
    it: the lines published, then merged into their hourly segments, every key in one segment), then
    `select count(*) from intraday_order_lines` through `warehouse.query.run_query` (the production read path,
    `jwo sql`'s views) before the next. `*_apply_*` is the applying alone, `*_query_seconds` the 96 counts.
(b) ours, backfill: all files applied as `jwo ingest intraday` applies them (merged once at the end), then one
    count query.
(c) dlt: the same files one by one, each a `pipeline.run` with `write_disposition="merge"` (primary key
    shopping_trip_id + line_item_id, `dedup_sort` desc on last_updated) into DuckDB, rows read with the
    csv module (money and times hinted as decimal and timestamp).

Every final count is printed: it must equal the day's distinct lines.
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
import os
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
    """This process's peak RSS: `VmHWM` (of this program only; `ru_maxrss` survives `exec`, so a child would
    report the parent's peak from generating the day if that was higher)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
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


def day_files(folder: Path) -> Iterator[tuple[str, bytes, datetime]]:
    """The day's files in publication order, each read when it is its turn (as production receives them: the
    whole day is never in memory at once, so the peak RSS is the ingester's)."""
    files = manifest(folder)["files"]
    assert isinstance(files, list)
    for f in files:
        yield f["key"], Path(f["path"]).read_bytes(), datetime.fromisoformat(f["published_at"])


# --------------------------------------------------------------------------- ours


def run_ours(folder: Path, work: Path, *, per_file_query: bool) -> None:
    from contracts.tables import INTRADAY_ORDER_LINES
    from ingest.intraday import FileId
    from ingest.reports import ReportApplier
    from ingest.settings import IngestSettings
    from jwo.intraday import MergingSink
    from jwo.runtime import LakeSink
    from warehouse.lake import LakeWriter
    from warehouse.merge import merge_table
    from warehouse.query import run_query

    lake = work / "lake"
    applier = ReportApplier(
        MergingSink(LakeSink(LakeWriter(lake), None), lake, merge_each_file=per_file_query),
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
        file = FileId("bench", key, hashlib.md5(content).hexdigest())  # S3's ETag: not ours to compute
        started = time.perf_counter()
        outcome = applier.apply_bytes(file, content, published_at)
        applying += time.perf_counter() - started
        rows_in += outcome.rows_in
        if per_file_query:
            started = time.perf_counter()
            final = count()
            querying += time.perf_counter() - started
    if not per_file_query:
        started = time.perf_counter()
        merge_table(lake, INTRADAY_ORDER_LINES)  # once, as `jwo ingest intraday` does after a backfill
        applying += time.perf_counter() - started
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


def run_child(side: str, folder: Path, work: Path) -> dict[str, str]:
    # Write back what the bench wrote before (the generated files, the previous side's lake): our ingest
    # fsyncs every file it publishes, and on ext4 an fsync also waits for other dirty data to reach the disk.
    os.sync()
    command = [sys.executable, __file__, "--side", side, "--dir", str(folder), "--work", str(work)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def child(label: str, side: str, folder: Path, work: Path) -> dict[str, str]:
    figures = run_child(side, folder, work)
    for name, value in figures.items():
        print(f"{label}_{name} {value}", flush=True)
    return figures


def ours_repeated(label: str, folder: Path, root: Path, repeats: int) -> dict[str, str]:
    """Ours per file `repeats` times, each on a fresh lake: the figures of the median run by rows/s, and
    every run's rate (machines are noisy; dlt, at minutes a run, runs once)."""
    runs = [run_child("ours", folder, _fresh(root / f"{label}-ours-{n}")) for n in range(repeats)]
    runs.sort(key=lambda figures: float(figures["ours_rows_per_s"]))
    median = runs[len(runs) // 2]
    for name, value in median.items():
        print(f"{label}_{name} {value}", flush=True)
    print(f"{label}_ours_rows_per_s_runs {' '.join(r['ours_rows_per_s'] for r in runs)}", flush=True)
    return median


def day(root: Path, label: str, rows: int) -> Path:
    folder = root / f"{label}-files"
    folder.mkdir()
    generate(folder, rows)
    meta = manifest(folder)
    print(f"{label}_day_files {FILES}")
    print(f"{label}_day_rows_in {meta['rows_in']}")
    print(f"{label}_day_distinct_lines {meta['expected_lines']}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_300_000, help="input rows in the full day (about)")
    parser.add_argument("--sample-rows", type=int, default=200_000, help="input rows in the day dlt loads (about)")
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="the sample only")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours on the sample (median reported)")
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
        sample = day(root, "sample", args.sample_rows)
        say("sample, ours: one file at a time, queryable after each")
        ours_sample = ours_repeated("sample", sample, root, max(1, args.repeats))
        theirs: dict[str, str] = {}
        if not args.skip_dlt:
            say("sample, dlt: merge, one file at a time")
            theirs = child("sample", "dlt", sample, _fresh(root / "sample-dlt"))
            ratio = float(ours_sample["ours_rows_per_s"]) / float(theirs["dlt_rows_per_s"])
            print(f"sample_ours_vs_dlt {ratio:.1f}")
        if args.skip_full:
            return
        full = day(root, "full", args.rows)
        say("full day, ours: one file at a time, queryable after each")
        ours_full = child("full", "ours", full, _fresh(root / "full-ours"))
        say("full day, ours: whole-day backfill")
        child("full", "backfill", full, _fresh(root / "full-backfill"))
        if theirs:
            ratio = float(ours_full["ours_rows_per_s"]) / float(theirs["dlt_rows_per_s"])
            print(f"full_ours_vs_sample_dlt {ratio:.1f}")


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
