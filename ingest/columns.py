"""Events-queue bodies → Arrow columns, a whole receive batch at once. Pure: values in, values out.

The per-message paths (`ingest.decode`) build a dict per row with `Decimal`s and `datetime`s, which the lake then
converts to Arrow. Here a batch goes to Arrow columns without a Python object per value, by one of two paths:

- `read_bodies`: the bodies of each message type are read by `pyarrow.json` in one call (C++), against that
  type's schema, every JSON string a string column; every check then runs on a whole column. This takes every
  body the connectors write.
- the bodies it leaves (a read refused, a check refused) are parsed one by one with orjson, and a payload's values
  are only gathered into columns (one tuple per row, transposed in C); the same checks run on the columns.

Either way decimals and times go from their JSON strings straight to Arrow (`decimal128(18,4)`,
`timestamp[us, UTC]`) by Arrow's cast, never through Python objects or floats.

Only what the models would accept with the same values takes these paths, and they are strict on purpose: a body
must have only the connectors' keys (the orjson path: exactly those; the reader: no others, and a missing key whose
default is None is read as None, any other missing key sends the body on), every value exactly the JSON type the
connectors write, a decimal a string Arrow reads exactly as DECIMAL(18,4) (at most 14 integer and 4 fraction
digits), a time `YYYY-MM-DD(T| )HH:MM:SS[.ffffff]Z` or `YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM` with a real calendar
date. Every other body, and every body of a type they do not know, goes to `ingest.decode.rows_for_message`, which
decides and words the outcome as before. The checks derive from the payload models at import; a model with anything
they cannot follow (validators, constraints, other field types) leaves its type to the per-message path.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from itertools import pairwise
from operator import itemgetter
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import BaseModel

from contracts.messages import PAYLOAD_MODELS, Envelope
from contracts.tables import TABLES, Table

TIME_PATTERN = (
    r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)
"""The one time form taken: `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`. Arrow's cast then refuses what is out of
range (month 13, hour 24, second 60, a day the month lacks, an offset of 24 h or more), as pydantic does. Arrow
alone would also read `THH` without minutes and `±HH` offsets, which pydantic refuses: hence the pattern."""
_TIME = re.compile(TIME_PATTERN)
_INT64 = (-(2**63), 2**63)
_MONEY = pa.decimal128(18, 4)
_UTC_MICROS = pa.timestamp("us", tz="UTC")
_ARROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)


class Check(Enum):
    STR = "str"
    OPTIONAL_STR = "str | None"
    LITERAL = "literal"
    INT = "int"
    BOOL = "bool"
    DECIMAL = "Decimal"
    OPTIONAL_DECIMAL = "Decimal | None"
    TIME = "datetime"


class BadValuesError(Exception):
    """Values at these positions of a column are not what the fast path takes."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"{len(positions)} values")
        self.positions = positions


