"""Intra-Day S3 report files (SPEC §3.1) → `intraday_order_lines` and `quarantine` rows. Pure: values in, values out.

- A file is CSV with a header row (RFC 4180 quoting, UTF-8 with or without a BOM, LF or CRLF), optionally
  gzipped (recognised by its magic bytes, whatever its name). Columns are found by header name through a
  configurable mapping (`IntradaySettings.columns`), so their order and any extra columns do not matter.
- Money and quantities parse to exact `Decimal`s (never float); times to UTC-aware datetimes (a time without
  an offset is taken as UTC).
- A row that does not fit (bad number or date, missing key, wrong field count) becomes a `quarantine` row with
  the file, the physical line it starts on (the header is line 1), the reason and its raw text; the rest of
  the file still loads. Blank lines are skipped.
- A file that cannot be read at all (corrupt gzip, not UTF-8, no header naming the key columns) raises
  `ReportFileError`: it is retried and then dead-lettered, never skipped.

`parse_notification` reads the SNS-wrapped S3 `ObjectCreated` notification of a new file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from urllib.parse import unquote_plus

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv

from contracts.arrow_rows import ArrowRows
from contracts.intraday_report import REPORT_COLUMNS
from contracts.tables import INTRADAY_ORDER_LINES

GZIP_MAGIC = b"\x1f\x8b"
KEY_COLUMNS = ("shopping_trip_id", "line_item_id")
REQUIRED_TIMES = ("order_time", "last_updated")
DECIMAL_COLUMNS = frozenset({"quantity", "unit_price", "list_price", "promotion_amount", "tax_amount", "line_total"})
TIME_COLUMNS = frozenset(REQUIRED_TIMES)
LINE_COLUMNS = REPORT_COLUMNS
"""The `intraday_order_lines` columns that come from the file (source_key and file_published_at do not)."""

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_DECIMAL = Decimal(10) ** 14  # DECIMAL(18,4) holds 14 integer digits
_FOUR_PLACES = Decimal("0.0001")
_WIDE = Context(prec=60)
LINES_SCHEMA: pa.Schema = INTRADAY_ORDER_LINES.arrow_schema()
"""The `intraday_order_lines` Arrow schema: what `ParsedReport.table` holds."""

# The fast path takes only values whose meaning is beyond doubt; anything else goes through the per-row path
# (`_row`), which decides, so both paths give the same rows and the same quarantine reasons.
_FAST_NUMBER = r"^[+-]?(?:[0-9]{1,14}(?:\.[0-9]{0,4})?|\.[0-9]{1,4})$"
_FAST_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9]Z$"
_FAST_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_ODD_BYTES = (b"\x00", b"\x1c", b"\x1d", b"\x1e", b"\x1f")
"""NUL (the csv module refuses it) and the separators Python's str.strip() removes but polars' does not (each
looked for with `in`, a memchr, which is ~20x faster than a regex character class over a whole file)."""
_LONE_CR = re.compile(rb"\r(?!\n)")
_FEW_QUOTES = 4096
"""Up to this many quotes a file's quoting is checked quote by quote (`bytes.find`, ~0.5 us a quote); a file with
more is checked on its bytes as a series (~2 ms a 570 kB file, whatever its quotes)."""


class ReportFileError(ValueError):
    """The file cannot be read at all (not its rows: the file). Retried, then dead-lettered."""


class NotificationError(ValueError):
    """A reports-queue body that is not an S3 notification (SNS-wrapped or raw). Retried, then dead-lettered."""


@dataclass(frozen=True)
class FileId:
    """One version of one report file: applied exactly once."""

    bucket: str
    key: str
    etag: str

    @property
    def source_key(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.bucket else self.key

    def batch_id(self) -> str:
        """The lake batch id of this file version: a re-run rewrites the same Parquet files."""
        digest = hashlib.sha256(f"{self.bucket}\n{self.key}\n{self.etag}".encode()).hexdigest()
        return f"intraday-{digest[:32]}"


@dataclass(frozen=True)
class ReportObject:
    """A new report file, as an S3 notification record announces it."""

    bucket: str
    key: str
    etag: str
    size: int
    event_time: datetime | None


class ParsedReport:
    """A file's order lines (an Arrow table with `LINES_SCHEMA`) and its quarantined rows (dicts)."""

    def __init__(self, table: pa.Table | None = None, quarantine: list[dict[str, object]] | None = None) -> None:
        self.table: pa.Table = LINES_SCHEMA.empty_table() if table is None else table
        self.quarantine: list[dict[str, object]] = [] if quarantine is None else quarantine
        self.arrow_rows = ArrowRows(self.table)

    @property
    def lines(self) -> ArrowRows:
        """The order lines as a sequence of row dicts (built on first use; the lake takes `table` as it is)."""
        return self.arrow_rows

    @property
    def rows_in(self) -> int:
        return int(self.table.num_rows) + len(self.quarantine)


