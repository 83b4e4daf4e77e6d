"""The server's writes: what one turn of the event loop writes leaves in one send (an answer's head
and body together), in order, and nothing held is lost when the connection closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.server import CoalescingTransport

pytestmark = pytest.mark.anyio


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 5000)}

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


async def turn() -> None:
    await asyncio.sleep(0)


async def test_a_head_and_body_written_in_one_turn_leave_in_one_send() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert raw.writes == [], "held until the turn ends"
    await turn()
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_of_later_turns_leave_separately_and_in_order() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    for event in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"):
        transport.write(event)
        await turn()
    assert raw.writes == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]


async def test_closing_sends_what_is_held_first() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    transport.close()
    assert raw.writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and raw.closed
    await turn()  # the scheduled flush finds nothing left and writes nothing after the close
    assert len(raw.writes) == 1


async def test_a_connection_already_closing_is_not_written_to() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"late")
    raw.closed = True  # the client went away meanwhile
    await turn()
    assert raw.writes == []


async def test_everything_else_is_the_transports_own() -> None:
    raw = RecordingTransport()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False
