"""Amazon's Intra-Day S3 reports for a day (SPEC §3.1), with the answer key, and a player that publishes them.

`build_day` is pure and seeded: the same `IntradayConfig` always gives the same files, byte for byte.

- One file every `step_minutes` (96 a day by default), published at the end of its step and covering the orders
  of the preceding `window_minutes`, so an order line appears in up to four consecutive files.
- A line is `pending` until its order settles (a few minutes to over an hour after the order), then `settled`
  with a later `last_updated`: the status changes between the files that carry it.
- Late orders from the previous day appear in random files; a few malformed rows (bad number, bad date,
  missing key) are planted with unique trips; item names carry commas, quotes and line breaks; some files
  are gzipped.
- With `moved_orders`, some orders are restated with another `order_time` (an hour or so later or earlier, or
  the previous day) and a later `last_updated`: the line's key moves to another hour or day.
- Deliveries (the notifications) come out of order, and some twice.

The answer key is the final `intraday_order_lines`: per (shopping_trip_id, line_item_id), the version with the
newest `last_updated`, then from the newest file; and the number of rows to be quarantined.

`publish_day` puts the files into the reports bucket (in publication order) and publishes one SNS-wrapped S3
`ObjectCreated` notification per delivery through the reports topic.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import orjson
from aiobotocore.session import get_session
from pydantic import BaseModel, ConfigDict, Field

from contracts.aws import AwsEndpoint
from contracts.intraday_report import REPORT_COLUMNS

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient

REPORT_HEADER = REPORT_COLUMNS
_CENT = Decimal("0.01")
_ITEMS = (
    ("SKU-00001", "Whole Milk 1gal", Decimal("3.49"), False),
    ("SKU-00002", "Bananas", Decimal("0.59"), True),
    ("SKU-00003", 'Bagels, Everything "NY Style"', Decimal("5.99"), False),
    ("SKU-00004", "Deli Turkey", Decimal("11.99"), True),
    ("SKU-00005", "Sparkling Water, 12 pack", Decimal("6.49"), False),
    ("SKU-00006", "Gift Card\nHoliday Edition", Decimal("25.00"), False),
    ("SKU-00007", "Greek Yogurt", Decimal("1.29"), False),
    ("SKU-00008", "Energy Drink", Decimal("2.99"), False),
)
_BRANDS = ("VISA", "MASTERCARD", "AMEX", "DISCOVER")


class IntradayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 11
    business_date: date = date(2026, 11, 20)
    files: int = Field(96, ge=1)
    step_minutes: int = Field(15, ge=1)
    window_minutes: int = Field(60, ge=1)
    orders_per_step: int = Field(12, ge=0)
    stores: int = Field(3, ge=1)
    late_orders: int = Field(8, ge=0)
    moved_orders: int = Field(0, ge=0)
    """Orders whose `order_time` a later version corrects (by an hour or so either way, or into the previous
    day), with a later `last_updated`: the key moves to another hour's (or day's) segment."""
    malformed_rows: int = Field(6, ge=0)
    duplicate_share: float = Field(0.15, ge=0.0)
    gzip_share: float = Field(0.25, ge=0.0, le=1.0)
    bucket: str = "jwo-reports"
    prefix: str = "intraday/"


@dataclass(frozen=True)
class ReportFile:
    key: str
    published_at: datetime
    content: bytes
    rows: int
    malformed: int


@dataclass(frozen=True)
class IntradayDay:
    config: IntradayConfig
    files: tuple[ReportFile, ...]
    deliveries: tuple[int, ...]
    """Indices into `files`, in notification order: every file at least once, some twice, out of order."""
    expected_lines: tuple[dict[str, object], ...]
    """The final `intraday_order_lines`, sorted by key."""
    expected_quarantined: int

    def source_key(self, index: int) -> str:
        return f"s3://{self.config.bucket}/{self.files[index].key}"


@dataclass(frozen=True)
class _Line:
    order_id: str
    trip: str
    store: str
    order_time: datetime
    line_item_id: str
    sku: str
    name: str
    quantity: Decimal
    unit_price: Decimal
    promotion: Decimal
    tax: Decimal
    settles_at: datetime
    brand: str
    last_four: str
    reconciliation_id: str

    def version(self, at: datetime) -> dict[str, object]:
        settled = self.settles_at <= at
        amount = (self.quantity * self.unit_price).quantize(_CENT, ROUND_HALF_EVEN)
        return {
            "order_id": self.order_id,
            "shopping_trip_id": self.trip,
            "store_id": self.store,
            "order_time": self.order_time,
            "last_updated": self.settles_at if settled else self.order_time,
            "line_item_id": self.line_item_id,
            "merchant_sku": self.sku,
            "item_name": self.name,
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "list_price": self.unit_price,
            "promotion_amount": self.promotion,
            "tax_amount": self.tax,
            "line_total": amount - self.promotion + self.tax,
            "currency": "USD",
            "payment_status": "settled" if settled else "pending",
            "card_brand": self.brand,
            "card_last_four": self.last_four,
            "reconciliation_id": self.reconciliation_id,
        }


def build_day(config: IntradayConfig | None = None) -> IntradayDay:
    config = config or IntradayConfig()
    rng = random.Random(config.seed)
    start = datetime.combine(config.business_date, time(0), UTC)
    step = timedelta(minutes=config.step_minutes)
    window = timedelta(minutes=config.window_minutes)
    published = [start + step * (i + 1) for i in range(config.files)]

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def order(order_time: datetime, settles_at: datetime) -> list[_Line]:
        trip, store = uid(), f"store-{rng.randrange(config.stores) + 1:03d}"
        brand, last_four, recon = rng.choice(_BRANDS), f"{rng.randrange(10_000):04d}", uid()
        lines = []
        for _ in range(rng.randint(1, 3)):
            sku, name, price, weighed = rng.choice(_ITEMS)
            quantity = Decimal(rng.randint(100, 2500)) / 1000 if weighed else Decimal(rng.randint(1, 4))
            amount = (quantity * price).quantize(_CENT, ROUND_HALF_EVEN)
            promotion = (amount * Decimal("0.1")).quantize(_CENT, ROUND_HALF_EVEN) if rng.random() < 0.2 else Decimal(0)
            tax = ((amount - promotion) * Decimal("0.0625")).quantize(_CENT, ROUND_HALF_EVEN)
            lines.append(
                _Line(
                    uid(),
                    trip,
                    store,
                    order_time,
                    uid(),
                    sku,
                    name,
                    quantity,
                    price,
                    promotion,
                    tax,
                    settles_at,
                    brand,
                    last_four,
                    recon,
                )
            )
        # order_id is per order: reuse the first line's
        return [_replace_order_id(line, lines[0].order_id) for line in lines]

    by_step: list[list[_Line]] = []  # the orders of each step; a file's window spans a few steps
    for at in published:
        step_lines: list[_Line] = []
        for _ in range(config.orders_per_step):
            order_time = at - timedelta(seconds=rng.randrange(1, int(step.total_seconds()) + 1))
            step_lines += order(order_time, order_time + timedelta(minutes=rng.randint(5, 80)))
        by_step.append(step_lines)
    reach = -(-window // step) + 1  # steps around a file's own whose orders its window can hold (a step's
    # orders are in [its start, its end), its start included, so the next step's first second belongs here)

    # late orders: from the previous day, in one or two consecutive files
    late: dict[int, list[tuple[_Line, datetime]]] = {}
    for _ in range(config.late_orders):
        index = rng.randrange(config.files)
        order_time = start - timedelta(minutes=rng.randint(90, 1400))
        settled = published[index] - timedelta(minutes=rng.randint(0, 30))
        for line in order(order_time, settled):
            for i in range(index, min(index + rng.randint(1, 2), config.files)):
                late.setdefault(i, []).append((line, published[i]))

    # moved orders: first reported in one or two files, then restated in the next one or two with another
    # order_time (later last_updated), so a key's partition hour or day changes between its versions
    moved: dict[int, list[dict[str, object]]] = {}
    for _ in range(config.moved_orders):
        index = rng.randrange(max(1, config.files - 1))
        order_time = published[index] - timedelta(minutes=rng.randint(1, 40))
        shift = rng.choice([timedelta(minutes=-75), timedelta(minutes=70), timedelta(days=-1)])
        for line in order(order_time, published[-1] + timedelta(days=2)):  # never settled: last_updated = order_time
            first = rng.randint(1, 2)
            for i in range(index, min(index + first, config.files)):
                moved.setdefault(i, []).append(line.version(published[i]))
            for n, i in enumerate(range(index + first, min(index + first + rng.randint(1, 2), config.files))):
                restated = {**line.version(published[i]), "order_time": order_time + shift}
                restated["last_updated"] = published[i] - timedelta(minutes=1 + n)
                moved.setdefault(i, []).append(restated)

    malformed: dict[int, list[list[str]]] = {}
    for n in range(config.malformed_rows):
        index = rng.randrange(config.files)
        malformed.setdefault(index, []).append(_malformed_row(n, published[index]))

    files: list[ReportFile] = []
    winners: dict[tuple[str, str], tuple[datetime, datetime, dict[str, object]]] = {}
    for index, at in enumerate(published):
        ext = ".csv.gz" if rng.random() < config.gzip_share else ".csv"
        key = f"{config.prefix}{config.business_date.isoformat()}/report-{at:%Y%m%dT%H%M}{ext}"
        source_key = f"s3://{config.bucket}/{key}"
        versions = [
            line.version(at)
            for lines in by_step[max(0, index - reach) : index + 2]
            for line in lines
            if at - window < line.order_time <= at
        ]
        versions += [line.version(seen) for line, seen in late.get(index, [])]
        versions += moved.get(index, [])
        bad = malformed.get(index, [])
        for row in versions:
            k = (str(row["shopping_trip_id"]), str(row["line_item_id"]))
            updated = row["last_updated"]
            assert isinstance(updated, datetime)
            current = winners.get(k)
            if current is None or (updated, at) > current[:2]:
                winners[k] = (updated, at, {**row, "source_key": source_key, "file_published_at": at})
        records = [[_text(row[c]) for c in REPORT_HEADER] for row in versions] + bad
        rng.shuffle(records)
        content = _csv_bytes(records)
        if ext == ".csv.gz":
            content = gzip.compress(content, mtime=0)
        files.append(ReportFile(key, at, content, len(records), len(bad)))

    deliveries = list(range(config.files))
    deliveries += [rng.randrange(config.files) for _ in range(round(config.files * config.duplicate_share))]
    rng.shuffle(deliveries)
    expected = tuple(winners[k][2] for k in sorted(winners))
    return IntradayDay(config, tuple(files), tuple(deliveries), expected, config.malformed_rows)


def _replace_order_id(line: _Line, order_id: str) -> _Line:
    return _Line(order_id, *(getattr(line, f) for f in _Line.__dataclass_fields__ if f != "order_id"))


def _malformed_row(n: int, at: datetime) -> list[str]:
    row = dict.fromkeys(REPORT_HEADER, "")
    row.update(
        order_id=f"bad-order-{n}",
        shopping_trip_id=f"bad-trip-{n}",
        store_id="store-001",
        order_time=_text(at - timedelta(minutes=5)),
        last_updated=_text(at - timedelta(minutes=5)),
        line_item_id=f"bad-line-{n}",
        quantity="1",
        unit_price="1.00",
        currency="USD",
        payment_status="pending",
    )
    match n % 3:
        case 0:
            row["unit_price"] = "1,0O"
        case 1:
            row["order_time"] = "2026-13-45T99:00:00Z"
        case _:
            row["line_item_id"] = ""
    return [row[c] for c in REPORT_HEADER]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _csv_bytes(records: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_HEADER)
    writer.writerows(records)
    return out.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- notifications and publishing


def s3_event(bucket: str, key: str, etag: str, size: int, event_time: datetime) -> dict[str, object]:
    """An S3 `ObjectCreated:Put` event as S3 sends it (the key URL-encoded, the ETag without quotes)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag},
                },
            }
        ]
    }


