"""The outbox relay in a process of its own.

The relay's work is botocore's: signing, serialising and parsing every SendMessageBatch, about 2 ms of
CPU per call. In the connector process that CPU would share the GIL with the requests; in a child
process it runs on the other core. The child reads the same outbox file (`SqliteOutboxQueue`; WAL lets
the connector keep writing), polls it every `poll_seconds` when idle, and on `stop()` drains what is left
(bounded) before it exits. It also exits when its parent dies, so a killed connector leaves no orphan;
what it had not sent stays in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from connectors.adapters.sqlite_outbox import SqliteOutboxQueue
from connectors.adapters.sqs_publisher import SqsPublisher
from connectors.relay import Relay
from contracts.aws import AwsEndpoint
from jwo import eventloop, logs

log = logging.getLogger("jwo.relay")

PUBLISH_CONFIG = AioConfig(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1, "mode": "standard"})
"""One attempt, so a hanging endpoint costs 5 s, not minutes; the relay retries by itself (with backoff and
jitter) and nothing leaves the outbox until SQS accepted it."""

_START_SECONDS = 60.0
_DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class RelayConfig:
    outbox_path: Path
    endpoint: AwsEndpoint
    queue_url: str
    in_flight: int
    max_backoff: float
    poll_seconds: float = 0.02
    nice: int = 0
    """Added to the child's niceness before it starts a thread (every thread inherits it)."""
    log_level: str = "INFO"
    log_format: str = "json"


def _watch(conn: Connection, parent_pid: int, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Child thread: set `stop` when the parent says so, closes the pipe, or dies."""
    while os.getppid() == parent_pid:
        if conn.poll(0.5):
            break
    loop.call_soon_threadsafe(stop.set)


async def _serve(config: RelayConfig, conn: Connection, parent_pid: int, sent: Synchronized[int],
                 errors: Synchronized[int]) -> None:  # fmt: skip
    queue = SqliteOutboxQueue(config.outbox_path)
    stop = asyncio.Event()
    threading.Thread(
        target=_watch, args=(conn, parent_pid, asyncio.get_running_loop(), stop), name="relay-watch", daemon=True
    ).start()
    try:
        async with get_session().create_client("sqs", config=PUBLISH_CONFIG, **config.endpoint.client_kwargs()) as sqs:
            relay = Relay(
                queue,
                SqsPublisher(sqs, config.queue_url),
                in_flight=config.in_flight,
                idle_seconds=config.poll_seconds,
                max_backoff=config.max_backoff,
            )
            conn.send("ready")

            async def publish_stats() -> None:
                while not stop.is_set():
                    sent.value, errors.value = relay.stats.sent, relay.stats.errors
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)

            reporter = asyncio.create_task(publish_stats())
            await relay.run(stop)
            if not await relay.drain(within=_DRAIN_SECONDS):
                log.warning("outbox not fully drained at shutdown; the rest is sent on the next start")
            sent.value, errors.value = relay.stats.sent, relay.stats.errors
            await reporter
    finally:
        queue.close()


def _main(config: RelayConfig, conn: Connection, parent_pid: int, sent: Synchronized[int],
          errors: Synchronized[int]) -> None:  # fmt: skip
    if config.nice:
        os.nice(config.nice)
    logs.configure(config.log_level, config.log_format)
    try:
        eventloop.run(_serve(config, conn, parent_pid, sent, errors))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send(f"error {type(exc).__name__}: {exc}")
        raise


class RelayProcess:
    """Parent-side handle on the relay child."""

    def __init__(self, config: RelayConfig) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        self._ours, theirs = context.Pipe()
        self.sent: Synchronized[int] = context.Value("q", 0)
        self.errors: Synchronized[int] = context.Value("q", 0)
        self._process = context.Process(
            target=_main, args=(config, theirs, os.getpid(), self.sent, self.errors), name="jwo-relay", daemon=True
        )
        self._process.start()
        theirs.close()

    async def ready(self) -> None:
        """Wait until the child relays (its client is built); raises if it could not start."""
        if not await asyncio.to_thread(self._ours.poll, _START_SECONDS):
            self.kill()
            raise RuntimeError(f"the relay process did not start within {_START_SECONDS:.0f}s")
        try:
            message = self._ours.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the relay process exited during start-up (code {self._process.exitcode})") from None
        if message != "ready":
            raise RuntimeError(f"the relay process failed to start: {message}")

    async def stop(self) -> None:
        """Ask the child to drain and exit; kill it if it takes longer than the drain allows."""
        with contextlib.suppress(OSError):
            self._ours.send("stop")
        await asyncio.to_thread(self._process.join, _DRAIN_SECONDS + 10)
        self.kill()

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        with contextlib.suppress(OSError):
            self._ours.close()
