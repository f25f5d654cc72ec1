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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import unquote_plus

import orjson

GZIP_MAGIC = b"\x1f\x8b"
KEY_COLUMNS = ("shopping_trip_id", "line_item_id")
REQUIRED_TIMES = ("order_time", "last_updated")
DECIMAL_COLUMNS = frozenset({"quantity", "unit_price", "list_price", "promotion_amount", "tax_amount", "line_total"})
TIME_COLUMNS = frozenset(REQUIRED_TIMES)
LINE_COLUMNS = (
    "order_id",
    "shopping_trip_id",
    "store_id",
    "order_time",
    "last_updated",
    "line_item_id",
    "merchant_sku",
    "item_name",
    "quantity",
    "unit_price",
    "list_price",
    "promotion_amount",
    "tax_amount",
    "line_total",
    "currency",
    "payment_status",
    "card_brand",
    "card_last_four",
    "reconciliation_id",
)
"""The `intraday_order_lines` columns that come from the file (source_key and file_published_at do not)."""

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_DECIMAL = Decimal(10) ** 14  # DECIMAL(18,4) holds 14 integer digits


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


@dataclass
class ParsedReport:
    lines: list[dict[str, object]] = field(default_factory=list)
    quarantine: list[dict[str, object]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.lines) + len(self.quarantine)


# --------------------------------------------------------------------------- the file


def decode_text(content: bytes) -> str:
    """The file's text: gunzipped when it starts with the gzip magic, UTF-8 with an optional BOM."""
    if content[:2] == GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReportFileError(f"corrupt gzip: {exc}") from exc
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportFileError(f"not UTF-8: {exc}") from exc


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
    """The file's order lines and quarantined rows. Raises ReportFileError when the file cannot be read."""
    unknown = sorted(set(columns.values()) - set(LINE_COLUMNS))
    if unknown:
        raise ReportFileError(f"the column mapping names unknown warehouse columns: {', '.join(unknown)}")
    text = decode_text(content)
    parsed = ParsedReport()
    records = _records(text)
    index: dict[str, int] | None = None
    width = 0
    for line_no, raw, fields in records:
        if not fields or fields == [""]:
            continue
        if index is None:
            index, width = header_index(fields, columns), len(fields)
            continue
        try:
            if len(fields) != width:
                raise _BadRow(f"expected {width} fields, got {len(fields)}")
            row = _row(fields, index)
        except _BadRow as exc:
            parsed.quarantine.append(
                {
                    "source_key": file.source_key,
                    "etag": file.etag,
                    "line_no": line_no,
                    "reason": str(exc),
                    "raw": raw,
                    "quarantined_at": applied_at,
                }
            )
            continue
        row["source_key"] = file.source_key
        row["file_published_at"] = published_at
        parsed.lines.append(row)
    return parsed


class _BadRow(ValueError):
    pass


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
