"""Queue messages → warehouse rows. Pure: values in, values out.

`decode_batch` is what the events-queue consumer runs: a whole receive batch through `ingest.columns` (straight
to Arrow columns), and each body that path does not take through `rows_for_message`, one at a time.

Per message, two paths give the same outcome for every body. The fast path (`fast_rows`) parses the body with orjson and
validates it with pydantic-core against TypedDict mirrors of the models (the same field types and constraints,
so the same decision and the same values), then builds the rows from the validated dicts: no model instances,
no `model_dump`. A body the mirrors refuse takes the model path (`model_rows_for_message`: the models
themselves), which decides and words the outcome (`unknown_events` reason, PoisonMessageError text).
"""

from __future__ import annotations

import bisect
import gc
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NotRequired

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from contracts.arrow_rows import ArrowRows
from contracts.messages import (
    PAYLOAD_MODELS,
    AuthEvent,
    BadCart,
    CancelCharge,
    Envelope,
    MessageDecodeError,
    MessageType,
    Purchase,
    decode_envelope,
)
from ingest.columns import decode_columns, has_hooks
from ingest.ports import Decode, DecodeBatch, Decoded, PoisonMessageError, Received, Rows, TableRows

__all__ = ["PoisonMessageError", "decode_batch", "one_at_a_time", "rows_for_message", "unknown_rows"]


def unknown_rows(source: str, message_id: str, kind: str, body: str, received_at: datetime, reason: str) -> Rows:
    """The `unknown_events` row for a message we could not type: kept with the reason, never dropped."""
    row: dict[str, object] = {
        "source": source,
        "message_id": message_id,
        "type": kind,
        "received_at": received_at,
        "body": body,
        "reason": reason,
    }
    return {"unknown_events": [row]}


def rows_for_message(source: str, queue_message_id: str, body: str, received_at: datetime) -> tuple[str, Rows]:
    """(dedup id, rows by table) for one events-queue message. Raises PoisonMessageError."""
    fast = fast_rows(source, body, received_at)
    if fast is not None:
        return fast
    return model_rows_for_message(source, queue_message_id, body, received_at)


def decode_batch(source: str, messages: Sequence[Received], received_at: datetime) -> Decoded:
    """A batch of events-queue messages, as `one_at_a_time(rows_for_message)` decodes it, with the same rows
    (Arrow columns for what `ingest.columns` takes; in message order either way)."""
    with _collector_paused():
        columns = decode_columns([m.body for m in messages])
        outcomes: list[str | PoisonMessageError] = columns.message_ids  # type: ignore[assignment]  # None: filled below
        slow: dict[int, Rows] = {}
        for position in columns.rest:
            message = messages[position]
            try:
                outcomes[position], slow[position] = rows_for_message(
                    source, message.message_id, message.body, received_at
                )
            except PoisonMessageError as exc:
                outcomes[position] = exc
        repeats = _repeats(outcomes)
    rows: TableRows = {}
    for name in sorted(columns.tables.keys() | {t for r in slow.values() for t in r}):
        frame, at = columns.tables.get(name), columns.positions.get(name, [])
        if frame is not None and repeats.intersection(at):
            mask = [p not in repeats for p in at]
            frame, at = frame.filter(mask), [p for p, keep in zip(at, mask, strict=True) if keep]
        others = [(p, r[name]) for p, r in sorted(slow.items()) if name in r and p not in repeats]
        if frame is None:
            rows[name] = [row for _, table_rows in others for row in table_rows]
        elif not others:
            rows[name] = ArrowRows(frame)
        else:
            rows[name] = ArrowRows.of_pieces(_interleave(frame, at, others))
    return Decoded(rows, outcomes)


def one_at_a_time(decode: Decode) -> DecodeBatch:
    """A `DecodeBatch` that runs `decode` on each message and keeps the rows of each dedup id's first message."""

    def decode_each(source: str, messages: Sequence[Received], received_at: datetime) -> Decoded:
        outcomes: list[str | PoisonMessageError] = []
        rows: Rows = {}
        seen: set[str] = set()
        for message in messages:
            try:
                dedup_id, message_rows = decode(source, message.message_id, message.body, received_at)
            except PoisonMessageError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(dedup_id)
            if dedup_id in seen:
                continue
            seen.add(dedup_id)
            for table, table_rows in message_rows.items():
                rows.setdefault(table, []).extend(table_rows)
        return Decoded(dict(rows), outcomes)

    return decode_each


