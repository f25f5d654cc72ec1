"""`jwo ingest intraday` and `jwo replay intraday` as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from jwo.cli import app
from warehouse.merge import is_segment
from warehouse.query import run_query

FIXTURES = Path(__file__).resolve().parents[1] / "events" / "intraday"


def test_a_backfill_applies_each_file_once_merges_each_day_and_replays_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWO_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", "intraday", str(FIXTURES)])
    assert first.exit_code == 0, first.output
    assert "files applied              │ 10" in first.output.replace("┃", "│")
    again = runner.invoke(app, ["ingest", "intraday", str(FIXTURES)])
    assert again.exit_code == 0, again.output
    assert "skipped as already applied │ 10" in again.output.replace("┃", "│")

    lake = tmp_path / "home" / "lake"
    days = sorted((lake / "intraday_order_lines").glob("date=*"))
    assert days
    assert all(day_files and all(is_segment(p) for p in day_files) for day_files in map(segments, days))
    lines = run_query(lake, "select * from intraday_order_lines order by all").rows

    published = run_query(lake, "select distinct cast(published_at as date) from intraday_files").rows
    (day,) = [str(row[0]) for row in published]
    into = tmp_path / "replayed"
    replayed = runner.invoke(app, ["replay", "intraday", "--date", day, "--into", str(into)])
    assert replayed.exit_code == 0, replayed.output
    assert run_query(into, "select * from intraday_order_lines order by all").rows == lines
    for original in days:
        copies = segments(into / "intraday_order_lines" / original.name)
        assert [p.name for p in copies] == [p.name for p in segments(original)]
        assert all(copy.read_bytes() == (original / copy.name).read_bytes() for copy in copies)


def segments(day: Path) -> list[Path]:
    return sorted(day.glob("*.parquet"))


def test_a_bad_date_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWO_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["replay", "intraday", "--date", "yesterday"])
    assert result.exit_code == 1
    assert "not a date" in result.output
