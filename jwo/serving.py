"""uvicorn's httptools protocol with an answer's writes joined into one send.

uvicorn writes an answer's status line and headers when the app sends `http.response.start`, and its
body when the app sends `http.response.body`: two `transport.write` calls, and uvloop sends each at
once (one `send` syscall, one TCP segment and one wake-up of the reader each). Here every write of a
connection made during one event-loop iteration is buffered and handed to the transport in one piece
at the end of that iteration (`loop.call_soon`), so an answer goes out as one segment. The bytes on the
wire and their order are unchanged; anything that ends or hands over the connection (`close`, `abort`,
`write_eof`, `set_protocol`) first sends what is buffered (`abort` drops it, as the transport would).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _JoinedWrites:
    """A transport whose writes within one loop iteration reach the real transport as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` on a `_JoinedWrites` transport (pass it as uvicorn's `http`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]
