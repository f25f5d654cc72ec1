"""An asyncio loop on a thread of its own, for background work that must not delay the connectors.

The outbox relay and the queue consumers spend most of their CPU in botocore (serialising requests,
parsing XML/JSON answers). On the connectors' loop that work would sit between a request and its
answer; on a loop of its own it only shares the GIL, which Python hands over every few milliseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self, name: str) -> None:
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self) -> Self:
        self._thread.start()
        return self

    def call(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the background loop soon (from any thread)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the background loop; await it with `asyncio.wrap_future`."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what still runs, stop the loop and join the thread. Safe to call twice."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():

            async def _cancel_all() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            done = asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop)
            try:
                done.result(timeout)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