def sns_envelope(topic_arn: str, message_id: str, event: dict[str, object]) -> str:
    """The SNS `Notification` wrapping an S3 event, as it arrives on the reports queue (SPEC §3.1)."""
    return orjson.dumps(
        {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": topic_arn,
            "Subject": "Amazon S3 Notification",
            "Message": orjson.dumps(event).decode(),
        }
    ).decode()


async def put_files(s3: S3Client, bucket: str, files: Sequence[ReportFile]) -> list[str]:
    """Put the files in publication order; their ETags (no quotes)."""
    etags = []
    for file in files:
        response = await s3.put_object(Bucket=bucket, Key=file.key, Body=file.content)
        etags.append(response["ETag"].strip('"'))
    return etags


async def notify(
    sns: SNSClient, topic_arn: str, bucket: str, day: IntradayDay, etags: Sequence[str], deliveries: Sequence[int]
) -> None:
    for index in deliveries:
        file = day.files[index]
        event = s3_event(bucket, file.key, etags[index], len(file.content), file.published_at)
        await sns.publish(TopicArn=topic_arn, Subject="Amazon S3 Notification", Message=orjson.dumps(event).decode())


async def publish_day(endpoint: AwsEndpoint, bucket: str, topic_arn: str, day: IntradayDay) -> list[str]:
    """Put the day's files into the bucket and publish every delivery's notification; returns the ETags."""
    session = get_session()
    kwargs = endpoint.client_kwargs()
    async with session.create_client("s3", **kwargs) as s3, session.create_client("sns", **kwargs) as sns:
        etags = await put_files(s3, bucket, day.files)
        await notify(sns, topic_arn, bucket, day, etags, day.deliveries)
    return etags
