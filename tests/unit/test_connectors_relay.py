"""The relay survives a failing outbox read and keeps delivering."""

from __future__ import annotations

import asyncio
import random
import sqlite3

from connectors.fakes import MemoryOutbox, MemoryPublisher
from connectors.ports import OutboxRecord, PendingMessage, StoredResponse
from connectors.relay import Relay


class LockedOnce(MemoryOutbox):
    """The first read fails as SQLite does when another writer holds the lock too long."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def pending(self, limit: int) -> list[PendingMessage]:
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database is locked")
        return super().pending(limit)


def test_an_outbox_error_is_counted_and_retried_instead_of_ending_the_relay() -> None:
    async def scenario() -> tuple[Relay, MemoryPublisher]:
        outbox, publisher = LockedOnce(), MemoryPublisher()
        await outbox.commit("scan", "k1", StoredResponse("fp", 200, b"{}"), [OutboxRecord("m1", b'{"n":1}')])
        relay = Relay(outbox, publisher, base_backoff=0.01, rng=random.Random(1))
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        for _ in range(200):
            if publisher.bodies:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        return relay, publisher

    relay, publisher = asyncio.run(scenario())
    assert publisher.bodies == [b'{"n":1}']
    assert relay.stats.errors == 1
    assert relay.stats.last_error == "OperationalError: database is locked"