def _repeats(outcomes: list[str | PoisonMessageError]) -> set[int]:
    """Positions of messages whose dedup id an earlier message of the batch already has."""
    if len(set(outcomes)) == len(outcomes):  # no two messages share an id (each poison error is its own object)
        return set()
    seen: set[str] = set()
    repeats: set[int] = set()
    for position, outcome in enumerate(outcomes):
        if isinstance(outcome, str):
            if outcome in seen:
                repeats.add(position)
            seen.add(outcome)
    return repeats


def _interleave(
    frame: pa.Table, at: list[int], others: list[tuple[int, list[dict[str, object]]]]
) -> list[pa.Table | Sequence[Mapping[str, object]]]:
    """The Arrow rows (batch positions `at`, ascending) and the other messages' rows, in batch order."""
    pieces: list[pa.Table | Sequence[Mapping[str, object]]] = []
    start = 0
    for position, table_rows in others:
        cut = bisect.bisect_left(at, position)
        if cut > start:
            pieces.append(frame.slice(start, cut - start))
        pieces.append(table_rows)
        start = cut
    if start < frame.num_rows:
        pieces.append(frame.slice(start))
    return pieces


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is parsed: its many new dicts and tuples would set off
    collections that find nothing (they hold no cycles) and cost about a quarter of the decode time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def model_rows_for_message(source: str, queue_message_id: str, body: str, received_at: datetime) -> tuple[str, Rows]:
    """`rows_for_message` through the pydantic models alone: the reference the fast path must agree with."""
    try:
        envelope = decode_envelope(body)
    except MessageDecodeError as exc:
        return queue_message_id, unknown_rows(source, queue_message_id, "undecodable", body, received_at, str(exc))
    try:
        payload = envelope.typed_payload()
    except ValidationError as exc:
        raise PoisonMessageError(f"{envelope.type} message {envelope.message_id}: {exc}") from exc
    if payload is None:
        reason = f"unknown message type {envelope.type!r}"
        return envelope.message_id, unknown_rows(source, envelope.message_id, envelope.type, body, received_at, reason)
    return envelope.message_id, payload_rows(payload)


def payload_rows(payload: AuthEvent | Purchase | BadCart | CancelCharge) -> Rows:
    if isinstance(payload, AuthEvent):
        return {"auth_events": [payload.model_dump()]}
    if isinstance(payload, Purchase):
        purchase = payload.model_dump(exclude={"lines"})
        lines = [
            {
                **line.model_dump(exclude={"name"}),
                "shopping_trip_id": payload.shopping_trip_id,
                "end_time": payload.end_time,
            }
            for line in payload.lines
        ]
        return {"purchases": [purchase], "purchase_lines": lines}
    if isinstance(payload, BadCart):
        return {
            "bad_carts": [
                {
                    "shopping_trip_id": payload.shopping_trip_id,
                    "store_id": payload.store_id,
                    "item_id": item.item_id,
                    "item_type": item.item_type,
                    "reason": item.reason,
                    "created_at": payload.created_at,
                }
                for item in payload.items
            ]
        }
    return {"cancel_charges": [payload.model_dump()]}


# ---------------------------------------------------------------------------------------------------------------
# The fast path.


class _Unsupported(Exception):
    """A model the fast path cannot mirror exactly (validators, serializers, aliases ...): it stays off."""


@dataclass(frozen=True)
class _Mirror:
    """A model's fields as a TypedDict validated by pydantic-core: the same checks on every field as the
    model's, with no model instance to build and dump. The TypedDict leaves a missing defaulted field out;
    `complete` puts the model's default in, so the dict equals the model's `model_dump()`."""

    fields: type
    """The TypedDict."""
    adapter: TypeAdapter[Any]
    defaults: tuple[tuple[str, object], ...]
    nested: tuple[tuple[str, _Mirror], ...]

    def complete(self, data: dict[str, Any]) -> dict[str, Any]:
        for name, default in self.defaults:
            if name not in data:
                data[name] = default
        for name, mirror in self.nested:
            for item in data[name]:
                mirror.complete(item)
        return data

    def check(self, data: object) -> dict[str, Any] | None:
        """The model's `model_dump()` of `data`, or None when the model would refuse it."""
        try:
            checked: dict[str, Any] = self.adapter.validate_python(data)
        except ValidationError:
            return None
        return self.complete(checked)


