"""The upstream client against a scriptable fake Messages API: retries, key rotation, timeouts,
load shedding. Sleeps go to a fake clock, so timing bounds are checked without waiting."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from proxy.config import Settings
from proxy.errors import RateLimited, ServiceUnavailable, UpstreamAuthFailed, UpstreamRejected, UpstreamTimeout
from proxy.simulator.transport import InProcessTransport
from proxy.translate.errors import from_upstream
from proxy.upstream import Scrubber, Upstream, UpstreamReply, UpstreamStream

pytestmark = pytest.mark.anyio

OK_BODY = orjson.dumps({"type": "message", "id": "msg_1", "content": []})
STREAM_OK = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def error(status: int, kind: str, **headers: str) -> Reply:
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": kind}})
    return Reply(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


@dataclass
class Reply:
    status: int = 200
    body: bytes = OK_BODY
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None  # a streamed body
    reset: bool = False  # drop the connection before any response
    hang: bool = False  # never send response headers


class FakeUpstream:
    """Serves queued replies in order (the last one repeats) and records every attempt."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.keys: list[str] = []
        self.cancelled = 0

    @property
    def attempts(self) -> int:
        return len(self.keys)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        headers = dict(scope["headers"])
        self.keys.append(headers.get(b"x-api-key", b"").decode())
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        try:
            if reply.reset:
                raise ConnectionResetError("connection reset by peer")
            if reply.hang:
                await asyncio.sleep(3600)
            raw_headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
            await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
            for chunk in reply.chunks or [reply.body]:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make(fake: FakeUpstream, clock: FakeClock, keys: str = "key-aaaa-1111", **upstream: Any) -> Upstream:
    settings = Settings(anthropic_api_key=keys, anthropic_base_url="http://upstream", upstream=upstream)
    return Upstream(settings, transport=InProcessTransport(fake), sleep=clock.sleep, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    before = len(asyncio.all_tasks())
    yield
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= before


async def test_429_then_529_then_success_is_a_success_after_three_attempts(clock: FakeClock) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", retry_after="2"), error(529, "overloaded_error"), Reply())
    upstream = make(fake, clock)
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 200
    assert fake.attempts == 3
    assert clock.slept[0] == 2.0  # the rate-limited key rested for its retry-after


async def test_529_forever_ends_in_overloaded_within_the_deadline(clock: FakeClock) -> None:
    fake = FakeUpstream(error(529, "overloaded_error"))
    upstream = make(fake, clock, max_attempts=4, retry_deadline=10)
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 529
    assert fake.attempts == 4
    assert sum(clock.slept) <= 10
    assert all(s <= upstream.config.max_backoff for s in clock.slept)


async def test_backoff_grows_and_stays_under_the_cap(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.upstream.retry.random.random", lambda: 1.0)
    fake = FakeUpstream(error(503, "api_error"))
    await make(fake, clock, max_attempts=6, max_backoff=3, retry_deadline=100).request("POST", "/v1/messages")
    assert clock.slept == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_429_forever_ends_in_429_with_retry_after(clock: FakeClock) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", retry_after="3"))
    upstream = make(fake, clock)
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 429
    assert reply.headers["retry-after"] == "3"
    assert fake.attempts == 3


async def test_rate_limited_key_is_bypassed_without_waiting(clock: FakeClock) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", retry_after="30"), Reply())
    upstream = make(fake, clock, keys="key-aaaa-1111,key-bbbb-2222")
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 200
    assert fake.keys == ["key-aaaa-1111", "key-bbbb-2222"]
    assert clock.slept == [0.0]
    # The resting key stays out of rotation until its retry-after has passed.
    fake.replies = [Reply()]
    await upstream.request("POST", "/v1/messages", b"{}")
    await upstream.request("POST", "/v1/messages", b"{}")
    assert fake.keys[2:] == ["key-bbbb-2222", "key-bbbb-2222"]
    clock.now += 31
    await upstream.request("POST", "/v1/messages", b"{}")
    await upstream.request("POST", "/v1/messages", b"{}")
    assert set(fake.keys[4:]) == {"key-aaaa-1111", "key-bbbb-2222"}


async def test_every_key_resting_longer_than_we_wait_is_429_with_retry_after(clock: FakeClock) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", retry_after="45"))
    upstream = make(fake, clock, keys="key-aaaa-1111,key-bbbb-2222")
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 429
    assert fake.attempts == 2
    with pytest.raises(RateLimited) as raised:
        await upstream.request("POST", "/v1/messages", b"{}")
    assert raised.value.headers["retry-after"] == "45"
    assert fake.attempts == 2  # no key was free, so nothing was sent


async def test_refused_key_leaves_the_rotation(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeUpstream(error(401, "authentication_error"), Reply())
    upstream = make(fake, clock, keys="sk-ant-bad-key-0001,sk-ant-good-key-0002")
    assert (await upstream.request("POST", "/v1/messages", b"{}")).status == 200
    for _ in range(3):
        await upstream.request("POST", "/v1/messages", b"{}")
    assert fake.keys == ["sk-ant-bad-key-0001"] + ["sk-ant-good-key-0002"] * 4
    assert "…0001" in caplog.text
    assert "sk-ant-bad-key-0001" not in caplog.text


async def test_every_key_refused_is_upstream_auth_failure(clock: FakeClock) -> None:
    fake = FakeUpstream(error(401, "authentication_error"))
    upstream = make(fake, clock)
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 401
    with pytest.raises(UpstreamAuthFailed):
        await upstream.request("POST", "/v1/messages", b"{}")


@pytest.mark.parametrize("status", [400, 403, 404, 413])
async def test_client_errors_are_never_retried(clock: FakeClock, status: int) -> None:
    fake = FakeUpstream(error(status, "invalid_request_error"))
    reply = await make(fake, clock).request("POST", "/v1/messages", b"{}")
    assert reply.status == status
    assert fake.attempts == 1


async def test_retry_after_beyond_what_we_honour_is_answered_at_once(clock: FakeClock) -> None:
    fake = FakeUpstream(error(503, "api_error", retry_after="120"), Reply())
    reply = await make(fake, clock).request("POST", "/v1/messages", b"{}")
    assert reply.status == 503
    assert fake.attempts == 1
    assert clock.slept == []


async def test_retry_after_ms_is_honoured(clock: FakeClock) -> None:
    fake = FakeUpstream(error(529, "overloaded_error", retry_after_ms="1500"), Reply())
    await make(fake, clock).request("POST", "/v1/messages", b"{}")
    assert clock.slept == [1.5]


async def test_x_should_retry_is_obeyed(clock: FakeClock) -> None:
    never = FakeUpstream(error(529, "overloaded_error", x_should_retry="false"), Reply())
    assert (await make(never, clock).request("POST", "/v1/messages")).status == 529
    assert never.attempts == 1
    always = FakeUpstream(error(409, "conflict", x_should_retry="true"), Reply())
    assert (await make(always, clock).request("POST", "/v1/messages")).status == 200
    assert always.attempts == 2


async def test_reset_connection_is_retried(clock: FakeClock) -> None:
    fake = FakeUpstream(Reply(reset=True), Reply())
    assert (await make(fake, clock).request("POST", "/v1/messages")).status == 200
    assert fake.attempts == 2


async def test_hung_upstream_times_out_within_the_bound_and_leaves_nothing_behind(
    clock: FakeClock, no_leaks: None
) -> None:
    fake = FakeUpstream(Reply(hang=True))
    upstream = make(fake, clock, first_byte_timeout=0.1, max_attempts=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await upstream.request("POST", "/v1/messages")
    assert loop.time() - started < 1.0
    assert fake.attempts == 2
    assert fake.cancelled == 2
    assert upstream.in_flight == 0
    await upstream.aclose()


async def test_request_deadline_bounds_the_whole_call(clock: FakeClock) -> None:
    fake = FakeUpstream(Reply(hang=True))
    upstream = make(fake, clock, first_byte_timeout=60, request_timeout=0.2)
    with pytest.raises(UpstreamTimeout, match=r"0\.2s"):
        await upstream.request("POST", "/v1/messages")
    await upstream.aclose()


async def test_calls_beyond_the_in_flight_bound_are_shed_at_once(clock: FakeClock) -> None:
    fake = FakeUpstream(Reply(chunks=STREAM_OK))
    upstream = make(fake, clock, max_in_flight=1)
    stream = await upstream.open_stream("/v1/messages", b"{}")
    assert isinstance(stream, UpstreamStream)
    with pytest.raises(ServiceUnavailable) as raised:
        await upstream.request("POST", "/v1/messages")
    assert raised.value.status_code == 503
    assert raised.value.headers["retry-after"] == "1"
    await stream.aclose()
    assert upstream.in_flight == 0
    assert (await upstream.request("POST", "/v1/messages")).status == 200


async def test_stream_whose_first_event_is_an_error_is_retried(clock: FakeClock) -> None:
    overloaded = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    fake = FakeUpstream(Reply(chunks=[overloaded]), Reply(chunks=STREAM_OK))
    upstream = make(fake, clock)
    stream = await upstream.open_stream("/v1/messages", b"{}")
    assert isinstance(stream, UpstreamStream)
    assert b"".join([c async for c in stream.iter_bytes()]) == b"".join(STREAM_OK)
    await stream.aclose()
    assert fake.attempts == 2


async def test_stream_error_status_is_retried_then_returned(clock: FakeClock) -> None:
    fake = FakeUpstream(error(529, "overloaded_error"))
    upstream = make(fake, clock, max_attempts=2)
    result = await upstream.open_stream("/v1/messages", b"{}")
    assert isinstance(result, UpstreamReply)
    assert result.status == 529
    assert fake.attempts == 2
    assert upstream.in_flight == 0


# --- hostile retry hints -----------------------------------------------------------------------


async def test_retry_after_inf_rests_the_key_a_finite_time_and_later_requests_still_work(clock: FakeClock) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", retry_after="inf"))
    upstream = make(fake, clock)
    assert (await upstream.request("POST", "/v1/messages", b"{}")).status == 429
    # Not a hint at all: the key rests the default second, and the next request is served as usual.
    fake.replies = [Reply()]
    clock.now += 1.0
    assert (await upstream.request("POST", "/v1/messages", b"{}")).status == 200


@pytest.mark.parametrize("hint", [{"retry_after": "1e308"}, {"retry_after_ms": "1e999"}, {"retry_after": "9" * 30}])
async def test_an_absurd_retry_after_is_clamped_for_the_key_and_for_the_client(
    clock: FakeClock, hint: dict[str, str]
) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", **hint))
    upstream = make(fake, clock)
    reply = await upstream.request("POST", "/v1/messages", b"{}")
    assert reply.status == 429
    assert reply.headers["retry-after"] == "3600"  # what the native routes pass on
    assert from_upstream(reply.status, reply.body, reply.headers).headers == {"Retry-After": "3600"}
    with pytest.raises(RateLimited) as raised:  # the key rests an hour, not 10**308 seconds
        await upstream.request("POST", "/v1/messages", b"{}")
    assert raised.value.headers["retry-after"] == "3600"
    clock.now += 3601
    fake.replies = [Reply()]
    assert (await upstream.request("POST", "/v1/messages", b"{}")).status == 200


async def test_the_longest_retry_hint_believed_is_a_setting(clock: FakeClock) -> None:
    fake = FakeUpstream(error(429, "rate_limit_error", retry_after="86400"))
    upstream = make(fake, clock, max_retry_hint=120)
    assert (await upstream.request("POST", "/v1/messages", b"{}")).headers["retry-after"] == "120"
    with pytest.raises(RateLimited) as raised:
        await upstream.request("POST", "/v1/messages", b"{}")
    assert raised.value.headers["retry-after"] == "120"


async def test_a_malformed_retry_after_ms_falls_back_to_retry_after_for_the_wait(clock: FakeClock) -> None:
    fake = FakeUpstream(error(529, "overloaded_error", retry_after_ms="inf", retry_after="2"), Reply())
    await make(fake, clock).request("POST", "/v1/messages", b"{}")
    assert clock.slept == [2.0]


async def test_an_http_date_retry_after_is_a_wait_until_that_date(clock: FakeClock) -> None:
    soon = email.utils.formatdate(time.time() + 5, usegmt=True)
    fake = FakeUpstream(error(529, "overloaded_error", retry_after=soon), Reply())
    await make(fake, clock).request("POST", "/v1/messages", b"{}")
    assert len(clock.slept) == 1 and 3.0 <= clock.slept[0] <= 5.0


# --- what comes back is bounded -------------------------------------------------------------------


async def test_a_body_over_max_response_bytes_is_rejected_and_not_retried(clock: FakeClock) -> None:
    fake = FakeUpstream(Reply(chunks=[b"x" * 1024] * 100))
    upstream = make(fake, clock, max_response_bytes=64 * 1024)
    with pytest.raises(UpstreamRejected, match=r"upstream\.max_response_bytes \(65536 bytes\)"):
        await upstream.request("POST", "/v1/messages", b"{}")
    assert fake.attempts == 1
    assert upstream.in_flight == 0


async def test_a_body_at_max_response_bytes_is_read_whole(clock: FakeClock) -> None:
    fake = FakeUpstream(Reply(chunks=[b"x" * 1024] * 64))
    reply = await make(fake, clock, max_response_bytes=64 * 1024).request("POST", "/v1/messages", b"{}")
    assert reply.body == b"x" * 64 * 1024


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_rejected_without_following_it(clock: FakeClock, status: int) -> None:
    fake = FakeUpstream(Reply(status, b"", {"location": "http://elsewhere.invalid/v1/messages"}))
    upstream = make(fake, clock)
    with pytest.raises(UpstreamRejected, match=rf"redirect \(HTTP {status}\)"):
        await upstream.request("POST", "/v1/messages", b"{}")
    with pytest.raises(UpstreamRejected):
        await upstream.open_stream("/v1/messages", b"{}")
    assert fake.attempts == 2  # one each, nothing retried and nothing sent elsewhere
    assert upstream.in_flight == 0


async def test_a_compressed_body_is_rejected(clock: FakeClock) -> None:
    fake = FakeUpstream(Reply(200, gzip.compress(OK_BODY), {"content-encoding": "gzip"}))
    with pytest.raises(UpstreamRejected, match="gzip-encoded"):
        await make(fake, clock).request("POST", "/v1/messages", b"{}")


async def test_the_upstream_is_asked_for_uncompressed_bodies(clock: FakeClock) -> None:
    seen: list[dict[bytes, bytes]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope["headers"]))
        await FakeUpstream(Reply())(scope, receive, send)

    settings = Settings(anthropic_api_key="key-aaaa-1111", anthropic_base_url="http://upstream")
    upstream = Upstream(settings, transport=InProcessTransport(app), sleep=clock.sleep, clock=clock)
    await upstream.request("POST", "/v1/messages", b"{}")
    assert seen[0][b"accept-encoding"] == b"identity"


# --- the upstream's request id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "passed_on"),
    [
        ("req_011CSHoEeqs5C35K2UUqR7Fy", "req_011CSHoEeqs5C35K2UUqR7Fy"),
        ("a.b:c-d_9", "a.b:c-d_9"),
        ("req_€", None),
        ("req ü", None),
        ("r" * 129, None),
        ("", None),
        ("req;injected=1", None),
    ],
)
async def test_only_a_sane_request_id_is_passed_on(clock: FakeClock, raw: str, passed_on: str | None) -> None:
    fake = FakeUpstream(Reply(headers={"request-id": raw}, chunks=STREAM_OK))
    upstream = make(fake, clock)
    assert (await upstream.request("POST", "/v1/messages", b"{}")).request_id == passed_on
    stream = await upstream.open_stream("/v1/messages", b"{}")
    assert isinstance(stream, UpstreamStream)
    assert stream.request_id == passed_on
    await stream.aclose()


# --- scrubbing the upstream keys ---------------------------------------------------------------------

KEY = "sk-ant-api03-secret-0123456789abcdef"


async def test_an_error_body_quoting_an_upstream_key_is_scrubbed(clock: FakeClock) -> None:
    quoted = orjson.dumps({"type": "error", "error": {"type": "permission_error", "message": f"key {KEY} denied"}})
    fake = FakeUpstream(Reply(403, quoted))
    reply = await make(fake, clock, keys=f"{KEY},sk-ant-other-key-99").request("POST", "/v1/messages", b"{}")
    assert KEY.encode() not in reply.body
    assert b"key [redacted] denied" in reply.body


@pytest.mark.parametrize("cut", range(1, len(KEY)))
def test_a_key_cut_by_chunk_boundaries_is_still_scrubbed(cut: int) -> None:
    body = b'data: {"message": "' + KEY.encode() + b'"}\n\n'
    start = body.index(KEY.encode())
    scrubbing = Scrubber([KEY]).stream()
    out = scrubbing.feed(body[: start + cut]) + scrubbing.feed(body[start + cut :]) + scrubbing.flush()
    assert out == b'data: {"message": "[redacted]"}\n\n'


def test_the_start_of_a_key_at_the_end_of_a_body_is_held_then_flushed() -> None:
    scrubbing = Scrubber([KEY]).stream()
    assert scrubbing.feed(b"event: ping\n\n") == b"event: ping\n\n"  # a whole event is never held
    assert scrubbing.feed(b"...sk-ant") == b"..."
    assert scrubbing.feed(b"-other") == b"sk-ant-other"
    assert scrubbing.feed(b"sk-") == b""
    assert scrubbing.flush() == b"sk-"


def test_transport_error_text_loses_the_keys_and_the_upstream_address() -> None:
    scrubber = Scrubber([KEY], "http://10.0.3.7:8443")
    text = f"400, message='bad header: {KEY}', url='http://10.0.3.7:8443/v1/messages' peer 10.0.3.7:8443"
    cleaned = scrubber.text(text)
    assert KEY not in cleaned and "10.0.3.7" not in cleaned and "8443" not in cleaned, cleaned


def test_secrets_too_short_to_be_keys_are_not_scrubbed() -> None:
    assert Scrubber(["abc"]).scrub(b"abcabc") == b"abcabc"
    assert Scrubber([KEY]).scrub(KEY.encode() * 2) == b"[redacted][redacted]"
