"""Amazon's Event Feed (SPEC §3.2): the EventBridge envelope and the CART and PAYMENT details.

The simulator produces these (it plays Amazon) and ingest consumes them. Attributes are snake_case; on the
wire the names are camelCase (`merchantSku`) and the envelope's `detail-type`. Unknown fields are ignored:
the vendor adds attributes without notice.

Numbers are exact. Read a body with `loads_exact` (every JSON number with a fraction or exponent becomes a
`Decimal`, never a float) and write one with `dumps_exact` (a `Decimal` becomes a JSON number with exactly its
digits). Money and quantity fields accept a JSON number or a numeric string, refuse floats, NaN and infinity,
and must fit the warehouse's DECIMAL(18,4) without rounding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from enum import Enum, StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

DEFAULT_SOURCE = "jwo.eventfeed"
"""The envelope `source` the feed is published under unless configured otherwise."""

EXACT_PLACES = 4
_EXACT_LIMIT = Decimal(10) ** (18 - EXACT_PLACES)
_EXACT_STEP = Decimal(1).scaleb(-EXACT_PLACES)


class DetailType(StrEnum):
    CART = "CART"
    PAYMENT = "PAYMENT"


class PaymentSubType(StrEnum):
    AUTHORIZATION_APPROVED = "AuthorizationApproved"
    AUTHORIZATION_DECLINED = "AuthorizationDeclined"
    CAPTURE_APPROVED = "CaptureApproved"
    CAPTURE_DECLINED = "CaptureDeclined"


def _no_float(value: object) -> object:
    if isinstance(value, bool | float):
        raise ValueError(f"{type(value).__name__} {value!r} cannot hold an exact amount; send a number or a string")
    return value


def _fits_decimal_18_4(value: Decimal) -> Decimal:
    if abs(value) >= _EXACT_LIMIT or value != value.quantize(_EXACT_STEP, rounding=ROUND_DOWN):
        raise ValueError(f"{value} does not fit DECIMAL(18,{EXACT_PLACES}) exactly")
    return value


Exact = Annotated[Decimal, BeforeValidator(_no_float), Field(allow_inf_nan=False), AfterValidator(_fits_decimal_18_4)]
"""A money amount or quantity: exact, finite, at most 14 integer digits and 4 decimal places."""

Id = Annotated[str, Field(min_length=1, max_length=255)]


class _Wire(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class PromotionInfo(_Wire):
    promotion_id: str | None = None
    amount: Exact
    """What the promotion took off the line."""


class CartItem(_Wire):
    """One cart line. Our reading of the vendor's names: `price_value` is the line's price before promotions
    (quantity x list price), `list_price_value` the unit list price, `tax_value` the line's tax."""

    merchant_sku: Id
    quantity_value: Exact
    price_value: Exact
    tax_value: Exact | None = None
    list_price_value: Exact | None = None
    promotion_infos: tuple[PromotionInfo, ...] = ()


class CartDetail(_Wire):
    shopping_trip_id: Id
    store_id: Id
    event_time: AwareDatetime
    cart_items: tuple[CartItem, ...]


class PaymentAmount(_Wire):
    value: Exact
    currency_code: str = Field(pattern=r"^[A-Z]{3}$")


class PaymentDetail(_Wire):
    """A payment outcome. Amazon may send more than the last four card digits; ingest keeps the last four."""

    shopping_trip_id: Id
    store_id: Id
    event_time: AwareDatetime
    sub_type: PaymentSubType
    amount: PaymentAmount
    brand: str | None = None
    card_last_four_digits: str | None = None
    reconciliation_id: str | None = None
    status: str | None = None


class EventEnvelope(BaseModel):
    """The standard EventBridge envelope, as the rule's SQS target delivers it. `id` de-duplicates."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, serialize_by_alias=True)

    version: str = "0"
    id: str = Field(min_length=1)
    detail_type: str = Field(alias="detail-type", min_length=1)
    source: str | None = None
    account: str | None = None
    time: AwareDatetime | None = None
    region: str | None = None
    resources: tuple[str, ...] = ()
    detail: dict[str, Any]


def wire_time(moment: datetime) -> str:
    """A time as EventBridge writes one: `2026-11-20T13:03:14Z` (fractions kept when present)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def loads_exact(text: str | bytes) -> Any:
    """JSON with every non-integer number as a `Decimal`; NaN and Infinity are refused (ValueError)."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


def dumps_exact(value: Any) -> str:
    """JSON text in which a `Decimal` is a number with exactly its digits. Floats are refused (TypeError).

    Handles mappings, lists and tuples, str, int, bool, None, `Decimal`, `datetime` (as `wire_time`) and enums.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written as a JSON number")
        return format(value, "f")
    if isinstance(value, float):
        raise TypeError(f"float {value!r} cannot carry an exact amount; use Decimal")
    if isinstance(value, datetime):
        return json.dumps(wire_time(value))
    if isinstance(value, Enum):
        return dumps_exact(value.value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    if value is None or isinstance(value, str | int):
        return json.dumps(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
