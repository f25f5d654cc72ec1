"""`jwo.serving`: an answer's writes reach the socket as one write, with the same bytes in the same order."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn

from jwo import eventloop
from jwo.serving import JoinedWritesHttpToolsProtocol, _JoinedWrites


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def _joined() -> tuple[_Transport, _JoinedWrites, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    real = _Transport()
    return real, _JoinedWrites(real, loop), loop  # type: ignore[arg-type]


def test_writes_of_one_iteration_reach_the_transport_as_one_write_in_order() -> None:
    real, joined, loop = _joined()
    try:
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b'{"a":1}')
        assert real.writes == []
        assert joined.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\n") + 7
        loop.run_until_complete(asyncio.sleep(0))
        assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a":1}']
        joined.write(b"next")
        loop.run_until_complete(asyncio.sleep(0))
        assert real.writes[1:] == [b"next"]
    finally:
        loop.close()


def test_close_sends_what_is_buffered_first_and_abort_drops_it() -> None:
    real, joined, loop = _joined()
    try:
        joined.write(b"head")
        joined.write(b"body")
        joined.close()
        assert real.writes == [b"headbody"]
        assert real.events == ["close"]
        loop.run_until_complete(asyncio.sleep(0))  # the scheduled flush finds nothing more to send
        assert real.writes == [b"headbody"]
        real2, aborted, loop2 = _joined()
        try:
            aborted.write(b"lost")
            aborted.abort()
            loop2.run_until_complete(asyncio.sleep(0))
            assert real2.writes == []
            assert real2.events == ["abort"]
        finally:
            loop2.close()
    finally:
        loop.close()


def test_nothing_is_written_to_a_transport_that_closed_meanwhile_and_the_rest_is_passed_through() -> None:
    real, joined, loop = _joined()
    try:
        joined.write(b"late")
        real.closing = True
        loop.run_until_complete(asyncio.sleep(0))
        assert real.writes == []
        assert joined.get_extra_info("peername") == "info:peername"
        assert joined.is_closing()
    finally:
        loop.close()


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-length", b"11"), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"ok":', "more_body": True})
    await send({"type": "http.response.body", "body": b"true}"})


def test_a_served_answer_is_the_same_bytes_as_plain_uvicorn_and_arrives_in_one_segment() -> None:
    async def exchange(http: Any) -> list[bytes]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        config = uvicorn.Config(_app, log_config=None, access_log=False, lifespan="off", http=http, date_header=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        chunks: list[bytes] = []
        for _ in range(2):  # keep-alive: a second answer on the same connection
            writer.write(b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
            data = b""
            while not data.endswith(b"true}"):
                chunk = await reader.read(65536)
                assert chunk
                data += chunk
                chunks.append(chunk)
            chunks.append(b"|")
        writer.close()
        server.should_exit = True
        await task
        return chunks

    async def both() -> tuple[list[bytes], list[bytes]]:
        return await exchange("httptools"), await exchange(JoinedWritesHttpToolsProtocol)

    plain, joined = eventloop.run(both())
    assert b"".join(joined) == b"".join(plain)
    assert b"".join(joined).startswith(b"HTTP/1.1 201 Created\r\n")
    assert joined.count(b"|") == 2
    assert len(joined) == 4  # each answer in one read: head and body were one write
