"""`jwo serve` on a busy host: the relay child and the embedded AWS run at a lower CPU priority than the
process that answers Amazon (they only have to keep up on average)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from contracts.aws import AwsEndpoint
from jwo.aws_resources import EmbeddedAws
from jwo.relay_process import RelayConfig, RelayProcess
from jwo.runtime import _lower_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def niceness_of_every_thread(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_the_relay_child_runs_with_the_added_niceness(tmp_path: Path) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    config = RelayConfig(
        outbox_path=tmp_path / "outbox.db",
        endpoint=AwsEndpoint(endpoint_url="http://127.0.0.1:9", access_key_id="x", secret_access_key="x"),
        queue_url="http://127.0.0.1:9/000000000000/events",
        in_flight=1,
        max_backoff=1.0,
        nice=5,
    )

    async def scenario() -> int:
        relay = RelayProcess(config)
        try:
            await relay.ready()
            pid = relay._process.pid
            assert pid is not None
            return os.getpriority(os.PRIO_PROCESS, pid)
        finally:
            await relay.stop()

    assert asyncio.run(scenario()) == min(19, ours + 5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the parent keeps its own


def test_every_thread_of_the_embedded_aws_child_is_lowered(tmp_path: Path) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    aws = EmbeddedAws(separate_process=True).start()
    try:
        (child,) = [c for c in multiprocessing.active_children() if c.name == "jwo-moto"]
        assert child.pid is not None
        assert niceness_of_every_thread(child.pid) == {ours}

        _lower_priority("jwo-moto", 3)

        assert niceness_of_every_thread(child.pid) == {min(19, ours + 3)}
        assert os.getpriority(os.PRIO_PROCESS, 0) == ours
    finally:
        aws.stop()
