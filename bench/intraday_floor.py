"""The machine's floor for Intra-Day ingest: how fast the steps no design can skip run here, alone.

Run: `.venv/bin/python bench/intraday_floor.py [--rows 2300000] [--dir FOLDER]`. Prints one `name value` line
per figure on stdout; progress on stderr.

`bench/intraday.py` measures our ingest against the issue's goal of 1M input rows/s. This bench measures what
any ingest that keeps issue 5's promises must do at least, on the same generated day of 96 files, one file at
a time, with none of our code's parsing, checks, de-duplication or merging:

1. land: the file's bytes kept, content-addressed, in a landing folder (SHA-256, timed apart, then
   `LandingDir.keep`: write, fsync, rename, folder fsync), so the day can be replayed;
2. parse: the CSV read by the fastest reader installed, whole, types inferred (Arrow's multi-threaded reader
   and polars' reader, each timed; the faster one counts), gzip decompressed first where the file is gzipped;
3. write: the parsed rows written once and fsynced, as zstd Parquet (the lake's format) and, timed apart, as
   uncompressed Arrow IPC (the cheapest durable format at hand).

The steps are timed apart, in wall and process CPU seconds. `floor_rows_per_s_one_core` is the rows over the
steps as production does them (SHA-256, the faster parser, Parquet) added up; `floor_rows_per_s_two_cores_ideal`
halves that time, as if the steps ran on both cores in perfect overlap with nothing else to do;
`floor_rows_per_s_two_cores_ideal_least_work` also drops the hash, takes the cheaper format and writes only the
day's distinct lines (each stored once, the least any table holds). Our ingest also validates each value,
quarantines bad rows, finds the newest row per key against the whole table and keeps the ledger, so its rate
is below these.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gzip
import hashlib
import importlib.util
import io
import os
import tempfile
import time
from collections.abc import Callable
from types import ModuleType
from typing import BinaryIO, TypeVar

T = TypeVar("T")

GOAL_ROWS_PER_S = 1_000_000


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def figure(name: str, value: object) -> None:
    print(f"{name} {value}", flush=True)


def intraday_bench() -> ModuleType:
    """bench/intraday.py, for its generated day (imported by path: `bench/` is not a package)."""
    spec = importlib.util.spec_from_file_location("intraday_bench", Path(__file__).with_name("intraday.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Step:
    """Wall and process CPU seconds spent in one step, over all files."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.wall = 0.0
        self.cpu = 0.0

    def time(self, work: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        return result


def plain(content: bytes) -> bytes:
    return gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content


def run(folder: Path, work: Path) -> None:
    import polars as pl
    import pyarrow as pa
    import pyarrow.csv as pc
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from ingest.adapters.fs_landing import LandingDir
    from warehouse.lake import COMPRESSION

    bench = intraday_bench()
    landing = LandingDir(work / "_landing")
    out = work / "lake"
    out.mkdir()
    land, digest = Step("land"), Step("land_sha256")
    arrow, polars = Step("parse_arrow"), Step("parse_polars")
    parquet, ipc = Step("write_parquet"), Step("write_arrow_ipc")
    read = pc.ReadOptions(use_threads=True)
    parse = pc.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip")

    def durable(path: Path, write: Callable[[BinaryIO], None]) -> None:
        with open(path, "wb") as sink:
            write(sink)
            sink.flush()
            os.fsync(sink.fileno())

    def one_file(n: int, content: bytes) -> int:
        sha256 = digest.time(lambda: hashlib.sha256(content).hexdigest())
        land.time(lambda: landing.keep(content, sha256))
        table = arrow.time(lambda: pc.read_csv(pa.py_buffer(plain(content)), read_options=read, parse_options=parse))
        polars.time(
            lambda: pl.read_csv(io.BytesIO(plain(content)), truncate_ragged_lines=True, ignore_errors=True).height
        )
        parquet.time(
            lambda: durable(out / f"{n:03d}.parquet", lambda f: pq.write_table(table, f, compression=COMPRESSION))
        )
        ipc.time(lambda: durable(out / f"{n:03d}.arrow", lambda f: feather.write_feather(table, f, "uncompressed")))
        return int(table.num_rows)

    rows = sum(one_file(n, content) for n, (_key, content, _published) in enumerate(bench.day_files(folder)))
    figure("floor_rows_in", rows)
    for step in (digest, land, arrow, polars, parquet, ipc):
        figure(f"floor_{step.name}_seconds", f"{step.wall:.2f}")
        figure(f"floor_{step.name}_cpu_seconds", f"{step.cpu:.2f}")
        figure(f"floor_{step.name}_us_per_row", f"{step.wall / rows * 1e6:.2f}")
    parser = min(arrow, polars, key=lambda step: step.wall)
    writer = min(parquet, ipc, key=lambda step: step.wall)
    figure("floor_parser", parser.name)
    figure("floor_writer", writer.name)
    # As production lands them: SHA-256, the lake's Parquet.
    total = digest.wall + land.wall + parser.wall + parquet.wall
    figure("floor_seconds_one_core", f"{total:.2f}")
    figure("floor_rows_per_s_one_core", f"{rows / total:.0f}")
    figure("floor_rows_per_s_two_cores_ideal", f"{rows / (total / 2):.0f}")
    # The least of all: no content hash, the cheaper format, and only the day's distinct lines written (each
    # stored once, the least any table holds), on both cores in perfect overlap.
    distinct = int(bench.manifest(folder)["expected_lines"])
    least = land.wall + parser.wall + writer.wall * distinct / rows
    figure("floor_distinct_lines", distinct)
    figure("floor_rows_per_s_two_cores_ideal_least_work", f"{rows / (least / 2):.0f}")
    figure("floor_goal_rows_per_s", GOAL_ROWS_PER_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_300_000, help="input rows in the day (about)")
    parser.add_argument("--dir", type=Path, help="a day generated before (bench/intraday.py's manifest.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jwo-bench-floor-") as tmp:
        root = Path(tmp)
        folder = args.dir
        if folder is None:
            folder = root / "files"
            folder.mkdir()
            intraday_bench().generate(folder, args.rows)
        say(f"the day's files from {folder}: land, parse and write each, one at a time")
        work = root / "work"
        work.mkdir()
        run(folder, work)


if __name__ == "__main__":
    main()
