from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import Settings
from proxy.errors import UpstreamRejected
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, aiter_sse

STREAM_FIXTURES = Path(__file__).parent / "fixtures" / "chat" / "stream"
Event = tuple[str, bytes]


def decode(*chunks: bytes) -> list[Event]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


def split_at(body: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p for p in points if 0 < p < len(body)})
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


# --- the field rules


def test_event_and_data_fields_make_an_event() -> None:
    assert decode(b'event: message_start\ndata: {"a":1}\n\n') == [("message_start", b'{"a":1}')]


def test_event_name_defaults_to_message() -> None:
    assert decode(b"data: x\n\n") == [("message", b"x")]


def test_empty_event_field_means_message() -> None:
    assert decode(b"event:\ndata: x\n\n") == [("message", b"x")]


def test_event_name_does_not_carry_over_to_the_next_event() -> None:
    assert decode(b"event: ping\ndata: 1\n\ndata: 2\n\n") == [("ping", b"1"), ("message", b"2")]


def test_multi_line_data_is_joined_with_lf() -> None:
    assert decode(b"data: first\ndata: second\ndata:\ndata: fourth\n\n") == [("message", b"first\nsecond\n\nfourth")]


def test_a_single_empty_data_line_dispatches_an_empty_event() -> None:
    assert decode(b"data:\n\n") == [("message", b"")]


def test_only_one_leading_space_is_stripped() -> None:
    assert decode(b"data:  two spaces \n\n") == [("message", b" two spaces ")]


def test_value_without_a_space_after_the_colon() -> None:
    assert decode(b"event:ping\ndata:{}\n\n") == [("ping", b"{}")]


def test_field_without_a_colon_has_an_empty_value() -> None:
    assert decode(b"data\n\n") == [("message", b"")]


def test_colons_inside_the_value_are_kept() -> None:
    assert decode(b'data: {"url":"https://x"}\n\n') == [("message", b'{"url":"https://x"}')]


def test_comments_are_ignored() -> None:
    assert decode(b": keep-alive\n\n:another\ndata: x\n: inside\n\n") == [("message", b"x")]


def test_id_retry_and_unknown_fields_are_ignored() -> None:
    assert decode(b"id: 7\nretry: 3000\nfoo: bar\ndata: x\n\n") == [("message", b"x")]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\n") == []


def test_extra_blank_lines_dispatch_nothing() -> None:
    assert decode(b"\n\n\ndata: x\n\n\n\n") == [("message", b"x")]


def test_leading_utf8_bom_is_dropped() -> None:
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [("message", b"x")]


def test_leading_bom_split_across_reads_is_dropped() -> None:
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [("message", b"x")]


def test_a_bom_later_in_the_stream_is_data() -> None:
    assert decode(b"data: a\n\ndata: \xef\xbb\xbfb\n\n") == [("message", b"a"), ("message", b"\xef\xbb\xbfb")]


# --- line endings and split reads


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_each_line_ending_gives_the_same_events(eol: bytes) -> None:
    body = eol.join([b"event: a", b"data: 1", b"data: 2", b"", b": c", b"data: 3", b"", b""])
    assert decode(body) == [("a", b"1\n2"), ("message", b"3")]


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    assert decode(b"data: a\r", b"\ndata: b\r\n\r", b"\n") == [("message", b"a\nb")]


def test_cr_ending_a_read_then_a_non_lf_byte() -> None:
    assert decode(b"data: a\r", b"data: b\r\r") == [("message", b"a\nb")]


def test_multi_byte_utf8_split_across_reads_is_kept_intact() -> None:
    body = 'data: {"text":"café ☕ 🙂"}\n\n'.encode()
    at = body.index("☕".encode()) + 1
    assert decode(body[:at], body[at:]) == [("message", '{"text":"café ☕ 🙂"}'.encode())]


def test_one_byte_reads_give_the_same_events() -> None:
    body = (STREAM_FIXTURES / "tool_use.sse").read_bytes()
    assert decode(*(body[i : i + 1] for i in range(len(body)))) == decode(body)


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\ndata: 2") == [("message", b"1")]
    assert decoder.feed(b"\n\n") == [("message", b"2")]


def test_empty_reads_are_harmless() -> None:
    assert decode(b"", b"data: x\r", b"", b"\n\n", b"") == [("message", b"x")]


# --- end of stream


def test_event_without_its_blank_line_at_end_of_stream_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: cut") == [("message", b"complete")]
    assert decoder.flush() == []
    assert decoder.pending


def test_pending_when_fields_were_read_but_no_blank_line_came() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"event: message_delta\ndata: {}\n")
    assert decoder.pending


