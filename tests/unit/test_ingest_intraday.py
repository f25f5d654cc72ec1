"""Parsing Intra-Day report files and their S3 notifications: one fixture per parsing and quarantine case."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from ingest.intraday import (
    FileId,
    NotificationError,
    ParsedReport,
    ReportFileError,
    parse_notification,
    parse_report,
)
from ingest.settings import IntradaySettings

EVENTS = Path(__file__).resolve().parents[1] / "events"
FIXTURES = EVENTS / "intraday"
FILE = FileId("amazon-jwo-reports", "intraday/report.csv", "etag-1")
PUBLISHED = datetime(2026, 11, 20, 12, 15, tzinfo=UTC)
APPLIED = datetime(2026, 11, 20, 12, 16, tzinfo=UTC)
COLUMNS = IntradaySettings().columns


def parse(name: str, columns: dict[str, str] = COLUMNS) -> ParsedReport:
    return parse_report((FIXTURES / name).read_bytes(), FILE, PUBLISHED, APPLIED, columns)


def keys(parsed: ParsedReport) -> list[tuple[object, object]]:
    return [(row["shopping_trip_id"], row["line_item_id"]) for row in parsed.lines]


@pytest.mark.parametrize("name", ["bom.csv", "crlf.csv", "report.csv.gz"])
def test_bom_crlf_and_gzip_files_give_the_same_two_rows(name: str) -> None:
    parsed = parse(name)

    assert keys(parsed) == [("trip-1", "li-1"), ("trip-2", "li-1")]
    assert parsed.quarantine == []
    first = parsed.lines[0]
    assert first["order_id"] == "o-1"  # the BOM did not stick to the first header name
    assert first["reconciliation_id"] == "rec-1"  # no trailing \r on the last field
    assert first["unit_price"] == Decimal("3.49")
    assert parsed.lines[1]["quantity"] == Decimal("0.455")
    assert first["last_updated"] == datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
    assert first["source_key"] == "s3://amazon-jwo-reports/intraday/report.csv"
    assert first["file_published_at"] == PUBLISHED


def test_money_is_an_exact_decimal_never_a_float() -> None:
    row = parse("crlf.csv").lines[0]

    for column in ("quantity", "unit_price", "list_price", "promotion_amount", "tax_amount", "line_total"):
        assert type(row[column]) is Decimal
    assert row["promotion_amount"] == Decimal("0.70")


def test_quoted_commas_quotes_and_newlines_stay_inside_their_field() -> None:
    parsed = parse("quoted.csv")

    assert [row["item_name"] for row in parsed.lines] == ['Bagels, Everything "NY"', "Gift Card\nHoliday Edition"]
    assert parsed.quarantine == []


@pytest.mark.parametrize("name", ["empty.csv", "header_only.csv"])
def test_an_empty_or_header_only_file_has_no_rows_and_is_not_an_error(name: str) -> None:
    parsed = parse(name)

    assert parsed.lines == []
    assert parsed.quarantine == []


def test_column_order_and_extra_columns_do_not_matter() -> None:
    assert parse("reordered_extra.csv").lines == parse("crlf.csv").lines[:1]


def test_the_column_mapping_adapts_to_another_layout() -> None:
    renamed = (FIXTURES / "crlf.csv").read_bytes().replace(b"shopping_trip_id", b"Trip ID", 1)
    columns = {**{k: v for k, v in COLUMNS.items() if k != "shopping_trip_id"}, "trip id": "shopping_trip_id"}

    parsed = parse_report(renamed, FILE, PUBLISHED, APPLIED, columns)

    assert keys(parsed) == [("trip-1", "li-1"), ("trip-2", "li-1")]


def test_a_file_without_the_key_columns_cannot_be_read() -> None:
    with pytest.raises(ReportFileError, match="shopping_trip_id"):
        parse_report(b"order_id,foo\n1,2\n", FILE, PUBLISHED, APPLIED, COLUMNS)


@pytest.mark.parametrize("content", [b"\x1f\x8bnot really gzip", b"\xff\xfe\x00bad utf-8"])
def test_a_corrupt_file_cannot_be_read(content: bytes) -> None:
    with pytest.raises(ReportFileError):
        parse_report(content, FILE, PUBLISHED, APPLIED, COLUMNS)


@pytest.mark.parametrize(
    ("name", "line_no", "reason", "good"),
    [
        ("bad_number.csv", 3, "bad number in quantity: 'two'", [("trip-1", "li-1"), ("trip-2", "li-1")]),
        ("bad_date.csv", 2, "bad date in order_time: '2026-11-20 25:99'", [("trip-1", "li-1")]),
        ("missing_key.csv", 3, "missing key shopping_trip_id", [("trip-1", "li-1")]),
    ],
)
def test_a_malformed_row_is_quarantined_with_its_line_and_reason_and_the_rest_loads(
    name: str, line_no: int, reason: str, good: list[tuple[str, str]]
) -> None:
    parsed = parse(name)

    assert keys(parsed) == good
    [bad] = parsed.quarantine
    raw_line = (FIXTURES / name).read_text().splitlines()[line_no - 1]
    assert bad == {
        "source_key": FILE.source_key,
        "etag": "etag-1",
        "line_no": line_no,
        "reason": reason,
        "raw": raw_line,
        "quarantined_at": APPLIED,
    }


def test_line_numbers_count_physical_lines_across_quoted_newlines() -> None:
    content = (
        FIXTURES / "quoted.csv"
    ).read_bytes() + b"o-3,,s,2026-11-20T12:00:00Z,2026-11-20T12:00:00Z,li,,,1,1,1,0,0,1,USD,x,y,z,w\n"

    [bad] = parse_report(content, FILE, PUBLISHED, APPLIED, COLUMNS).quarantine

    assert bad["line_no"] == 5  # header 1, row 2, row 3-4 (a quoted newline), this row 5


def test_a_row_with_the_wrong_number_of_fields_is_quarantined() -> None:
    content = gzip.compress((FIXTURES / "crlf.csv").read_bytes() + b"just,three,fields\r\n")

    parsed = parse_report(content, FILE, PUBLISHED, APPLIED, COLUMNS)

    assert len(parsed.lines) == 2
    assert parsed.quarantine[0]["reason"] == "expected 19 fields, got 3"
    assert parsed.quarantine[0]["line_no"] == 4


def test_times_with_an_offset_become_utc() -> None:
    content = (FIXTURES / "crlf.csv").read_bytes().replace(b"2026-11-20T12:05:00Z", b"2026-11-20T07:05:00-05:00")

    row = parse_report(content, FILE, PUBLISHED, APPLIED, COLUMNS).lines[0]

    assert row["last_updated"] == datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
    assert row["last_updated"].tzinfo is UTC  # type: ignore[union-attr]


def test_the_sns_wrapped_s3_notification_gives_bucket_key_etag_and_size() -> None:
    [obj] = parse_notification((EVENTS / "intraday" / "sns_s3_notification.json").read_text())

    assert obj.bucket == "amazon-jwo-reports"
    assert obj.key == "intraday/2026-11-20/report 20261120T1215.csv.gz"  # S3 URL-encodes keys
    assert obj.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert obj.size == 1024
    assert obj.event_time == datetime(2026, 11, 20, 12, 15, tzinfo=UTC)


def test_an_s3_test_event_announces_nothing() -> None:
    assert parse_notification('{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}') == []


@pytest.mark.parametrize("body", ["not json", '{"Type": "Notification", "Message": "[1"}', '{"Records": 5}'])
def test_a_body_that_is_not_a_notification_is_an_error(body: str) -> None:
    with pytest.raises(NotificationError):
        parse_notification(body)