# --------------------------------------------------------------------------- the file


def decode_bytes(content: bytes) -> bytes:
    """The file's UTF-8 bytes without a BOM: gunzipped when it starts with the gzip magic; checked to be UTF-8."""
    if content[:2] == GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReportFileError(f"corrupt gzip: {exc}") from exc
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportFileError(f"not UTF-8: {exc}") from exc
    return content[3:] if content[:3] == b"\xef\xbb\xbf" else content


def decode_text(content: bytes) -> str:
    """The file's text: gunzipped when it starts with the gzip magic, UTF-8 with an optional BOM."""
    return decode_bytes(content).decode("utf-8")


def normalise(name: str) -> str:
    return name.strip().lower()


def header_index(header: list[str], columns: Mapping[str, str]) -> dict[str, int]:
    """Warehouse column -> field position, for the mapped columns the header has. Raises ReportFileError
    when a column needed to key or order a row is absent."""
    wanted = {normalise(report): warehouse for report, warehouse in columns.items()}
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        warehouse = wanted.get(normalise(name))
        if warehouse is not None and warehouse not in index:
            index[warehouse] = position
    missing = [c for c in (*KEY_COLUMNS, *REQUIRED_TIMES) if c not in index]
    if missing:
        raise ReportFileError(f"header lacks the column(s) for {', '.join(missing)}: {header!r}")
    return index


