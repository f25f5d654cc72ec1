"""The three ways a report file is read (Arrow's CSV reader for a file whose every record is clean, the record scan
with column-wise checks, the csv module row by row) give the same rows and the same quarantine rows."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import intraday
from ingest.intraday import FileId, ParsedReport, parse_report
from ingest.settings import IntradaySettings

FILE = FileId("amazon-jwo-reports", "intraday/report.csv", "etag-1")
PUBLISHED = datetime(2026, 11, 20, 12, 15, tzinfo=UTC)
APPLIED = datetime(2026, 11, 20, 12, 16, tzinfo=UTC)
COLUMNS = IntradaySettings().columns
CONTEXT = intraday._Context(FILE, PUBLISHED, APPLIED, COLUMNS)
HEADER = list(COLUMNS)

TIMES = ["2026-11-20T12:00:00Z", "2026-11-20T13:05:59Z", "2026-11-20 12:00:00+01:00", "2026-11-20T25:99", ""]
NUMBERS = ["1", "3.49", "-0.5", "1.23456", "1e3", "x", "", " 2 ", "99999999999999"]
TEXT = ["a", "b c", "with, comma", 'with "quote"', "two\nlines", "crlf\r\ninside", " padded ", ""]


def value(column: str) -> st.SearchStrategy[str]:
    warehouse = COLUMNS[column]
    if warehouse in intraday.TIME_COLUMNS:
        return st.sampled_from(TIMES)
    if warehouse in intraday.DECIMAL_COLUMNS:
        return st.sampled_from(NUMBERS)
    if warehouse in intraday.KEY_COLUMNS:
        return st.sampled_from(["t1", "t2", " t3 ", ""])
    return st.sampled_from(TEXT)


record = st.tuples(*(value(c) for c in HEADER)).map(list)
odd_record = st.one_of(
    record.map(lambda fields: fields[:-1]),  # a field short
    record.map(lambda fields: [*fields, "extra"]),  # a field too many
    st.just([]),  # a blank line
)


@st.composite
def report(draw: st.DrawFn) -> bytes:
    order = draw(st.permutations(range(len(HEADER))))
    rows = draw(st.lists(st.one_of(record, record, record, odd_record), max_size=8))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator=ending)
    writer.writerow([HEADER[i] for i in order])
    for fields in rows:
        if len(fields) == len(HEADER):
            fields = [fields[i] for i in order]
        if fields:
            writer.writerow(fields)
        else:
            out.write(ending)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.removesuffix(ending)
    return text.encode()


def same(a: ParsedReport, b: ParsedReport) -> None:
    assert a.table.equals(b.table)
    assert a.quarantine == b.quarantine


@settings(max_examples=300, deadline=None)
@given(report())
def test_every_path_that_answers_gives_the_csv_modules_rows_and_quarantine(content: bytes) -> None:
    by_rows = intraday._slow_parse(content.decode(), CONTEXT)
    for path in (intraday._arrow_parse, intraday._fast_parse):
        parsed = path(content, CONTEXT)
        if parsed is not None:
            same(parsed, by_rows)
    same(parse_report(content, FILE, PUBLISHED, APPLIED, COLUMNS), by_rows)


def test_a_clean_file_is_read_by_arrow_and_one_with_a_bad_row_by_the_scan() -> None:
    time = "2026-11-20T12:00:00Z"
    row = f'o-1,t1,s,{time},{time},li-1,sku,"milk, whole",1,3.49,3.49,0,0.22,3.71,USD,p,V,1,r'
    clean = ("\r\n".join([",".join(HEADER), row, row.replace("li-1", "li-2")]) + "\r\n").encode()
    bad = clean + row.replace("3.49", "x", 1).encode()

    arrow = intraday._arrow_parse(clean, CONTEXT)
    assert arrow is not None
    assert arrow.table.num_rows == 2
    assert intraday._arrow_parse(bad, CONTEXT) is None
    parsed = parse_report(bad, FILE, PUBLISHED, APPLIED, COLUMNS)
    assert parsed.table.num_rows == 2
    assert [(q["line_no"], q["reason"]) for q in parsed.quarantine] == [(4, "bad number in unit_price: 'x'")]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b'"', b",", b"\n", b"\r", b"\r\n", b"a", b'""', b"\x00", b"\x1e"]), max_size=40))
def test_the_byte_check_quote_by_quote_judges_a_file_as_the_series_checks_do(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    buf = intraday._bytes(data)
    by_series = not intraday._odd_bytes(data, buf) and intraday._plain_quoting(
        buf, (buf == 34).arg_true().cast(intraday.pl.Int64)
    )
    assert intraday._plain_bytes(data) == by_series


def test_a_file_with_many_quotes_is_judged_on_its_bytes_as_a_series() -> None:
    row = b'"a","b ""c""",d\r\n'
    many = row * (intraday._FEW_QUOTES // 4)
    assert many.count(b'"') > intraday._FEW_QUOTES
    assert intraday._plain_bytes(many)
    assert not intraday._plain_bytes(many + b'"a"b,c\n')
    assert not intraday._plain_bytes(many + b"a\rb\n")


def test_a_field_of_only_spaces_leaves_the_file_to_the_scan_which_makes_it_null() -> None:
    time = "2026-11-20T12:00:00Z"
    row = f"o-1,t1,s,{time},{time},li-1,sku,milk,1,3.49,3.49,0,0.22,3.71,USD,p,V,1,r"
    blank = row.replace(",V,", ",   ,")
    content = ("\n".join([",".join(HEADER), row, blank.replace("li-1", "li-2")]) + "\n").encode()

    assert intraday._arrow_parse(content, CONTEXT) is None
    parsed = parse_report(content, FILE, PUBLISHED, APPLIED, COLUMNS)
    same(parsed, intraday._slow_parse(content.decode(), CONTEXT))
    assert parsed.table.column("card_brand").to_pylist() == ["V", None]