@dataclass(frozen=True)
class FieldCheck:
    name: str
    check: Check
    allowed: frozenset[str] = frozenset()
    """The values of a `Literal` field."""

    def ok(self, value: object) -> bool:
        """One value, the slow way: only to find which values of a column that failed are to blame."""
        check = self.check
        if check is Check.STR:
            return type(value) is str
        if check is Check.OPTIONAL_STR:
            return value is None or type(value) is str
        if check is Check.LITERAL:
            return type(value) is str and value in self.allowed
        if check is Check.INT:
            return type(value) is int and _INT64[0] <= value < _INT64[1]
        if check is Check.BOOL:
            return type(value) is bool
        if check is Check.OPTIONAL_DECIMAL and value is None:
            return True
        if type(value) is not str or (check is Check.TIME and not _TIME.match(value)):
            return False
        try:
            pc.cast(pa.array([value], pa.string()), _UTC_MICROS if check is Check.TIME else _MONEY)
        except _ARROW_ERRORS:
            return False
        return True

    def array(self, values: Sequence[object]) -> pa.Array:
        """The column as Arrow, every value checked. Raises BadValuesError naming the values that fail."""
        try:
            built = self._array(values)
        except _ARROW_ERRORS:
            built = None
        if built is None:
            raise BadValuesError([n for n, value in enumerate(values) if not self.ok(value)])
        return built

    def read(self, column: pa.Array) -> pa.Array:
        """A column as `pyarrow.json` read it (`READER_TYPES`: JSON strings as strings, integers as int64, booleans
        as bool; a missing key or a JSON null is a null), checked and converted as `array` does. Raises
        BadValuesError naming the values that fail."""
        try:
            if self.check in (Check.INT, Check.BOOL):
                built = None if column.null_count else column
            else:
                built = self._of_text(column)
        except _ARROW_ERRORS:
            built = None
        if built is None:
            raise BadValuesError([n for n, value in enumerate(column.to_pylist()) if not self.ok(value)])
        return built

    def _array(self, values: Sequence[object]) -> pa.Array | None:
        check = self.check
        if check is Check.INT:
            return pa.array(values, pa.int64()) if set(map(type, values)) <= {int} else None
        if check is Check.BOOL:
            return pa.array(values, pa.bool_()) if set(map(type, values)) <= {bool} else None
        return self._of_text(pa.array(values, pa.string()))  # refuses anything but str (and None)

    def _of_text(self, text: pa.Array) -> pa.Array | None:
        check = self.check
        nullable = check in (Check.OPTIONAL_STR, Check.OPTIONAL_DECIMAL)
        if text.null_count and not nullable:
            return None
        if check in (Check.STR, Check.OPTIONAL_STR):
            return text
        if check is Check.LITERAL:
            known = pc.is_in(text, value_set=pa.array(sorted(self.allowed), pa.string()))
            return text if pc.all(known).as_py() is not False else None
        if check is Check.TIME:
            if not _utc_seconds(text) and pc.all(pc.match_substring_regex(text, TIME_PATTERN)).as_py() is False:
                return None
            return pc.cast(text, _UTC_MICROS)
        # Arrow reads a decimal string exactly or refuses it (too many digits for DECIMAL(18,4), not a number);
        # everything it reads (`1.5`, `-0.00`, `+1`, `.5`, `1e3`) pydantic's Decimal reads as the same number.
        return pc.cast(text, _MONEY)


_Z_LENGTHS = pa.array([20, 22, 23, 24, 25, 26, 27], pa.int32())


def _utc_seconds(text: pa.Array) -> bool:
    """Whether every time ends in `Z` and is 20 or 22-27 characters long: the only such forms Arrow's cast reads
    are `YYYY-MM-DD(T| )HH:MM:SS[.f{1,6}]Z` (no minutes or no seconds would be shorter), which pydantic reads
    as the same instant. The common case, checked far faster than the pattern."""
    lengths = pc.utf8_length(text)
    return bool(pc.all(pc.and_(pc.ends_with(text, "Z"), pc.is_in(lengths, value_set=_Z_LENGTHS))).as_py())


class Unsupported(Exception):
    """A model field the fast path cannot check exactly as the model does."""


_ANNOTATIONS: dict[object, Check] = {
    str: Check.STR,
    str | None: Check.OPTIONAL_STR,
    int: Check.INT,
    bool: Check.BOOL,
    Decimal: Check.DECIMAL,
    Decimal | None: Check.OPTIONAL_DECIMAL,
    datetime: Check.TIME,
}


