"""Request and response models of the four connector endpoints (SPEC §2.1-2.4).

Every constraint lives here so that it is enforced and also published in `/openapi.json`.
Unknown fields are ignored (Amazon adds attributes over time).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_HAS_TIME = re.compile(r"^[^Tt ]+[Tt ][0-9]")


def _parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("timestamp_type", "must be an ISO-8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or not _HAS_TIME.search(value):  # a bare date is not a date-time
        raise PydanticCustomError("timestamp_format", "must be an ISO-8601 date-time such as 2024-04-25T13:03:14Z")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in the year 0 in UTC
        raise PydanticCustomError("timestamp_range", "must be a date-time within the years 1 to 9999 in UTC") from None


def _check_base64(value: str) -> str:
    try:
        base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("base64", "must be valid Base64") from None
    return value


Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
RequestId = Annotated[str, StringConstraints(pattern=UUID_PATTERN), Field(exclude=True)]
"""A request's `requestId`: new on every retry, so left out of the request's serialization, which is what
an idempotency key's body is compared by (`connectors.service.fingerprint`)."""
Timestamp = Annotated[datetime, BeforeValidator(_parse_timestamp)]
Id255 = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Opt255 = Annotated[str, StringConstraints(max_length=255)]
Text1000 = Annotated[str, StringConstraints(max_length=1000)]
NonEmpty1000 = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Base64Key = Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_check_base64)]

AuthLocation = Literal["ENTRY", "EXIT", "MANUAL_IN_STORE"]
KeyChannel = Literal["OPTICAL", "RADIO", "CONTACT"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- 2.1 ResolveScan ---------------------------------------------------------------------------


class ScanEvent(_Request):
    id: NonEmpty1000 = Field(description="Scan event id: a UUID, or the static Base64 QR payload")
    timestamp: Timestamp
    location: AuthLocation
    value: Text1000 = Field(description="Scanned payload, Base64 unless channel is RADIO")
    channel: KeyChannel


class ResolveScanRequest(_Request):
    requestId: RequestId
    storeId: Id255
    scanEvent: ScanEvent


class ResolveScanResponse(BaseModel):
    id: Opt255
    type: Literal["SHOPPER", "ASSOCIATE", "CASH", "LOYALTY"]
    action: Literal["ACCEPT", "REJECT"]


# --- 2.2 VerifyIdentityKeys --------------------------------------------------------------------


class AuthEvent(_Request):
    id: Uuid
    timestamp: Timestamp
    location: AuthLocation


class VerifyIdentityKeysRequest(_Request):
    requestId: RequestId
    identityKey: Base64Key
    storeId: Id255
    authEvent: AuthEvent
    keyChannel: KeyChannel | None = None


class VisitorDetails(BaseModel):
    id: Opt255
    type: Literal["SHOPPER", "ASSOCIATE", "CASH_SHOPPER"]


class VerifyIdentityKeysResponse(BaseModel):
    visitorDetails: VisitorDetails


# --- 2.3 GetShopper ----------------------------------------------------------------------------


class GetShopperRequest(_Request):
    requestId: RequestId
    shopperKey: NonEmpty1000
    shopperKeyType: Literal["QR_CODE", "PHONE_NUMBER"] = "QR_CODE"
    storeId: Id255
    timestamp: Timestamp

    @model_validator(mode="after")
    def _key_matches_type(self) -> GetShopperRequest:
        if self.shopperKeyType == "QR_CODE":
            try:
                _check_base64(self.shopperKey)
            except PydanticCustomError:
                raise PydanticCustomError("base64", "shopperKey: must be valid Base64 for a QR_CODE key") from None
        elif not any(ch.isdigit() for ch in self.shopperKey):
            raise PydanticCustomError("phone", "shopperKey must be an E.123 phone number")
        return self


class GetShopperResponse(BaseModel):
    shopperId: Opt255


# --- 2.4 CreatePurchases -----------------------------------------------------------------------


class ScanResult(_Request):
    id: Opt255
    type: Literal["SHOPPER", "ASSOCIATE", "CASH", "LOYALTY"]


class TripAuthEvent(_Request):
    id: Uuid
    timestamp: Timestamp
    location: AuthLocation
    payloadType: Literal["FINANCIAL", "SCAN_CODE"]
    scanResult: ScanResult | None = None


class ShoppingTrip(_Request):
    startTime: Timestamp
    endTime: Timestamp
    authEvents: list[TripAuthEvent]

    @model_validator(mode="after")
    def _end_not_before_start(self) -> ShoppingTrip:
        if self.endTime < self.startTime:
            raise PydanticCustomError("trip_times", "endTime must not be before startTime")
        return self


class Quantity(_Request):
    value: Annotated[str, StringConstraints(min_length=1, max_length=10, pattern=DECIMAL_PATTERN)] = Field(
        description='Decimal as a string, e.g. "1.0" or "0.455"'
    )
    unit: Annotated[str, StringConstraints(max_length=255)]


class ExternalIdentifier(_Request):
    id: Opt255
    type: Opt255


class CartItem(_Request):
    id: Id255
    type: Literal["SKU", "SCANCODE"]
    quantity: Quantity
    externalIdentifiers: list[ExternalIdentifier] | None = None
    lineItemId: Id255 | None = None


class ShopperIdentity(_Request):
    id: Opt255


class PaymentSource(_Request):
    id: Opt255


class CreatePurchasesRequest(_Request):
    requestId: RequestId
    idempotentShoppingTripId: Id255
    storeId: Id255
    shoppingTrip: ShoppingTrip
    cartItems: list[CartItem]
    shopperIdentity: ShopperIdentity | None = None
    shopperDeviceId: Opt255 | None = None
    paymentSource: PaymentSource | None = None

    @model_validator(mode="after")
    def _line_item_ids_unique(self) -> CreatePurchasesRequest:
        seen: set[str] = set()
        for item in self.cartItems:
            if item.lineItemId is None:
                continue
            if item.lineItemId in seen:
                raise PydanticCustomError(
                    "duplicate_line_item",
                    "cartItems: duplicate lineItemId {line_item_id}",
                    {"line_item_id": item.lineItemId},
                )
            seen.add(item.lineItemId)
        return self


class CreatePurchasesResponse(BaseModel):
    purchaseId: Annotated[str, StringConstraints(max_length=255)]


class ErrorResponse(BaseModel):
    message: str
