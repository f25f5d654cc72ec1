"""The event loop our long-running processes run on: uvloop when it is installed (uvicorn[standard]
brings it on Linux and macOS), else asyncio's own. uvloop's transports and scheduling cost the
connectors' request path noticeably less CPU per request."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it on our platforms
        return asyncio.run(main)
    return uvloop.run(main)