@dataclass(frozen=True)
class Shape:
    """A payload model's fields (and one nested list of models at most), as column checks."""

    fields: tuple[FieldCheck, ...]
    nested: tuple[str, Shape] | None
    missing_is_none: bool = True
    """Whether every field that takes None is None when its key is missing (its default): then a reader that reads
    a missing key and a JSON null alike (`pyarrow.json`) reads what the model reads."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> FieldCheck:
        return next(f for f in self.fields if f.name == name)


def has_hooks(model: type[BaseModel]) -> bool:
    """Whether the model has validators, serializers or computed fields (a fast path cannot mirror them)."""
    d = model.__pydantic_decorators__
    return any(
        (
            d.validators,
            d.field_validators,
            d.root_validators,
            d.model_validators,
            d.field_serializers,
            d.model_serializers,
            d.computed_fields,
        )
    )


def shape_of(model: type[BaseModel]) -> Shape:
    """Raises Unsupported for anything but plain fields of the types above, with no validators or constraints."""
    config = model.model_config
    if has_hooks(model) or config.get("extra") != "forbid" or config.get("strict") or config.get("alias_generator"):
        raise Unsupported(f"{model.__name__}: validators, serializers or config {config}")
    fields: list[FieldCheck] = []
    nested: tuple[str, Shape] | None = None
    missing_is_none = True
    for name, info in model.model_fields.items():
        if info.metadata or info.alias not in (None, name) or info.validation_alias not in (None, name):
            raise Unsupported(f"{model.__name__}.{name}: constraints or aliases")
        annotation: Any = info.annotation
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is list and len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            if nested is not None:
                raise Unsupported(f"{model.__name__}: more than one list")
            nested = (name, shape_of(args[0]))
        elif origin is Literal and args and all(type(a) is str for a in args):
            fields.append(FieldCheck(name, Check.LITERAL, frozenset(args)))
        elif annotation in _ANNOTATIONS:
            fields.append(FieldCheck(name, _ANNOTATIONS[annotation]))
            if fields[-1].check in _NULLABLE and (info.is_required() or info.default is not None):
                missing_is_none = False
        else:
            raise Unsupported(f"{model.__name__}.{name}: {annotation}")
    if nested is not None and not nested[1].missing_is_none:
        missing_is_none = False
    return Shape(tuple(fields), nested, missing_is_none)


_NULLABLE = frozenset({Check.OPTIONAL_STR, Check.OPTIONAL_DECIMAL})


@dataclass(frozen=True)
class Output:
    """Which tables a message type's rows go to, as `ingest.decode.payload_rows` writes them: the payload itself
    (one row) and/or its nested list (a row per item, with the payload's fields the table also has)."""

    top: Table | None
    items: Table | None


OUTPUTS: dict[str, Output] = {
    "auth_event": Output(TABLES["auth_events"], None),
    "purchase": Output(TABLES["purchases"], TABLES["purchase_lines"]),
    "bad_cart": Output(None, TABLES["bad_carts"]),
    "cancel_charge": Output(TABLES["cancel_charges"], None),
}

ENVELOPE_FIELDS = ("message_id", "type", "schema_version", "occurred_at", "producer", "payload", "part", "parts")
"""The envelope's keys as the connectors write them (`encode_envelope`); a body with others takes the slow path."""


def _envelope_matches() -> bool:
    """The envelope checks below are written by hand: they hold only while the model is what they expect."""
    decorators = Envelope.__pydantic_decorators__
    return tuple(Envelope.model_fields) == ENVELOPE_FIELDS and not (
        decorators.field_validators or decorators.model_validators or decorators.validators
    )


@dataclass(frozen=True)
class Kind:
    """A message type the fast path takes: its shape, getters and output tables."""

    name: str
    shape: Shape
    output: Output
    get: Callable[[dict[str, Any]], tuple[Any, ...]]
    get_item: Callable[[dict[str, Any]], tuple[Any, ...]] | None
    reader: pa.Schema | None
    """The whole body's schema for `pyarrow.json` (`reader_schema`); None when the reader cannot take the type
    (`Shape.missing_is_none`)."""


def _kinds() -> dict[str, Kind]:
    if not _envelope_matches():
        return {}
    kinds: dict[str, Kind] = {}
    for message_type, model in PAYLOAD_MODELS.items():
        output = OUTPUTS.get(message_type.value)
        try:
            shape = shape_of(model)
        except Unsupported:
            continue
        if output is None or _columns_missing(shape, output):
            continue
        names = shape.names + ((shape.nested[0],) if shape.nested else ())
        item_getter = _getter(shape.nested[1].names) if shape.nested else None
        kinds[message_type.value] = Kind(
            message_type.value,
            shape,
            output,
            _getter(names),
            item_getter,
            reader_schema(shape) if shape.missing_is_none else None,
        )
    return kinds


READER_TYPES: dict[Check, pa.DataType] = {
    Check.STR: pa.string(),
    Check.OPTIONAL_STR: pa.string(),
    Check.LITERAL: pa.string(),
    Check.INT: pa.int64(),
    Check.BOOL: pa.bool_(),
    Check.DECIMAL: pa.string(),
    Check.OPTIONAL_DECIMAL: pa.string(),
    Check.TIME: pa.string(),
}
"""How `pyarrow.json` reads each kind of field. Decimals and times are read as the JSON strings the connectors
write and converted by `FieldCheck.read`, never as JSON numbers: a float64 would not be exact, and a JSON number
(or any other JSON type) where the schema says string fails the read."""


def _reader_fields(shape: Shape) -> list[pa.Field]:
    fields = [pa.field(f.name, READER_TYPES[f.check]) for f in shape.fields]
    if shape.nested is not None:
        fields.append(pa.field(shape.nested[0], pa.list_(pa.struct(_reader_fields(shape.nested[1])))))
    return fields


def reader_schema(shape: Shape) -> pa.Schema:
    """An envelope with this payload, as `pyarrow.json` is to read it."""
    types = {
        "message_id": pa.string(),
        "type": pa.string(),
        "schema_version": pa.int64(),
        "occurred_at": pa.string(),
        "producer": pa.string(),
        "payload": pa.struct(_reader_fields(shape)),
        "part": pa.int64(),
        "parts": pa.int64(),
    }
    return pa.schema([(name, types[name]) for name in ENVELOPE_FIELDS])


def _getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    get = itemgetter(*names)
    if len(names) == 1:
        return lambda data: (get(data),)
    return get


def _columns_missing(shape: Shape, output: Output) -> bool:
    if output.top is not None and set(output.top.column_names) != set(shape.names):
        return True
    if output.items is not None:
        if shape.nested is None:
            return True
        have = set(shape.names) | set(shape.nested[1].names)
        return not set(output.items.column_names) <= have
    return shape.nested is not None and output.items is None


KINDS = _kinds()
"""The message types the batch fast path takes, by `type`."""


@dataclass
class _Gathered:
    """One message type's rows of a batch, as tuples: a row per payload and a row per nested item."""

    kind: Kind
    messages: list[int]
    """The batch position of each payload."""
    rows: list[tuple[Any, ...]]
    items: list[tuple[Any, ...]]
    item_owner: list[int]
    """Each item's payload (an index into `rows`)."""


@dataclass(frozen=True)
class Columns:
    """What the fast path made of a batch: Arrow tables by table name, each row's batch position, and the
    positions it left to the per-message path (bodies it does not take)."""

    tables: dict[str, pa.Table]
    positions: dict[str, list[int]]
    message_ids: list[str | None]
    """By batch position: the envelope id of a message it took, None for the others."""
    rest: list[int]


def decode_columns(bodies: Sequence[str]) -> Columns:
    """Parse and check a batch of events-queue bodies; see the module's doc."""
    ids: list[str | None] = [None] * len(bodies)
    parts: _Parts = {}
    left = read_bodies(bodies, ids, parts)
    rest = _gather(bodies, left, ids, parts)
    tables: dict[str, pa.Table] = {}
    positions: dict[str, list[int]] = {}
    for name, pieces in parts.items():
        tables[name], positions[name] = _in_batch_order(pieces)
    return Columns(tables, positions, ids, rest)


_Parts = dict[str, list[tuple[pa.Table, list[int]]]]
"""Pieces of each table (Arrow rows and the batch position of each row), as the two paths make them."""


def _in_batch_order(pieces: list[tuple[pa.Table, list[int]]]) -> tuple[pa.Table, list[int]]:
    """One table of the pieces, its rows in batch order (a message's rows keep their order)."""
    if len(pieces) == 1:
        return pieces[0]
    frame = pa.concat_tables([f for f, _ in pieces]).combine_chunks()
    at = [p for _, positions in pieces for p in positions]
    if any(a > b for a, b in pairwise(at)):
        order = sorted(range(len(at)), key=at.__getitem__)  # stable
        frame, at = frame.take(pa.array(order, pa.int64())), [at[n] for n in order]
    return frame, at


def _gather(bodies: Sequence[str], left: list[int], ids: list[str | None], parts: _Parts) -> list[int]:
    """The bodies at `left` parsed one by one with orjson and gathered into columns; returns the positions it
    leaves to the per-message path."""
    envelopes: list[tuple[Any, ...]] = []
    positions: list[int] = []
    gathered = {name: _Gathered(kind, [], [], [], []) for name, kind in KINDS.items()}
    rest: list[int] = []
    get_envelope = itemgetter(*ENVELOPE_FIELDS)
    envelope_size = len(ENVELOPE_FIELDS)
    loads = orjson.loads
    for position in left:
        body = bodies[position]
        try:
            data = loads(body)
            envelope = get_envelope(data)  # TypeError unless a dict, KeyError unless it has every field
            group = gathered[envelope[1]]  # KeyError for a type we do not take, TypeError for a list or object
            kind = group.kind
            payload = envelope[5]
            row = kind.get(payload)  # TypeError unless a dict (or a str: refused just below)
            if len(data) != envelope_size or type(payload) is not dict or len(payload) != len(row):
                raise KeyError
            if kind.get_item is not None:
                listed = row[-1]
                if type(listed) is not list:
                    raise KeyError
                items = list(map(kind.get_item, listed))
                if items and set(map(len, listed)) != {len(items[0])}:
                    raise KeyError
                group.item_owner += [len(group.rows)] * len(items)
                group.items += items
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            rest.append(position)
            continue
        group.rows.append(row)
        group.messages.append(position)
        envelopes.append(envelope)
        positions.append(position)
        ids[position] = envelope[0]

    refused = _check_envelopes(envelopes, positions)
    for group in gathered.values():
        built, bad = _build(group, refused)
        refused |= bad
        for name, piece in built.items():
            parts.setdefault(name, []).append(piece)
    for position in refused:  # each group's tables were built without them
        ids[position] = None
    return sorted([*rest, *refused])


_ENVELOPE_TEXT = (0, 4)
"""message_id (not empty) and producer: strings."""
_ENVELOPE_COUNTS = (2, 6, 7)
"""schema_version, part and parts: integers of at least 1 (any size: they are checked, not stored)."""
_ENVELOPE_TIME = FieldCheck("occurred_at", Check.TIME)


def _check_envelopes(envelopes: list[tuple[Any, ...]], positions: list[int]) -> set[int]:
    """Batch positions whose envelope the fast path does not take (the type was checked while gathering)."""
    if not envelopes:
        return set()
    columns = list(zip(*envelopes, strict=True))
    bad: set[int] = set()
    for index in _ENVELOPE_TEXT:
        values = columns[index]
        if not set(map(type, values)) <= {str} or "" in values:
            bad.update(n for n, v in enumerate(values) if type(v) is not str or v == "")
    for index in _ENVELOPE_COUNTS:
        values = columns[index]
        if not set(map(type, values)) <= {int} or min(values) < 1:
            bad.update(n for n, v in enumerate(values) if type(v) is not int or v < 1)
    try:
        _ENVELOPE_TIME.array(columns[3])
    except BadValuesError as exc:
        bad.update(exc.positions)
    return {positions[n] for n in bad}


def _build(group: _Gathered, refused: set[int]) -> tuple[dict[str, tuple[pa.Table, list[int]]], set[int]]:
    """The group's tables, each with the batch position of every row, and the positions refused on the way.

    A value a check refuses sends its message to the per-message path, and the group is built again without it.
    """
    bad: set[int] = set()
    while True:
        keep = [n for n, p in enumerate(group.messages) if p not in refused and p not in bad]
        if not keep:
            return {}, bad
        try:
            return _tables(group, keep), bad
        except _Refused as exc:
            if not exc.positions:
                return {}, bad | {group.messages[n] for n in keep}
            bad |= exc.positions


class _Refused(Exception):
    def __init__(self, positions: set[int]) -> None:
        super().__init__(f"{len(positions)} messages")
        self.positions = positions


def _tables(group: _Gathered, keep: list[int]) -> dict[str, tuple[pa.Table, list[int]]]:
    kind, shape = group.kind, group.kind.shape
    rows = group.rows if len(keep) == len(group.rows) else [group.rows[n] for n in keep]
    messages = [group.messages[n] for n in keep]
    top = _arrays(shape.fields, rows, lambda n: {messages[m] for m in n})
    out: dict[str, tuple[pa.Table, list[int]]] = {}
    if kind.output.top is not None:
        out[kind.output.top.name] = (_frame(kind.output.top, top), messages)
    if kind.output.items is not None and shape.nested is not None:
        if len(keep) == len(group.rows):
            items, owners = group.items, group.item_owner
        else:
            renumber = {old: new for new, old in enumerate(keep)}
            pairs = [(i, renumber[o]) for i, o in zip(group.items, group.item_owner, strict=True) if o in renumber]
            items, owners = [i for i, _ in pairs], [o for _, o in pairs]
        fields = _arrays(shape.nested[1].fields, items, lambda n: {messages[owners[m]] for m in n})
        take = pa.array(owners, pa.int64())
        for name, array in top.items():
            if name not in fields:
                fields[name] = array.take(take)
        out[kind.output.items.name] = (_frame(kind.output.items, fields), [messages[o] for o in owners])
    return out


def _arrays(
    checks: tuple[FieldCheck, ...], rows: list[tuple[Any, ...]], blame: Callable[[list[int]], set[int]]
) -> dict[str, pa.Array]:
    columns: list[Sequence[Any]] = list(zip(*rows, strict=False)) if rows else [() for _ in checks]
    arrays: dict[str, pa.Array] = {}
    refused: set[int] = set()
    for check, values in zip(checks, columns, strict=False):
        try:
            arrays[check.name] = check.array(values)
        except BadValuesError as exc:
            refused |= blame(exc.positions)
    if refused:
        raise _Refused(refused)
    return arrays


def _frame(table: Table, arrays: dict[str, pa.Array]) -> pa.Table:
    return pa.Table.from_arrays([arrays[c.name] for c in table.columns], schema=table.arrow_schema())


# ---------------------------------------------------------------------------------------------------------------
# The JSON reader: a whole message type's bodies parsed by `pyarrow.json` in one call, no Python object per value.

SPLIT_PATTERN = r'^\{"message_id":"(?P<id>[^"\\]*)","type":"(?P<type>[a-z_]+)",'
"""How every body the connectors write begins (`encode_envelope`): its id and type, found without parsing it.
A body that begins otherwise takes the orjson path."""

_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowCapacityError)


