"""kill -9 the Intra-Day ingester at 20 seeded random moments of a day's ingest: after the restarts the table is
the answer key and the ledger holds each file once.

The day (`simulator.intraday.build_day`, 96 small files with late orders, status changes and malformed rows)
is written to a folder, each file's mtime its publication time. The ingester is a child process running what
`jwo ingest intraday DIR` runs (`build_applier` over the lake's ledger, `ingest_sources`, the janitor first);
it says when it starts applying, and is SIGKILLed a seeded random moment later, 20 times, then run to the end.

Run as a script, this module is that child: `python -m tests.e2e.test_intraday_kill9 FILES LAKE`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from contracts.tables import INTRADAY_ORDER_LINES
from simulator.intraday import IntradayConfig, build_day
from tests.integration.test_intraday_ingest import table_digest, the_table

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
DAY = build_day(IntradayConfig(seed=17, orders_per_step=4, late_orders=6, moved_orders=6, malformed_rows=6, stores=2))
READY = "applying"


def write_day(folder: Path) -> dict[str, Path]:
    """The day's files in `folder`, mtime = publication time; source key (s3://...) -> local path."""
    paths = {}
    for n, file in enumerate(DAY.files):
        path = folder / f"{n:03d}-{Path(file.key).name}"
        path.write_bytes(file.content)
        stamp = file.published_at.timestamp()
        os.utime(path, (stamp, stamp))
        paths[DAY.source_key(n)] = path
    return paths


def expected(paths: dict[str, Path]) -> list[tuple[object, ...]]:
    rows = []
    for row in DAY.expected_lines:
        local = {**row, "source_key": str(paths[str(row["source_key"])].resolve())}
        rows.append(tuple(local[c] for c in INTRADAY_ORDER_LINES.column_names))
    return rows


def start(files: Path, lake: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.test_intraday_kill9", str(files), str(lake)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_at_20_random_points_then_the_table_is_the_answer_key(tmp_path: Path) -> None:
    files, lake = tmp_path / "files", tmp_path / "lake"
    files.mkdir()
    paths = write_day(files)
    rng = random.Random(20261120)
    killed_mid_run = 0
    for _ in range(KILLS):
        child = start(files, lake)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == READY
        time.sleep(rng.uniform(0.0, 0.35))
        if child.poll() is None:
            killed_mid_run += 1
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    child = start(files, lake)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0, out

    assert killed_mid_run >= KILLS // 2  # most kills landed while files were being applied
    assert table_digest(the_table(lake)) == table_digest(expected(paths))
    ledger = duckdb.sql(
        f"select key, count(*) from read_parquet('{lake.as_posix()}/intraday_files/*/*.parquet') group by key"
    ).fetchall()
    assert sorted(k for k, _ in ledger) == sorted(str(p.resolve()) for p in paths.values())
    assert {n for _, n in ledger} == {1}  # every file once, not once per attempt
    quarantined = duckdb.sql(
        f"select count(*) from read_parquet('{lake.as_posix()}/quarantine/*/*.parquet')"
    ).fetchall()
    assert quarantined == [(DAY.expected_quarantined,)]


def main(files: Path, lake: Path) -> None:
    from ingest.settings import IngestSettings
    from jwo.intraday import build_applier, ingest_sources
    from jwo.runtime import LakeSink
    from warehouse.lake import LakeWriter, janitor

    lake.mkdir(exist_ok=True)
    janitor(lake)
    applier = build_applier(IngestSettings(), lake, LakeSink(LakeWriter(lake), None))
    print(READY, flush=True)
    asyncio.run(ingest_sources(applier, [str(files)], None))
    stats = applier.stats
    print(f"applied {stats.files_applied} skipped {stats.files_skipped}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
