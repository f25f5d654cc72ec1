"""The batch decoder (`decode_batch`: Arrow columns straight from the bodies) against the model path, batch by batch.

For every batch, `decode_batch` must give what the models give one message at a time
(`one_at_a_time(model_rows_for_message)`): the same outcome per message (dedup id, or poison with the same text)
and, table by table, the same Arrow tables per day once the lake's writer converts the rows (or the same refusal).
The bodies are those of `test_ingest_decode_fast`: valid, mutated and broken, here shuffled into batches with
redeliveries.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pydantic import BaseModel, ConfigDict

from contracts.arrow_rows import ArrowRows
from contracts.tables import TABLES
from ingest.columns import KINDS, decode_columns, read_bodies, shape_of
from ingest.decode import decode_batch, model_rows_for_message, one_at_a_time
from ingest.ports import Decoded, PoisonMessageError, Received
from tests.ingest_traffic import queue_bodies
from tests.unit.test_ingest_decode_fast import RECEIVED, SOURCE, mutations
from warehouse.errors import RowSchemaError
from warehouse.lake import LakeWriter, frames_by_day

by_the_models = one_at_a_time(model_rows_for_message)


def received(bodies: Sequence[str], first: int = 0) -> list[Received]:
    return [Received(f"queue-id-{first + n}", f"receipt-{first + n}", b, 1, None) for n, b in enumerate(bodies)]


def outcomes(decoded: Decoded) -> list[tuple[str, str]]:
    return [("poison", str(o)) if isinstance(o, PoisonMessageError) else ("id", o) for o in decoded.outcomes]


def frames(rows: Sequence[Mapping[str, object]], table: str) -> list[tuple[object, pa.Table]] | str:
    try:
        return list(frames_by_day(TABLES[table], rows))
    except RowSchemaError:
        return "refused"


def assert_same_tables(fast: Decoded, models: Decoded, what: str) -> None:
    assert fast.rows.keys() == models.rows.keys(), what
    for table in models.rows:
        expected, actual = frames(models.rows[table], table), frames(fast.rows[table], table)
        if isinstance(expected, str) or isinstance(actual, str):
            assert actual == expected, f"{what}: {table}"
            continue
        assert [day for day, _ in actual] == [day for day, _ in expected], f"{what}: {table}"
        for (_, a), (_, e) in zip(actual, expected, strict=True):
            assert a.schema.equals(e.schema), f"{what}: {table}"
            assert a.equals(e), f"{what}: {table}\n{a.to_pylist()}\n{e.to_pylist()}"


@pytest.fixture(scope="module")
def batches() -> list[list[str]]:
    rng = random.Random(21)
    valid = queue_bodies(3_000, seed=13, huge_every=1_500).bodies
    mutated = [
        orjson.dumps(m).decode() for body in rng.sample(valid, 1_200) for m in mutations(rng, orjson.loads(body))
    ]
    broken = ["", "{", "[1, 2]", "null", '"text"', "{}", '{"message_id": 1}', valid[0][:-1], valid[1] + "x"]
    bodies = valid + mutated + broken
    bodies += rng.sample(bodies, len(bodies) // 10)  # redeliveries, some into the same batch
    rng.shuffle(bodies)
    return [bodies[start : start + 100] for start in range(0, len(bodies), 100)]


def test_the_batch_decoder_takes_every_message_type_it_knows() -> None:
    assert set(KINDS) == {"auth_event", "purchase", "bad_cart", "cancel_charge"}


def test_pyarrow_json_reads_every_message_type_the_batch_decoder_takes() -> None:
    assert all(kind.reader is not None for kind in KINDS.values())


def test_pyarrow_json_does_not_read_a_type_whose_missing_field_is_not_none() -> None:
    class DefaultNotNone(BaseModel):
        model_config = ConfigDict(extra="forbid")
        note: str | None = "none given"

    class RequiredNullable(BaseModel):
        model_config = ConfigDict(extra="forbid")
        note: str | None

    class DefaultNone(BaseModel):
        model_config = ConfigDict(extra="forbid")
        note: str | None = None

    # pyarrow.json reads a missing key as null: right only when the model's default is None
    assert not shape_of(DefaultNotNone).missing_is_none
    assert not shape_of(RequiredNullable).missing_is_none
    assert shape_of(DefaultNone).missing_is_none


def reader_left(bodies: Sequence[str]) -> list[int]:
    """The positions `pyarrow.json` (the first path of `decode_columns`) leaves to the others."""
    return read_bodies(bodies, [None] * len(bodies), {})


def test_every_known_envelope_as_the_connectors_encode_it_goes_straight_to_columns() -> None:
    bodies = queue_bodies(2_000, seed=12, huge_every=1_000).bodies
    left = decode_columns(bodies).rest
    assert all(orjson.loads(bodies[p])["type"] not in KINDS for p in left)  # only the unknown types
    assert 0 < len(left) < len(bodies) // 20
    assert reader_left(bodies) == left  # all read by pyarrow.json, none by orjson


def test_the_batch_decoder_and_the_models_agree_on_every_batch(batches: list[list[str]]) -> None:
    first = 0
    arrow_tables = mixed = poison = refused = read = 0
    for n, bodies in enumerate(batches):
        messages = received(bodies, first)
        first += len(bodies)
        read += len(bodies) - len(reader_left(bodies))
        fast, models = decode_batch(SOURCE, messages, RECEIVED), by_the_models(SOURCE, messages, RECEIVED)
        assert outcomes(fast) == outcomes(models), f"batch {n}"
        assert_same_tables(fast, models, f"batch {n}")
        poison += sum(isinstance(o, PoisonMessageError) for o in models.outcomes)
        arrow_tables += sum(isinstance(r, ArrowRows) for r in fast.rows.values())
        mixed += sum(isinstance(r, ArrowRows) and len(r.pieces) > 1 for r in fast.rows.values())
        refused += sum(frames(r, t) == "refused" for t, r in models.rows.items())
        if any(frames(r, t) == "refused" for t, r in models.rows.items()):
            for message in messages:  # what the consumer does next: each message alone
                alone_fast, alone_models = (
                    decode_batch(SOURCE, [message], RECEIVED),
                    by_the_models(SOURCE, [message], RECEIVED),
                )
                assert outcomes(alone_fast) == outcomes(alone_models), message.body
                assert_same_tables(alone_fast, alone_models, message.body)
    # The comparison covered every path: poison, refusals, all-Arrow tables and tables mixing Arrow and row dicts.
    assert poison > 500
    assert refused > 0
    assert arrow_tables > 300
    assert mixed > 50
    assert 4_000 < read < sum(map(len, batches)) - 4_000  # pyarrow.json read many, and left many to the others


def test_the_lake_files_are_byte_for_byte_those_the_models_rows_give(tmp_path: Path) -> None:
    rng = random.Random(3)
    valid = queue_bodies(1_500, seed=14, huge_every=700).bodies
    # Bodies the columns do not take but the models accept (rows as dicts, mixed in with the Arrow rows).
    others = []
    for body in rng.sample(valid, 60):
        data = orjson.loads(body)
        data["extra_envelope_field"] = 1  # the envelope ignores unknown fields; the columns do not take them
        others.append(orjson.dumps(data).decode())
    bodies = valid + others + rng.sample(valid, 100)
    rng.shuffle(bodies)
    fast_lake, model_lake = LakeWriter(tmp_path / "fast"), LakeWriter(tmp_path / "models")
    for n, start in enumerate(range(0, len(bodies), 400)):
        messages = received(bodies[start : start + 400], start)
        fast, models = decode_batch(SOURCE, messages, RECEIVED), by_the_models(SOURCE, messages, RECEIVED)
        assert any(isinstance(r, ArrowRows) and len(r.pieces) > 1 for r in fast.rows.values())
        fast_lake.write_tables({TABLES[t]: r for t, r in fast.rows.items()}, f"batch-{n}")
        model_lake.write_tables({TABLES[t]: r for t, r in models.rows.items()}, f"batch-{n}")

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}

    expected = files(tmp_path / "models")
    assert len(expected) > 20
    assert files(tmp_path / "fast") == expected


def test_a_redelivery_in_the_same_batch_lands_once_even_after_a_poison_copy() -> None:
    body = next(b for b in queue_bodies(20, seed=15).bodies if orjson.loads(b)["type"] == "purchase")
    data = orjson.loads(body)
    poison = orjson.loads(body)
    poison["payload"]["unexpected_field"] = 1  # same message id, a payload the model refuses
    messages = received([orjson.dumps(poison).decode(), body, body])
    decoded = decode_batch(SOURCE, messages, RECEIVED)
    assert isinstance(decoded.outcomes[0], PoisonMessageError)
    assert decoded.outcomes[1:] == [data["message_id"]] * 2
    assert outcomes(decoded) == outcomes(by_the_models(SOURCE, messages, RECEIVED))
    assert_same_tables(decoded, by_the_models(SOURCE, messages, RECEIVED), "redelivery")
    assert len(decoded.rows["purchases"]) == 1
    assert len(decoded.rows["purchase_lines"]) == len(data["payload"]["lines"])


def a_body(kind: str) -> str:
    return next(b for b in queue_bodies(40, seed=16).bodies if orjson.loads(b)["type"] == kind)


def edited(body: str, old: str, new: str) -> str:
    assert old in body
    return body.replace(old, new, 1)


def odd_bodies() -> list[tuple[str, str]]:
    """(what, body): bodies near the edge of what `pyarrow.json` reads, each next to valid ones."""
    purchase, auth, cart = a_body("purchase"), a_body("auth_event"), a_body("bad_cart")
    data = orjson.loads(purchase)
    message_id = data["message_id"]
    return [
        ("two bodies in one", purchase + purchase),
        ("a body and a half", purchase + purchase[:40]),
        ("pretty printed", orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()),
        ("trailing whitespace", purchase + "  \n"),
        ("cut short", purchase[:-1]),
        ("cut inside the prefix", purchase[:30]),
        ("an extra key that is null", edited(purchase, '"currency":', '"extra":null,"currency":')),
        ("an extra envelope key", edited(purchase, '"producer":', '"extra":1,"producer":')),
        ("a key twice", edited(purchase, '"currency":"USD"', '"currency":"USD","currency":"EUR"')),
        ("the type twice", edited(purchase, '"producer":', '"type":"auth_event","producer":')),
        ("a decimal as a JSON number", edited(purchase, '"subtotal":"', '"subtotal":1.10,"x":"')),
        ("a decimal as a float", purchase.replace('"tax":"0.00"', '"tax":0.1', 1)),
        ("an int as a float", edited(auth, '"http_status":200', '"http_status":200.0')),
        ("an int as a string", edited(auth, '"http_status":200', '"http_status":"200"')),
        ("an int too big", edited(auth, '"http_status":200', '"http_status":99999999999999999999')),
        ("a bool as 1", purchase.replace('"known":true', '"known":1', 1)),
        ("an escaped key", edited(purchase, '"currency":', '"curr\\u0065ncy":')),
        ("an escaped id", edited(purchase, f'"message_id":"{message_id}"', f'"message_id":"{message_id[:-1]}\\u0041"')),
        ("a lone surrogate", edited(purchase, '"currency":"USD"', '"currency":"\\ud800"')),
        ("a null payload", purchase[: purchase.index('"payload":')] + '"payload":null,"part":1,"parts":1}'),
        ("no lines", edited(purchase, '"lines":[', '"lines":null,"x":[')),
        ("an empty list of lines", purchase[: purchase.index('"lines":')] + '"lines":[]},"part":1,"parts":1}'),
        ("a null line", edited(purchase, '"lines":[', '"lines":[null,')),
        ("an empty item", edited(cart, '"items":[', '"items":[{},')),
        ("a missing optional field", edited(auth, '"location":"', '"x":"')),
        (
            "a null optional field",
            edited(auth, '"shopper_id":"' + orjson.loads(auth)["payload"]["shopper_id"] + '"', '"shopper_id":null'),
        ),
        ("no part", edited(purchase, ',"part":1', "")),
        ("part 0", edited(purchase, '"part":1', '"part":0')),
        ("an empty producer", edited(purchase, '"producer":"connectors"', '"producer":""')),
        ("a time with an offset", edited(auth, '"occurred_at":"', '"occurred_at":"2026-11-20T12:00:00.5+05:30","x":"')),
        ("a time without seconds", edited(auth, '"received_at":"', '"received_at":"2026-11-20T12:00Z","x":"')),
        ("money with too many digits", purchase.replace('"tax":"0.00"', '"tax":"0.00001"', 1)),
        ("money in exponent form", purchase.replace('"tax":"0.00"', '"tax":"1E-2"', 1)),
        ("a literal not allowed", edited(auth, '"outcome":"', '"outcome":"MAYBE","x":"')),
    ]


@pytest.mark.parametrize(("what", "body"), odd_bodies(), ids=[what for what, _ in odd_bodies()])
def test_odd_bodies_next_to_valid_ones_decode_as_the_models_decode_them(what: str, body: str) -> None:
    valid = queue_bodies(30, seed=17).bodies
    bodies = [*valid[:15], body, *valid[15:], body]
    messages = received(bodies)
    fast, models = decode_batch(SOURCE, messages, RECEIVED), by_the_models(SOURCE, messages, RECEIVED)
    assert outcomes(fast) == outcomes(models), what
    assert_same_tables(fast, models, what)
    left = reader_left(bodies)
    known = {n for n, b in enumerate(bodies) if b in valid and orjson.loads(b)["type"] in KINDS}
    assert known
    assert not known & set(left)  # pyarrow.json read every valid body beside it
    alone_fast, alone_models = (
        decode_batch(SOURCE, messages[15:16], RECEIVED),
        by_the_models(SOURCE, messages[15:16], RECEIVED),
    )
    assert outcomes(alone_fast) == outcomes(alone_models), what
    assert_same_tables(alone_fast, alone_models, what)