_TYPED_DICT: Any = TypedDict  # pydantic needs typing_extensions' on Python < 3.12


def _mirror(model: type[BaseModel]) -> _Mirror:
    config = model.model_config
    unsupported = {"alias_generator", "validate_default", "from_attributes", "coerce_numbers_to_str"}
    if has_hooks(model) or unsupported & {k for k, v in config.items() if v}:
        raise _Unsupported(f"{model.__name__}: config {config} or validators/serializers")
    fields: dict[str, object] = {}
    defaults: list[tuple[str, object]] = []
    nested: list[tuple[str, _Mirror]] = []
    for name, info in model.model_fields.items():
        if info.alias not in (None, name) or info.validation_alias not in (None, name) or info.exclude:
            raise _Unsupported(f"{model.__name__}.{name}: alias or exclude")
        annotation: Any = info.annotation
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            item = _mirror(args[0])
            nested.append((name, item))
            annotation = list[item.fields]  # type: ignore[name-defined]
        elif any(isinstance(a, type) and issubclass(a, BaseModel) for a in args) or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)
        ):
            raise _Unsupported(f"{model.__name__}.{name}: {annotation}")
        if info.metadata:
            annotation = Annotated.__class_getitem__((annotation, *info.metadata))  # type: ignore[attr-defined]
        if not info.is_required():
            if info.default_factory is not None or not isinstance(info.default, (str, int, type(None))):
                raise _Unsupported(f"{model.__name__}.{name}: default {info.default!r}")
            defaults.append((name, info.default))
            annotation = NotRequired[annotation]
        fields[name] = annotation
    mirror: Any = _TYPED_DICT(f"{model.__name__}Fields", fields)
    mirror.__pydantic_config__ = ConfigDict(**{k: v for k, v in config.items() if k not in ("frozen", "title")})  # type: ignore[typeddict-item]
    return _Mirror(mirror, TypeAdapter(mirror), tuple(defaults), tuple(nested))


def _mirrors() -> tuple[_Mirror, dict[str, _Mirror]] | None:
    try:
        return _mirror(Envelope), {kind.value: _mirror(model) for kind, model in PAYLOAD_MODELS.items()}
    except _Unsupported:
        return None  # a model grew something the mirrors cannot follow: every message takes the model path


MIRRORS = _mirrors()
"""(envelope mirror, payload mirror by message type), or None when the fast path is off (tests require it on)."""


def fast_rows(source: str, body: str, received_at: datetime) -> tuple[str, Rows] | None:
    """`rows_for_message` for a body the models accept, else None (take the model path, which words the error)."""
    if MIRRORS is None:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    envelope = MIRRORS[0].check(data)
    if envelope is None:
        return None
    message_id, kind = envelope["message_id"], envelope["type"]
    mirror = MIRRORS[1].get(kind)
    if mirror is None:
        reason = f"unknown message type {kind!r}"
        return message_id, unknown_rows(source, message_id, kind, body, received_at, reason)
    payload = mirror.check(envelope["payload"])
    if payload is None:
        return None
    return message_id, _rows_of(kind, payload)


def _rows_of(kind: str, payload: dict[str, Any]) -> Rows:
    """`payload_rows` of a checked payload (the dict its model's `model_dump()` would give)."""
    if kind == MessageType.AUTH_EVENT:
        return {"auth_events": [payload]}
    if kind == MessageType.PURCHASE:
        lines: list[dict[str, Any]] = payload.pop("lines")
        trip, end = payload["shopping_trip_id"], payload["end_time"]
        for line in lines:
            del line["name"]
            line["shopping_trip_id"] = trip
            line["end_time"] = end
        return {"purchases": [payload], "purchase_lines": lines}
    if kind == MessageType.BAD_CART:
        trip, store, created = payload["shopping_trip_id"], payload["store_id"], payload["created_at"]
        return {
            "bad_carts": [
                {
                    "shopping_trip_id": trip,
                    "store_id": store,
                    "item_id": item["item_id"],
                    "item_type": item["item_type"],
                    "reason": item["reason"],
                    "created_at": created,
                }
                for item in payload["items"]
            ]
        }
    return {"cancel_charges": [payload]}