class _Unreadable(Exception):
    """`pyarrow.json` refused the bodies (a JSON error, an unexpected key, a JSON type the schema does not have)."""


def read_bodies(bodies: Sequence[str], ids: list[str | None], parts: _Parts) -> list[int]:
    """Read the bodies of the message types in `KINDS` with `pyarrow.json`, a type at a time, into `parts` (and
    their ids into `ids`); returns the positions left to the orjson path, ascending.

    The bodies of one type are read as they lie in one buffer (Arrow reads JSON objects one after the other, with
    or without whitespace between them), against that type's schema, with unexpected keys an error: the read
    fails, rather than guesses, on anything the schema does not say (another key, another JSON type, a repeated
    key, bad JSON). No body can swallow the next (every body begins with an id and a type, which no value of
    the schema can hold), so as many rows as bodies means a row per body; each row's id is also compared with the
    one its body begins with. A read that fails is split in two until the bodies to blame are found alone, and
    those take the orjson path, as does every row that a check refuses (a missing or null value, a literal not
    allowed, a decimal or time the models would not read alike).
    """
    if not KINDS or not bodies:
        return list(range(len(bodies)))
    try:
        text = pa.array(bodies, pa.string())
    except (*_ARROW_ERRORS, UnicodeError):
        return list(range(len(bodies)))
    if not isinstance(text, pa.StringArray):  # over 2 GiB: chunked
        return list(range(len(bodies)))
    split = pc.extract_regex(text, SPLIT_PATTERN)
    types, prefix_ids = split.field("type"), split.field("id")
    readable = {name: kind for name, kind in KINDS.items() if kind.reader is not None}
    taken = pa.array(sorted(readable), pa.string())
    left = pc.indices_nonzero(pc.invert(pc.fill_null(pc.is_in(types, value_set=taken), False))).to_pylist()
    for name, kind in readable.items():
        where = pc.indices_nonzero(pc.fill_null(pc.equal(types, name), False))
        if len(where):
            left += _read_kind(kind, text.take(where), prefix_ids.take(where), where.to_pylist(), ids, parts)
    return sorted(left)