def _records(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(first physical line, raw text, fields) of every CSV record, quoted newlines kept inside their field."""
    consumed: list[str] = []
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            count += 1
            yield line

    start = 1
    for fields in csv.reader(lines()):
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        yield start, raw, fields
        start = count + 1


def parse_report(
    content: bytes,
    file: FileId,
    published_at: datetime,
    applied_at: datetime,
    columns: Mapping[str, str],
) -> ParsedReport:
    """The file's order lines and quarantined rows. Raises ReportFileError when the file cannot be read.

    A file whose every record is clean (the header on its first line, plain quoting, the header's field count
    everywhere, every value one the checks vouch for) is read whole by Arrow's CSV reader and checked and cast
    column-wise (`_arrow_parse`): no record scan. Otherwise its records are found by a scan (polars), clean rows
    are split, checked and cast column-wise, and a row the fast path cannot vouch for (a bad or unusual value, a
    wrong field count) goes through the per-row path, which quarantines it (with its line number and raw text)
    or loads it. A file whose quoting the fast path cannot follow goes through the per-row path whole. Whichever
    path reads a file, the rows and reasons are the same.
    """
    unknown = sorted(set(columns.values()) - set(LINE_COLUMNS))
    if unknown:
        raise ReportFileError(f"the column mapping names unknown warehouse columns: {', '.join(unknown)}")
    data = decode_bytes(content)
    context = _Context(file, published_at, applied_at, columns)
    for path in (_arrow_parse, _fast_parse):
        parsed = path(data, context)
        if parsed is not None:
            return parsed
    return _slow_parse(data.decode("utf-8"), context)


@dataclass(frozen=True)
class _Context:
    file: FileId
    published_at: datetime
    applied_at: datetime
    columns: Mapping[str, str]

    def quarantined(self, line_no: int, reason: str, raw: str) -> dict[str, object]:
        return {
            "source_key": self.file.source_key,
            "etag": self.file.etag,
            "line_no": line_no,
            "reason": reason,
            "raw": raw,
            "quarantined_at": self.applied_at,
        }


class _BadRow(ValueError):
    pass


def _slow_parse(text: str, context: _Context) -> ParsedReport:
    """Every record through the csv module and `_row`: for files whose quoting the fast path cannot follow."""
    lines: list[dict[str, object]] = []
    quarantine: list[dict[str, object]] = []
    index: dict[str, int] | None = None
    width = 0
    for line_no, raw, fields in _records(text):
        if not fields or fields == [""]:
            continue
        if index is None:
            index, width = header_index(fields, context.columns), len(fields)
            continue
        try:
            lines.append(_checked_row(fields, index, width))
        except _BadRow as exc:
            quarantine.append(context.quarantined(line_no, str(exc), raw))
    return ParsedReport(_lines_table(lines, context), quarantine)


def _checked_row(fields: list[str], index: Mapping[str, int], width: int) -> dict[str, object]:
    if len(fields) != width:
        raise _BadRow(f"expected {width} fields, got {len(fields)}")
    return _row(fields, index)


def _lines_table(rows: Sequence[Mapping[str, object]], context: _Context) -> pa.Table:
    """Per-row results as a `LINES_SCHEMA` table (decimals rounded half-even to the table's 4 places)."""
    arrays = []
    for column in LINES_SCHEMA:
        if column.name == "source_key":
            values: list[object] = [context.file.source_key] * len(rows)
        elif column.name == "file_published_at":
            values = [context.published_at] * len(rows)
        elif column.name in DECIMAL_COLUMNS:
            values = [_four_places(row[column.name]) for row in rows]
        else:
            values = [row[column.name] for row in rows]
        arrays.append(pa.array(values, type=column.type))
    return pa.Table.from_arrays(arrays, schema=LINES_SCHEMA)


def _four_places(value: object) -> object:
    if isinstance(value, Decimal):
        return value.quantize(_FOUR_PLACES, rounding=ROUND_HALF_EVEN, context=_WIDE)
    return value


# --------------------------------------------------------------------------- the fast path


@dataclass(frozen=True)
class _Scan:
    """Where the file's records are: record i is data[starts[i]:ends[i]] (without its line break), with
    fields[i] fields (0 for a blank line); newlines are the offsets of every LF, to number physical lines."""

    starts: pl.Series
    ends: pl.Series
    fields: pl.Series
    newlines: pl.Series

    def line_no(self, record: int) -> int:
        return int(self.newlines.search_sorted(self.starts[record])) + 1


def _bytes(data: bytes) -> pl.Series:
    array = pa.Array.from_buffers(pa.uint8(), len(data), [None, pa.py_buffer(data)])
    series = pl.from_arrow(array)
    assert isinstance(series, pl.Series)
    return series


def _outside(quotes: pl.Series, positions: pl.Series) -> pl.Series:
    """The positions that are outside quotes (an even number of quote characters before them)."""
    if quotes.is_empty():
        return positions
    return positions.filter(quotes.search_sorted(positions, side="left") % 2 == 0)


def _odd_bytes(data: bytes, buf: pl.Series) -> bool:
    """Whether the file (`buf`: its bytes as a series) has bytes the per-row path must judge (NUL, separators
    `str.strip` removes, a CR not followed by a LF)."""
    if any(odd in data for odd in _ODD_BYTES):
        return True
    if b"\r" not in data:
        return False
    after = (buf == 13).arg_true().cast(pl.Int64) + 1
    return bool(after.max() == len(buf) or (buf.gather(after.clip(upper_bound=len(buf) - 1)) != 10).any())


def _plain_bytes(data: bytes) -> bool:
    """`not _odd_bytes(...) and _plain_quoting(...)` for the whole file, without a series when it has few quotes
    (the common case: a report quotes only the odd text field): the quotes found one by one and each pair judged
    as `_plain_quoting` judges it, a lone CR found by a regex."""
    if any(odd in data for odd in _ODD_BYTES) or (b"\r" in data and _LONE_CR.search(data)):
        return False
    quotes: list[int] = []
    at = data.find(b'"')
    while at >= 0:
        if len(quotes) == _FEW_QUOTES:
            buf = _bytes(data)
            return _plain_quoting(buf, (buf == 34).arg_true().cast(pl.Int64))
        quotes.append(at)
        at = data.find(b'"', at + 1)
    if len(quotes) % 2:
        return False  # a quote left open
    size = len(data)
    for n in range(0, len(quotes), 2):
        opening, closing = quotes[n], quotes[n + 1]
        if opening and data[opening - 1] not in b',\n"':
            return False  # an opening quote starts a field or follows a closing one ("" inside)
        if closing + 1 < size and data[closing + 1] not in b',\n\r"':
            return False  # a closing quote ends the field, or is the first of a doubled one
    return True


def _plain_quoting(buf: pl.Series, quotes: pl.Series) -> bool:
    """Whether the quotes (their offsets in `buf`) pair up as RFC 4180 and the csv module read them: each quoted
    field opens at the start of a field and closes at its end, `""` inside it."""
    if len(quotes) % 2:
        return False  # a quote left open
    if quotes.is_empty():
        return True
    size = len(buf)
    opening = quotes.gather_every(2)
    closing = quotes.gather_every(2, offset=1)
    # an opening quote starts a field (after a comma or a line break) or follows a closing one ("" inside)
    prev = buf.gather((opening - 1).clip(lower_bound=0))
    if not (prev.is_in([44, 10, 34]) | (opening == 0)).all():
        return False
    # a closing quote ends the field, or is the first of a doubled one
    after = buf.gather((closing + 1).clip(upper_bound=size - 1))
    return bool((after.is_in([44, 10, 13, 34]) | (closing + 1 >= size)).all())


def _scan(data: bytes) -> _Scan | None:
    """Record boundaries and field counts, quotes followed as RFC 4180 (and the csv module) do; None when the
    file has quoting, line breaks or bytes the per-row path must judge (a quote inside an unquoted field, a
    lone CR, an unclosed quote, NUL)."""
    size = len(data)
    buf = _bytes(data)
    if _odd_bytes(data, buf):
        return None
    quotes = (buf == 34).arg_true().cast(pl.Int64)
    newlines = (buf == 10).arg_true().cast(pl.Int64)
    commas = (buf == 44).arg_true().cast(pl.Int64)
    if not _plain_quoting(buf, quotes):
        return None
    breaks = _outside(quotes, newlines)
    separators = _outside(quotes, commas)
    starts = pl.concat([pl.Series([0], dtype=pl.Int64), breaks + 1])
    ends = pl.concat([breaks, pl.Series([size], dtype=pl.Int64)])
    if size == 0 or starts[-1] == size:  # nothing after the last line break
        starts, ends = starts[:-1], ends[:-1]
    if not ends.is_empty():
        last = buf.gather((ends - 1).clip(lower_bound=0))
        ends = ends - ((ends > starts) & (last == 13)).cast(pl.Int64)  # the record's text without its CR
    fields = separators.search_sorted(ends, side="left") - separators.search_sorted(starts, side="left") + 1
    fields = pl.select(pl.when(ends > starts).then(fields.cast(pl.Int64)).otherwise(0)).to_series()
    return _Scan(starts, ends, fields, newlines)


def _fast_parse(data: bytes, context: _Context) -> ParsedReport | None:
    scan = _scan(data)
    if scan is None:
        return None
    text_of = _RecordText(data, scan)
    records = (scan.fields > 0).arg_true().cast(pl.Int64)
    if records.is_empty():
        return ParsedReport()
    header_fields = _fields(text_of(int(records[0])))
    if not header_fields or header_fields == [""]:
        return None  # a header line csv reads as blank (e.g. '""'): leave it to the per-row path
    index = header_index(header_fields, context.columns)
    width = len(header_fields)
    body = records[1:]
    body_fields = scan.fields.gather(body)
    clean = body.filter(body_fields == width)
    odd = body.filter(body_fields != width)

    frame = _read_clean(data, scan, clean, width, index)
    if frame is None:
        return None
    ok = frame.get_column("_ok")
    fast_rows = clean.filter(ok)
    table = _fast_table(frame.filter(pl.col("_ok")), index, context)

    lines: list[dict[str, object]] = []
    line_records: list[int] = []
    quarantine: list[dict[str, object]] = []
    for record in sorted([*clean.filter(~ok).to_list(), *odd.to_list()]):
        raw = text_of(record)
        fields = _fields(raw)
        if not fields or fields == [""]:
            continue  # csv reads it as a blank line
        try:
            lines.append(_checked_row(fields, index, width))
            line_records.append(record)
        except _BadRow as exc:
            quarantine.append(context.quarantined(scan.line_no(record), str(exc), raw))
    if lines:
        order = pl.concat([fast_rows, pl.Series(line_records, dtype=pl.Int64)]).arg_sort()
        table = pa.concat_tables([table, _lines_table(lines, context)]).take(order.to_arrow())
    return ParsedReport(table, quarantine)


def _arrow_parse(data: bytes, context: _Context) -> ParsedReport | None:
    """The whole file through Arrow's CSV reader (every field a string) and `_checked`; None (the scan decides)
    unless every record is clean: a header alone on the first line, quoting the scan would follow, every record
    the header's field count (blank lines skipped, as the csv module skips them) and every row vouched for."""
    end = data.find(b"\n")
    header_line = (data if end < 0 else data[:end]).removesuffix(b"\r")
    if not header_line or b'"' in header_line:
        return None
    if not _plain_bytes(data):
        return None
    header = _fields(header_line.decode("utf-8"))
    index = header_index(header, context.columns)
    names = [f"c{i}" for i in range(len(header))]
    try:
        read = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                include_columns=[names[p] for p in sorted(index.values())],
                null_values=[""],  # an empty field (quoted or not) is null, as `_checked` makes it
                strings_can_be_null=True,
                check_utf8=False,  # `decode_bytes` checked it
            ),
        )
    except pa.ArrowException:
        return None  # a record with another field count: the scan finds it and its line
    frame = pl.from_arrow(read)
    assert isinstance(frame, pl.DataFrame)
    # The checks and the output columns in one query: every row is cast, vouched for or not, so a decimal that
    # does not cast is null here (`_ok` false where a value did not), and `_fast_table` is not needed.
    checked = _checked_lazy(frame.lazy(), index, names, read_empty_as_null=True)
    out = checked.select([*_table_columns(index, context, strict=False), pl.col("_ok")]).collect()
    if not out.get_column("_ok").all():
        return None
    return ParsedReport(_lines_arrow(out.drop("_ok")))


