"""The server's writes: a response's head leaves in one send with what follows it (an answer's
body, a stream's first event), a body is never held back, and a held head is not lost when nothing
follows it or the connection closes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.server import CoalescingTransport

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


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


def coalescing() -> tuple[CoalescingTransport, RecordingTransport]:
    raw = RecordingTransport()
    return CoalescingTransport(raw, asyncio.get_running_loop()), raw  # type: ignore[arg-type]


async def turn() -> None:
    await asyncio.sleep(0)


async def test_a_head_and_its_body_leave_in_one_send_and_the_body_at_once() -> None:
    transport, raw = coalescing()
    transport.write(HEAD)
    assert raw.writes == [], "the head waits for the body"
    transport.write(b"{}")
    assert raw.writes == [HEAD + b"{}"], "the body is not held: nothing after it delays the client"
    await turn()
    assert raw.writes == [HEAD + b"{}"], "and nothing is sent twice"


async def test_a_streams_head_goes_out_at_the_end_of_the_turn_and_events_at_once() -> None:
    transport, raw = coalescing()
    transport.write(HEAD)
    await turn()  # the first event is still on its way from the upstream: the head must not wait for it
    assert raw.writes == [HEAD]
    for event in (b"data: 1\n\n", b"data: 2\n\n"):
        transport.write(event)
    assert raw.writes == [HEAD, b"data: 1\n\n", b"data: 2\n\n"]


async def test_closing_sends_a_held_head_first() -> None:
    transport, raw = coalescing()
    transport.write(HEAD)
    transport.close()
    assert raw.writes == [HEAD] and raw.closed
    await turn()  # the scheduled flush finds nothing left and writes nothing after the close
    assert raw.writes == [HEAD]


async def test_a_connection_already_closing_is_not_written_to() -> None:
    transport, raw = coalescing()
    transport.write(HEAD)
    raw.closed = True  # the client went away meanwhile
    await turn()
    transport.write(b"late")
    assert raw.writes == []


async def test_everything_else_is_the_transports_own() -> None:
    transport, _ = coalescing()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False
