"""`jwo replay intraday`: a day's files re-applied from the landing zone give the same Parquet files, byte for byte."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest

from ingest.settings import IngestSettings
from jwo.intraday import ReplayError, build_applier, ingest_sources, replay_day
from jwo.runtime import LakeSink
from simulator.intraday import IntradayConfig, build_day
from tests.integration.test_intraday_ingest import table_digest, the_table
from warehouse.lake import LakeWriter
from warehouse.merge import is_segment

DAY = build_day(
    IntradayConfig(
        seed=29, files=8, orders_per_step=3, late_orders=3, moved_orders=3, malformed_rows=2, gzip_share=0.5, stores=2
    )
)


def ingest_day(folder: Path, lake: Path) -> None:
    """The day as the reports consumer applies it, each file merged on write: files named out of publication order
    (so merged in another order than the replay's), mtime = publication."""
    folder.mkdir()
    for n, file in enumerate(DAY.files):
        path = folder / f"{(n * 5) % len(DAY.files):03d}-{Path(file.key).name}"  # arrival order != publication
        path.write_bytes(file.content)
        os.utime(path, (file.published_at.timestamp(), file.published_at.timestamp()))
    applier = build_applier(IngestSettings(), lake, LakeSink(LakeWriter(lake), None))
    asyncio.run(ingest_sources(applier, [str(folder)], None))


def files_of(lake: Path, table: str) -> dict[str, bytes]:
    return {p.relative_to(lake).as_posix(): p.read_bytes() for p in sorted((lake / table).glob("*/*.parquet"))}


def test_a_replayed_day_is_the_same_files_byte_for_byte(tmp_path: Path) -> None:
    original, replayed = tmp_path / "a", tmp_path / "b"
    ingest_day(tmp_path / "files", original)

    day = DAY.config.business_date
    stats = replay_day(original, day, replayed)

    assert stats.files_applied == len(DAY.files)
    assert stats.rows_quarantined == DAY.expected_quarantined
    lines = files_of(original, "intraday_order_lines")
    assert {Path(name).parent.name for name in lines} == {f"date={d}" for d in (day - timedelta(days=1), day)}
    assert len(lines) > 2  # one segment per hour of orders (the late orders' previous day too)
    assert all(is_segment(Path(name)) for name in lines)
    assert files_of(replayed, "intraday_order_lines") == lines
    for table in ("quarantine", "intraday_files"):
        assert files_of(replayed, table) == files_of(original, table)
    assert table_digest(the_table(replayed)) == table_digest(the_table(original))
    assert len(the_table(original)) == len(DAY.expected_lines)

    again = replay_day(original, DAY.config.business_date, replayed)  # already there: nothing to do
    assert (again.files_applied, again.files_skipped) == (0, len(DAY.files))
    assert replay_day(original, DAY.config.business_date.replace(day=1), tmp_path / "c").files_applied == 0


def test_a_replay_needs_every_raw_file_and_another_folder(tmp_path: Path) -> None:
    original = tmp_path / "a"
    ingest_day(tmp_path / "files", original)
    with pytest.raises(ReplayError, match="another folder"):
        replay_day(original, DAY.config.business_date, original)
    next((original / "_landing").iterdir()).unlink()
    with pytest.raises(ReplayError, match="is not in"):
        replay_day(original, DAY.config.business_date, tmp_path / "b")