class _RecordText:
    def __init__(self, data: bytes, scan: _Scan) -> None:
        self._data = data
        self._scan = scan

    def __call__(self, record: int) -> str:
        return self._data[int(self._scan.starts[record]) : int(self._scan.ends[record])].decode("utf-8")


def _fields(raw: str) -> list[str]:
    return next(csv.reader(io.StringIO(raw, newline="")), [])


def _read_clean(
    data: bytes, scan: _Scan, clean: pl.Series, width: int, index: Mapping[str, int]
) -> pl.DataFrame | None:
    """The clean records' mapped fields (stripped, empty as null) and `_ok`: whether the fast path vouches for
    the row. None when polars does not see the records the scan found."""
    names = [f"c{i}" for i in range(width)]
    if len(clean) == 0:
        frame = pl.DataFrame({name: pl.Series([], dtype=pl.String) for name in names})
    else:
        first, last = int(clean[0]), int(clean[-1])
        contiguous = last - first + 1 == len(clean)
        if contiguous:
            body = data[int(scan.starts[first]) : int(scan.ends[last])]
        else:
            body = b"\n".join(data[int(scan.starts[r]) : int(scan.ends[r])] for r in clean.to_list())
        try:
            frame = pl.read_csv(
                body,
                has_header=False,
                infer_schema=False,
                columns=sorted(index.values()),
                quote_char='"',
                raise_if_empty=False,
            )
        except pl.exceptions.PolarsError:
            return None
        if frame.height != len(clean) or frame.width != len(index):
            return None
        frame.columns = [names[p] for p in sorted(index.values())]
    return _checked(frame, index, names)


