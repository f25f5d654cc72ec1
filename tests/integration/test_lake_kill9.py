"""kill -9 in the middle of Parquet writes never leaves a torn file under a published name.

A child process (this module run as a script) runs the janitor, then `LakeWriter.write`s batches in a loop;
the test kills it with SIGKILL 30 times, each at a seeded random moment after a write started, and starts it
again (from the batch it was writing). Every published file must then open with pyarrow and hold exactly its
batch's rows, and the janitor at each start removes the temp files the kills left.

Run as a script: `python -m tests.integration.test_lake_kill9 LAKE FIRST_BATCH`.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from contracts.tables import PURCHASES
from tests.children import kill, start_child
from tests.integration.test_warehouse_lake import purchase
from warehouse import lake as lake_module
from warehouse.lake import TEMP_GLOB, LakeWriter, janitor
from warehouse.query import run_query

KILLS = 30
END_TIME = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def batch_rows(batch: int) -> int:
    """Rows in batch `batch`: 20,000-50,000, so a write takes long enough to be killed in the middle."""
    return 20_000 + (batch * 7_919) % 30_000


def batch_id(batch: int) -> str:
    return f"b{batch:04d}"


def _announce_temp_files() -> None:
    """In the child: say when a batch's bytes are in its temp file (before fsync and rename), so the test can
    kill the writer exactly there as well as at random moments."""
    write_table = lake_module.pq.write_table

    def announcing(*args: Any, **kwargs: Any) -> None:
        write_table(*args, **kwargs)
        print("temp", flush=True)

    lake_module.pq.write_table = announcing  # type: ignore[attr-defined]


def write_forever(lake: Path, first: int) -> None:
    """The child: the janitor, then one batch after another, saying when each write starts."""
    _announce_temp_files()
    print(f"ready {janitor(lake)}", flush=True)
    writer = LakeWriter(lake)
    batch = first
    while True:
        rows = [purchase(f"{batch_id(batch)}-{n}", end_time=END_TIME) for n in range(batch_rows(batch))]
        print(f"writing {batch}", flush=True)
        writer.write(PURCHASES, rows, batch_id(batch))
        batch += 1


def start_writer(lake: Path, first: int) -> tuple[subprocess.Popen[str], int]:
    return start_child("tests.integration.test_lake_kill9", str(lake), str(first))


@pytest.mark.slow
def test_kill_9_during_parquet_writes_never_publishes_a_torn_file_and_the_janitor_removes_the_temps(
    tmp_path: Path,
) -> None:
    rng = random.Random(30)
    lake = tmp_path / "lake"
    removed_by_janitor = left_by_kills = 0
    first = 0
    child: subprocess.Popen[str] | None = None
    try:
        for _ in range(KILLS):
            child, removed = start_writer(lake, first)
            removed_by_janitor += removed
            assert child.stdout is not None
            line = child.stdout.readline()  # "writing <batch>"
            writing = int(line.split()[1])
            if rng.random() < 0.5:
                assert child.stdout.readline().strip() == "temp"  # the bytes are in the temp file: kill now
            else:
                time.sleep(rng.uniform(0.0, 0.4))  # anywhere: converting rows, writing, renaming, the next batch
            kill(child)
            left_by_kills += len(list(lake.glob(TEMP_GLOB)))
            first = writing if rng.random() < 0.5 else writing + 1  # rewrite the interrupted batch, or go on
        child, removed = start_writer(lake, first)  # a last start: its janitor cleans up
        removed_by_janitor += removed
    finally:
        if child is not None:
            kill(child)

    assert left_by_kills > 0  # the kills right after "temp" left a temp file each
    assert removed_by_janitor == left_by_kills
    assert list(lake.glob(TEMP_GLOB)) == []
    published = sorted(lake.glob("purchases/*/*.parquet"))
    assert len(published) >= 3  # some writes finished between kills (how many depends on the timing)
    for path in published:
        batch = int(path.name.removeprefix("part-b").removesuffix(".parquet"))
        table = pq.read_table(path)  # raises on a torn file
        assert table.num_rows == batch_rows(batch), path.name
        assert table.schema.remove_metadata() == PURCHASES.arrow_schema()
        ids = table.column("shopping_trip_id").to_pylist()
        assert ids[0] == f"{batch_id(batch)}-0"
        assert ids[-1] == f"{batch_id(batch)}-{batch_rows(batch) - 1}"
    total = sum(batch_rows(int(p.name.removeprefix("part-b").removesuffix(".parquet"))) for p in published)
    assert run_query(lake, "SELECT count(*) FROM purchases").rows == [(total,)]


if __name__ == "__main__":
    write_forever(Path(sys.argv[1]), int(sys.argv[2]))
