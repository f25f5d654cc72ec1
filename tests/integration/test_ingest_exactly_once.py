"""At-least-once delivery lands exactly once: the same lake whatever the duplicates and the order.

The consumer is the real one (`ingest.consumer.Consumer`) over `FakeSqsQueue` (SQS semantics), writing
through the real `LakeSink` (Parquet lake + the writer's DuckDB file); the tables are read back with
`warehouse.query.run_query`, as an analyst would.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from contracts.messages import decode_envelope
from contracts.tables import TABLES
from ingest.consumer import Consumer
from ingest.fakes import FakeSqsQueue
from jwo.runtime import LakeSink
from tests.ingest_traffic import queue_bodies
from tests.unit.test_ingest_consumer import run_until
from warehouse.duck_writer import WarehouseDb
from warehouse.lake import LakeWriter
from warehouse.query import fetch, open_reader, run_query
from warehouse.views import quote_identifier, quote_literal

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SOURCE = "jwo-events"

Snapshot = dict[str, list[tuple[object, ...]]]


def consume(bodies: list[str], home: Path, queue: FakeSqsQueue | None = None, *, batch_max: int = 1_000) -> Consumer:
    """Send `bodies` (in this order) and run a consumer into `home/lake` until the queue is empty."""
    queue = queue or FakeSqsQueue()
    for body in bodies:
        queue.send(body)
    with WarehouseDb(home, home / "lake") as db:
        db.refresh_views(TABLES.values())
        worker = Consumer(
            SOURCE,
            queue,
            LakeSink(LakeWriter(home / "lake"), db),
            lambda: NOW,
            receivers=4,
            batch_max=batch_max,
            linger_seconds=0.02,
            wait_seconds=1,
        )
        asyncio.run(run_until(worker, lambda: queue.depth == 0, within=120))
    return worker


def snapshot(lake: Path) -> Snapshot:
    """Every row of every table as the views show it, sorted."""
    return {name: sorted(run_query(lake, f"SELECT * FROM {name}").rows, key=repr) for name in TABLES}


def digest(rows: list[tuple[object, ...]]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def duplicates(lake: Path, *, ignore: dict[str, tuple[str, ...]] | None = None) -> dict[str, tuple[int, int]]:
    """Per table with a problem: (rows the view shows beyond one per key, keys whose raw copies differ).

    The first is count(*) - count(distinct key) over the view. The second looks under the views, at the
    raw Parquet files: a batch landed again under another batch id leaves a second copy of its rows, and the
    view showing one per key is only right if every copy is the same row (but for the columns in `ignore`).
    """
    problems = {}
    con = open_reader(lake)
    try:
        for table in TABLES.values():
            key = ", ".join(quote_identifier(k) for k in table.key)
            [(rows, keys)] = fetch(con, f"SELECT count(*), count(DISTINCT ({key})) FROM {table.name}").rows
            conflicts = 0
            if list((lake / table.name).glob("*/*.parquet")):
                skip = (ignore or {}).get(table.name, ())
                rest = ", ".join(quote_identifier(c) for c in table.column_names if c not in {*table.key, *skip})
                files = quote_literal(f"{lake.resolve().as_posix()}/{table.name}/*/*.parquet")
                [(conflicts,)] = fetch(
                    con,
                    f"SELECT count(*) FROM (SELECT {key} FROM read_parquet({files}, union_by_name = true) "
                    f"GROUP BY {key} HAVING count(DISTINCT ({rest})) > 1)",
                ).rows
            if rows != keys or conflicts:
                problems[table.name] = (int(rows) - int(keys), int(conflicts))  # type: ignore[call-overload]
    finally:
        con.close()
    return problems


def lost_and_unexpected(expected: Snapshot, actual: Snapshot) -> dict[str, tuple[int, int]]:
    """Per table with a difference: (rows expected but missing, rows present but not expected)."""
    out = {}
    for name in TABLES:
        want, got = set(expected[name]), set(actual[name])
        if want != got:
            out[name] = (len(want - got), len(got - want))
    return out


@pytest.mark.slow
def test_five_thousand_envelopes_delivered_one_to_three_times_in_any_order_land_as_one_in_order_delivery(
    tmp_path: Path,
) -> None:
    traffic = queue_bodies(5_000, seed=11, huge_every=2_500)  # two carts too large for one message
    rng = random.Random(20261123)
    deliveries = [body for body in traffic.bodies for _ in range(rng.randint(1, 3))]
    rng.shuffle(deliveries)
    # Besides the re-sent copies: deletes that fail after the write, so landed batches come back for real.
    flaky = FakeSqsQueue(visibility_timeout=1.0)  # longer than a batch takes to write
    flaky.fail_deletes = 4

    reference = consume(traffic.bodies, tmp_path / "in-order")
    worker = consume(deliveries, tmp_path / "shuffled", flaky)

    assert len(deliveries) > 1.9 * len(traffic.bodies)
    assert worker.stats.received > len(deliveries)  # the failed deletes were redelivered
    assert worker.stats.poison == worker.stats.write_failures == 0
    expected, actual = snapshot(tmp_path / "in-order" / "lake"), snapshot(tmp_path / "shuffled" / "lake")
    assert {name: len(rows) for name, rows in expected.items() if rows} == traffic.expected_rows
    assert lost_and_unexpected(expected, actual) == {}
    assert {name: digest(rows) for name, rows in actual.items()} == {
        name: digest(rows) for name, rows in expected.items()
    }
    assert duplicates(tmp_path / "shuffled" / "lake") == {}
    assert reference.stats.consumed == len(traffic.bodies)


def test_a_poison_message_is_dead_lettered_after_five_receives_and_lands_once_when_redriven_fixed(
    tmp_path: Path,
) -> None:
    traffic = queue_bodies(40, seed=3)
    purchase = next(decode_envelope(b) for b in traffic.bodies if decode_envelope(b).type == "purchase")
    fixed = orjson.dumps(purchase.model_dump(mode="json")).decode()
    broken_lines = [{**line, "quantity": "two"} for line in purchase.payload["lines"]]  # a producer bug
    poison = orjson.dumps({**purchase.model_dump(mode="json"), "payload": {**purchase.payload, "lines": broken_lines}})
    others = [b for b in traffic.bodies if decode_envelope(b).message_id != purchase.message_id]
    queue = FakeSqsQueue(visibility_timeout=0.3, max_receive_count=5)  # longer than a batch takes
    lake = tmp_path / "home" / "lake"
    trip = quote_literal(str(purchase.payload["shopping_trip_id"]))

    first = consume([poison.decode(), *others], tmp_path / "home", queue)

    assert queue.dead_letters == [poison.decode()]
    assert first.stats.poison == 5  # received exactly five times, never written, never deleted
    assert run_query(lake, f"SELECT count(*) FROM purchases WHERE shopping_trip_id = {trip}").rows == [(0,)]

    # The producer is fixed; the operator redrives the message (same envelope id), and a retry sends it again.
    consume([fixed, fixed], tmp_path / "home", queue)
    consume([fixed], tmp_path / "home", queue)

    assert queue.dead_letters == [poison.decode()]
    assert run_query(
        lake, f"SELECT count(*), any_value(line_count) FROM purchases WHERE shopping_trip_id = {trip}"
    ).rows == [(1, len(broken_lines))]
    assert run_query(lake, f"SELECT count(*) FROM purchase_lines WHERE shopping_trip_id = {trip}").rows == [
        (len(broken_lines),)
    ]
    assert duplicates(lake) == {}