def _checked(frame: pl.DataFrame, index: Mapping[str, int], names: Sequence[str]) -> pl.DataFrame:
    """The mapped fields (`names[position]` in `frame`) stripped, empty as null, the time columns parsed, and
    `_ok`: whether the fast path vouches for the row."""
    return _checked_lazy(frame.lazy(), index, names).collect()


def _checked_lazy(
    frame: pl.LazyFrame, index: Mapping[str, int], names: Sequence[str], *, read_empty_as_null: bool = False
) -> pl.LazyFrame:
    """`_checked` as a query. `read_empty_as_null`: the reader made every empty field null, so a field is only
    stripped, and `_ok` is for the whole file (`_arrow_parse` takes all its rows or none): false everywhere when a
    field strips to nothing (rare; the other paths then make it null) or a decimal does not cast
    (`_table_columns(strict=False)`)."""
    exprs = []
    checks = [pl.col(c).is_not_null() for c in (*KEY_COLUMNS, *REQUIRED_TIMES)]
    for column, position in index.items():
        value = pl.col(names[position]).str.strip_chars()
        if read_empty_as_null:
            exprs.append(value.alias(column))
        else:
            exprs.append(pl.when(value.str.len_bytes() > 0).then(value).alias(column))
    frame = frame.select(exprs)
    if read_empty_as_null:  # one flag for the file, not a check per field
        checks.append(~pl.any_horizontal([(pl.col(c).str.len_bytes() == 0).any() for c in index]))
    for column in index:
        if column in DECIMAL_COLUMNS:
            checks.append(pl.col(column).is_null() | pl.col(column).str.contains(_FAST_NUMBER))
            if read_empty_as_null:
                checks.append(pl.col(column).is_null() | pl.col(_cast(column)).is_not_null())
        elif column in TIME_COLUMNS:
            parsed = pl.col(_parsed(column))
            checks.append(pl.col(column).is_null() | (pl.col(column).str.contains(_FAST_TIME) & parsed.is_not_null()))
    times = [
        pl.col(c).str.to_datetime(_FAST_TIME_FORMAT, time_unit="us", time_zone="UTC", strict=False).alias(_parsed(c))
        for c in index
        if c in TIME_COLUMNS
    ]
    if read_empty_as_null:  # each decimal cast once, for its check and for the output (`_table_columns`)
        times += [_decimal(c, strict=False).alias(_cast(c)) for c in index if c in DECIMAL_COLUMNS]
    return frame.with_columns(times).with_columns(pl.all_horizontal(checks).alias("_ok"))


