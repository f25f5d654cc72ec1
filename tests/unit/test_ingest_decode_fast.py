"""The decode fast path (orjson + TypedDict mirrors of the models) against the model path (the models), body by body.

For every body, `rows_for_message` must give exactly what `model_rows_for_message` gives: the same dedup id and
rows (values of the same types, decimals with the same digits, times at the same instant and offset), the same
`unknown_events` reason, or a PoisonMessageError with the same text.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from ingest.decode import MIRRORS, PoisonMessageError, fast_rows, model_rows_for_message, rows_for_message
from tests.ingest_traffic import queue_bodies

SOURCE = "jwo-events"
RECEIVED = datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)

ODD_VALUES: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63,
    1.0,
    1.5,
    "",
    "1",
    "1.0",
    "-0.00",
    "1e3",
    " 1.5",
    "1_000",
    "NaN",
    "Infinity",
    "12.345678",
    "+1",
    ".5",
    "5.",
    "-.5",
    "1E-2",
    "1.5000000",
    "12345678901234.1234",
    "123456789012345",
    "1.23456",
    "x",
    "2026-11-20T12:00:00Z",
    "2026-11-20T12:00:00.5+05:30",
    "2026-11-20T12:00:00",
    "2026-11-20",
    "2026-11-20 12:00:00Z",
    "2026-02-30T12:00:00Z",
    "2026-11-20T24:00:00Z",
    "2026-11-20T12:00:00+0530",
    "2026-11-20T12:00:00.1234567Z",
    "2026-11-20T12Z",
    "2026-11-20T12:00Z",
    "2026-11-20T12:00:00+05",
    "2026-11-20T12:00:00+23:59",
    "2026-11-20T12:00:00+24:00",
    "2026-13-20T12:00:00Z",
    "0999-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "2026-11-20T12:00:00.12Z",
    "2026-11-20T12:00:00,12Z",
    "2026-11-20T12:00:00.Z",
    "SKU",
    "SCANCODE",
    "scan",
    "ACCEPT",
    "FINANCIAL",
    [],
    [{}],
    {},
    {"a": 1},
)


def outcome(decode: Any, body: str) -> tuple[str, object]:
    try:
        dedup_id, rows = decode(SOURCE, "queue-id-1", body, RECEIVED)
    except PoisonMessageError as exc:
        return "poison", str(exc)
    return "rows", (dedup_id, strict(rows))


def strict(value: object) -> object:
    """A form whose equality also compares types, decimal digits and UTC offsets."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, datetime):
        return ("datetime", value.replace(tzinfo=None), value.utcoffset())
    return (type(value).__name__, value)


def mutations(rng: random.Random, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of an envelope with one field of the envelope, payload or a list item changed, dropped or added."""
    out: list[dict[str, Any]] = []
    for _ in range(6):
        copy = orjson.loads(orjson.dumps(data))
        target = copy
        roll = rng.random()
        if roll < 0.7 and isinstance(copy.get("payload"), dict):
            target = copy["payload"]
            lists = [v for v in target.values() if isinstance(v, list) and v]
            if lists and rng.random() < 0.5:
                target = rng.choice(rng.choice(lists))
        if not isinstance(target, dict):
            continue
        action = rng.random()
        if action < 0.15 and target:
            del target[rng.choice(sorted(target))]
        elif action < 0.25:
            target[rng.choice(("extra", "unexpected_field"))] = 1
        elif target:
            target[rng.choice(sorted(target))] = rng.choice(ODD_VALUES)
        out.append(copy)
    return out


@pytest.fixture(scope="module")
def bodies() -> list[str]:
    rng = random.Random(4)
    valid = queue_bodies(3_000, seed=11, huge_every=1_500).bodies
    mutated = [
        orjson.dumps(m).decode() for body in rng.sample(valid, 1_200) for m in mutations(rng, orjson.loads(body))
    ]
    broken = ["", "{", "[1, 2]", "null", '"text"', "{}", '{"message_id": 1}', valid[0][:-1], valid[1] + "x"]
    return valid + mutated + broken


def test_the_fast_path_is_on() -> None:
    assert MIRRORS is not None


def test_the_fast_path_and_the_model_path_agree_on_every_body(bodies: list[str]) -> None:
    kinds: dict[str, int] = {}
    for body in bodies:
        expected = outcome(model_rows_for_message, body)
        assert outcome(rows_for_message, body) == expected, body
        kinds[expected[0]] = kinds.get(expected[0], 0) + 1
    assert kinds["poison"] > 1_000
    assert kinds["rows"] > 3_000


def test_every_envelope_as_the_connectors_encode_it_takes_the_fast_path() -> None:
    for body in queue_bodies(2_000, seed=12, huge_every=1_000).bodies:
        assert fast_rows(SOURCE, body, RECEIVED) is not None, body


def test_the_fast_path_answers_only_for_bodies_the_models_accept(bodies: list[str]) -> None:
    for body in bodies:
        if fast_rows(SOURCE, body, RECEIVED) is not None:
            assert outcome(model_rows_for_message, body)[0] == "rows"