def _read_kind(
    kind: Kind, text: pa.StringArray, prefix_ids: pa.Array, positions: list[int], ids: list[str | None], parts: _Parts
) -> list[int]:
    """`read_bodies` for one type's bodies (halves of them when a read fails); returns the positions left."""
    try:
        table = _read_json(kind, text, prefix_ids)
    except _Unreadable:
        if len(positions) == 1:
            return positions
        half = len(positions) // 2
        return _read_kind(
            kind, text.slice(0, half), prefix_ids.slice(0, half), positions[:half], ids, parts
        ) + _read_kind(kind, text.slice(half), prefix_ids.slice(half), positions[half:], ids, parts)
    refused: set[int] = set()
    while True:
        keep = [n for n in range(len(positions)) if n not in refused]
        if not keep:
            return positions
        rows = table if not refused else table.take(pa.array(keep, pa.int64()))
        try:
            built = _read_tables(kind, rows)
            break
        except _Refused as exc:
            refused |= {keep[n] for n in exc.positions}
    kept = positions if not refused else [positions[n] for n in keep]
    for position, message_id in zip(kept, rows.column("message_id").to_pylist(), strict=True):
        ids[position] = message_id
    for name, (frame, rows_of) in built.items():
        parts.setdefault(name, []).append((frame, [kept[n] for n in rows_of]))
    return [positions[n] for n in sorted(refused)]