def _cast(column: str) -> str:
    """The name of a decimal column's cast values in `_checked_lazy(read_empty_as_null=True)`'s frame."""
    return f"_{column}_cast"


def _parsed(column: str) -> str:
    """The name of a time column's parsed values in `_read_clean`'s frame (parsed once, checked, then kept)."""
    return f"_{column}_parsed"


def _fast_table(frame: pl.DataFrame, index: Mapping[str, int], context: _Context) -> pa.Table:
    rows = frame.height
    out = frame.select(_table_columns(index, context, strict=True))
    if out.height != rows:  # pragma: no cover - select keeps the rows
        raise AssertionError("row count changed")
    return _lines_arrow(out)


def _lines_arrow(frame: pl.DataFrame) -> pa.Table:
    # Polars' own string layout (string views) casts to Arrow strings in half the time of its large strings.
    return frame.to_arrow(compat_level=pl.CompatLevel.newest()).cast(LINES_SCHEMA)


def _decimal(column: str, *, strict: bool) -> pl.Expr:
    return pl.col(column).cast(pl.Decimal(18, 4), strict=strict)


def _table_columns(index: Mapping[str, int], context: _Context, *, strict: bool) -> list[pl.Expr]:
    """The `LINES_SCHEMA` columns of a checked frame: `strict`, of `_checked`'s (a decimal that does not cast
    raises); else of `_checked_lazy(read_empty_as_null=True)`'s (the decimals it cast, null where one did not)."""
    exprs = []
    for column in LINES_SCHEMA:
        name = column.name
        if name == "source_key":
            exprs.append(pl.lit(context.file.source_key, dtype=pl.String).alias(name))
        elif name == "file_published_at":
            exprs.append(pl.lit(context.published_at).dt.cast_time_unit("us").dt.convert_time_zone("UTC").alias(name))
        elif name not in index:
            exprs.append(pl.lit(None, dtype=_POLARS_TYPES[name]).alias(name))
        elif name in DECIMAL_COLUMNS:
            exprs.append((_decimal(name, strict=True) if strict else pl.col(_cast(name))).alias(name))
        elif name in TIME_COLUMNS:
            exprs.append(pl.col(_parsed(name)).alias(name))  # every row kept parsed (`_ok`)
        else:
            exprs.append(pl.col(name))
    return exprs