def test_not_pending_after_a_complete_stream() -> None:
    decoder = SSEDecoder()
    decoder.feed((STREAM_FIXTURES / "text.sse").read_bytes())
    assert not decoder.pending
    assert decoder.flush() == []


def test_not_pending_when_only_comments_were_left() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n\n: trailing comment\n")
    assert not decoder.pending


@pytest.mark.anyio
async def test_aiter_sse_yields_events_across_reads() -> None:
    async def body() -> AsyncIterator[bytes]:
        for piece in (b"event: ping\nda", b"ta: {}\r", b"\n\r\ndata: 2\n\n", b"data: cut"):
            yield piece

    assert [event async for event in aiter_sse(body())] == [("ping", b"{}"), ("message", b"2")]


# --- properties

_name = st.sampled_from(["message_start", "content_block_delta", "ping", "error", "x"])
_value = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30).map(str.encode)
_event = st.tuples(st.one_of(st.none(), _name), st.lists(_value, min_size=1, max_size=4), st.booleans())
_eol = st.sampled_from([b"\n", b"\r\n", b"\r"])


def _serialise(events: list[tuple[str | None, list[bytes], bool]], eol: bytes) -> bytes:
    out = []
    for name, data, comment in events:
        if comment:
            out.append(b": comment" + eol)
        if name is not None:
            out.append(b"event: " + name.encode() + eol)
        out.extend(b"data: " + line + eol for line in data)
        out.append(eol)
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, max_size=8), _eol, st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_any_split_of_any_stream_gives_the_events_that_were_written(
    events: list[tuple[str | None, list[bytes], bool]], eol: bytes, points: list[int]
) -> None:
    body = _serialise(events, eol)
    expected = [(name or "message", b"\n".join(data)) for name, data, _ in events]
    assert decode(body) == expected
    assert decode(*split_at(body, points)) == expected


_line = st.one_of(
    st.builds(lambda v: b"data: " + v, _value),
    st.builds(lambda v: b"event:" + v, _value),
    st.just(b": c"),
    st.just(b""),
    st.just(b"id: 1"),
    st.just(b"data"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_line, _eol), max_size=20), st.lists(st.integers(min_value=0, max_value=400)))
def test_mixed_line_endings_decode_the_same_whatever_the_split(
    lines: list[tuple[bytes, bytes]], points: list[int]
) -> None:
    body = b"".join(line + eol for line, eol in lines)
    whole = SSEDecoder()
    expected = whole.feed(body)
    pieces = SSEDecoder()
    got = [event for chunk in split_at(body, points) for event in pieces.feed(chunk)]
    assert got == expected
    assert pieces.pending == whole.pending


# --- the bound on one event


LIMIT = 1024


def test_a_line_that_never_ends_fails_once_it_passes_the_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    decoder.feed(b"data: ")
    for _ in range(LIMIT // 256 - 1):
        assert decoder.feed(b"x" * 256) == []
    with pytest.raises(UpstreamRejected, match=r"upstream\.max_event_bytes \(1024 bytes\)"):
        decoder.feed(b"x" * 256)
    with pytest.raises(UpstreamRejected):  # the stream stays failed
        decoder.feed(b"\n\n")


def test_many_data_lines_of_one_event_fail_once_they_pass_the_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    with pytest.raises(UpstreamRejected):
        for _ in range(LIMIT):
            decoder.feed(b"data: xx\n")


def test_events_under_the_bound_pass_however_many_there_are() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    event = b"data: " + b"x" * (LIMIT - 10) + b"\n\n"
    for piece in [event] * 50 + split_at(event * 50, list(range(0, len(event) * 50, 700))):
        for name, data in decoder.feed(piece):
            assert (name, len(data)) == ("message", LIMIT - 10)


def test_the_events_a_read_completed_before_an_oversized_one_come_first() -> None:
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    got: list[Event] = []
    with pytest.raises(UpstreamRejected):
        for event in decoder.feed(b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\ndata: " + b"x" * 2 * LIMIT):
            got.append(event)
    assert got == [("a", b"1"), ("b", b"2")]


@pytest.mark.anyio
async def test_aiter_sse_fails_on_an_oversized_event_after_the_events_before_it() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: " + b"x" * 2 * LIMIT

    got: list[Event] = []
    with pytest.raises(UpstreamRejected):
        async for event in aiter_sse(body(), max_event_bytes=LIMIT):
            got.append(event)
    assert got == [("message", b"1")]


def test_the_default_bound_is_the_settings_default() -> None:
    assert SSEDecoder().max_event_bytes == Settings().upstream.max_event_bytes == DEFAULT_MAX_EVENT_BYTES