def _read_json(kind: Kind, text: pa.StringArray, prefix_ids: pa.Array) -> pa.Table:
    """The bodies as one table with `kind.reader`'s schema, a row per body. Raises _Unreadable."""
    _, offset_buffer, data = text.buffers()
    offsets = pa.Array.from_buffers(pa.int32(), len(text) + 1, [None, offset_buffer], offset=text.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    if data is None or end <= start or kind.reader is None:
        raise _Unreadable("no text")
    try:
        table = pj.read_json(
            pa.BufferReader(data.slice(start, end - start)),
            read_options=pj.ReadOptions(use_threads=False, block_size=end - start + 1),  # one block
            parse_options=pj.ParseOptions(explicit_schema=kind.reader, unexpected_field_behavior="error"),
        )
    except _READ_ERRORS as exc:
        raise _Unreadable(str(exc)) from exc
    if table.num_rows != len(text):
        raise _Unreadable(f"{table.num_rows} rows from {len(text)} bodies")
    table = table.combine_chunks()
    if not _all(pc.equal(table.column("message_id"), prefix_ids)):
        raise _Unreadable("a row's id is not its body's")
    return table


def _all(mask: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every value is true (a null is not)."""
    return bool(mask.null_count == 0 and pc.all(mask).as_py() is not False)


def _failing(mask: pa.Array | pa.ChunkedArray) -> set[int]:
    """Positions whose value is not true (false or null)."""
    if _all(mask):
        return set()
    return set(pc.indices_nonzero(pc.invert(pc.fill_null(mask, False))).to_pylist())


def _read_tables(kind: Kind, table: pa.Table) -> dict[str, tuple[pa.Table, list[int]]]:
    """The kind's output tables from its rows as read, each with the row (of `table`) of every output row.
    Raises _Refused with the rows a check refuses, as `_tables` does for gathered rows."""
    column = {name: table.column(name).chunk(0) for name in ENVELOPE_FIELDS}
    refused = _failing(pc.not_equal(column["message_id"], ""))
    refused |= _failing(pc.equal(column["type"], kind.name))
    for name in ("schema_version", "part", "parts"):
        refused |= _failing(pc.greater_equal(column[name], 1))
    refused |= _failing(pc.is_valid(column["producer"]))
    payload = column["payload"]
    refused |= _failing(pc.is_valid(payload))
    try:
        _ENVELOPE_TIME.read(column["occurred_at"])
    except BadValuesError as exc:
        refused.update(exc.positions)
    shape = kind.shape
    values = dict(zip([f.name for f in payload.type], payload.flatten(), strict=True))
    top = _read_arrays(shape.fields, values, refused, iter)
    out: dict[str, tuple[pa.Table, list[int]]] = {}
    items_out: tuple[Table, dict[str, pa.Array], list[int]] | None = None
    if kind.output.items is not None and shape.nested is not None:
        listed = values[shape.nested[0]]
        refused |= _failing(pc.is_valid(listed))
        items = pc.list_flatten(listed)
        owners = pc.list_parent_indices(listed)
        refused |= {owners[n].as_py() for n in _failing(pc.is_valid(items))}
        item_values = dict(zip([f.name for f in items.type], items.flatten(), strict=True))
        owner_list = owners.to_pylist()
        fields = _read_arrays(
            shape.nested[1].fields, item_values, refused, lambda bad: map(owner_list.__getitem__, bad)
        )
        for name, array in top.items():
            if name not in fields:
                fields[name] = array.take(owners)
        items_out = (kind.output.items, fields, owner_list)
    if refused:
        raise _Refused(refused)
    if kind.output.top is not None:
        out[kind.output.top.name] = (_frame(kind.output.top, top), list(range(table.num_rows)))
    if items_out is not None:
        out[items_out[0].name] = (_frame(items_out[0], items_out[1]), items_out[2])
    return out


def _read_arrays(
    checks: tuple[FieldCheck, ...],
    values: dict[str, pa.Array],
    refused: set[int],
    blame: Callable[[list[int]], Iterable[int]],
) -> dict[str, pa.Array]:
    """Each field's column checked and converted (`FieldCheck.read`); the rows to blame for a value a check
    refuses are added to `refused`."""
    arrays: dict[str, pa.Array] = {}
    for check in checks:
        try:
            arrays[check.name] = check.read(values[check.name])
        except BadValuesError as exc:
            refused.update(blame(exc.positions))
    return arrays
