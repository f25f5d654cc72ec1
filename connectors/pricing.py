"""Cart pricing (SPEC §2.5): exact decimals, half-even rounding to the currency's minor unit at each step."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

_MINOR_UNITS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}
ZERO = Decimal(0)


_QUANTA: dict[str, Decimal] = {}


def quantum(currency: str) -> Decimal:
    found = _QUANTA.get(currency)
    if found is None:
        found = _QUANTA[currency] = Decimal(1).scaleb(-_MINOR_UNITS.get(currency.upper(), 2))
    return found


def round_money(value: Decimal, currency: str) -> Decimal:
    return value.quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class CatalogItem:
    store_id: str
    sku: str
    name: str
    unit_price: Decimal
    currency: str
    tax_rate: Decimal
    promotion_percent: Decimal | None = None


@dataclass(frozen=True)
class PricedLine:
    amount: Decimal
    discount: Decimal
    tax: Decimal
    line_total: Decimal


def price_line(item: CatalogItem, quantity: Decimal) -> PricedLine:
    currency = item.currency
    amount = round_money(quantity * item.unit_price, currency)
    discount = ZERO
    if item.promotion_percent:
        discount = round_money(amount * item.promotion_percent / 100, currency)
    tax = round_money((amount - discount) * item.tax_rate, currency)
    return PricedLine(amount=amount, discount=discount, tax=tax, line_total=amount - discount + tax)


UNKNOWN_LINE = PricedLine(ZERO, ZERO, ZERO, ZERO)