_POLARS_TYPES: dict[str, pl.DataType] = {
    name: pl.Decimal(18, 4)
    if name in DECIMAL_COLUMNS
    else pl.Datetime("us", "UTC")
    if name in TIME_COLUMNS
    else pl.String()
    for name in LINE_COLUMNS
}


def _row(fields: list[str], index: Mapping[str, int]) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(LINE_COLUMNS)
    for column, position in index.items():
        text = fields[position].strip()
        if not text:
            continue
        if column in DECIMAL_COLUMNS:
            row[column] = parse_decimal(column, text)
        elif column in TIME_COLUMNS:
            row[column] = parse_time(column, text)
        else:
            row[column] = text
    for column in KEY_COLUMNS:
        if row[column] is None:
            raise _BadRow(f"missing key {column}")
    for column in REQUIRED_TIMES:
        if row[column] is None:
            raise _BadRow(f"missing {column}")
    return row


def parse_decimal(column: str, text: str) -> Decimal:
    if not _NUMBER.fullmatch(text):
        raise _BadRow(f"bad number in {column}: {text[:40]!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise _BadRow(f"bad number in {column}: {text[:40]!r}") from None
    if abs(value) >= _MAX_DECIMAL:
        raise _BadRow(f"number out of range in {column}: {text[:40]!r}")
    return value


def parse_time(column: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _BadRow(f"bad date in {column}: {text[:40]!r}") from None
    if value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# --------------------------------------------------------------------------- the notification


def parse_notification(body: str) -> list[ReportObject]:
    """The ObjectCreated records of a reports-queue message: SNS-wrapped (SPEC §3.1) or a raw S3 event.

    An `s3:TestEvent` and non-ObjectCreated records give nothing. Raises NotificationError otherwise.
    """
    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification":
            data = orjson.loads(data["Message"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise NotificationError(f"not an SNS-wrapped S3 notification: {exc}") from None
    if not isinstance(data, dict):
        raise NotificationError("the S3 notification is not a JSON object")
    if data.get("Event") == "s3:TestEvent":
        return []
    records = data.get("Records")
    if not isinstance(records, list):
        raise NotificationError("the S3 notification has no Records")
    found: list[ReportObject] = []
    for record in records:
        try:
            if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith(
                "ObjectCreated"
            ):
                continue
            s3 = record["s3"]
            obj = s3["object"]
            event_time = record.get("eventTime")
            found.append(
                ReportObject(
                    bucket=str(s3["bucket"]["name"]),
                    key=unquote_plus(str(obj["key"])),
                    etag=clean_etag(str(obj.get("eTag") or obj.get("etag") or "")),
                    size=int(obj.get("size", 0)),
                    event_time=parse_time("eventTime", event_time) if event_time else None,
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NotificationError(f"malformed S3 record: {exc}") from None
    return found


def clean_etag(etag: str) -> str:
    """ETags without their quotes (S3 quotes them in GetObject, not in notifications)."""
    return etag.strip().strip('"')
