"""Security: credentials stay where they belong, bodies over the limit are refused early, key
comparison is constant-time, repeated bad keys are slowed (`proxy.abuse`), CORS is off.

The fuzz run (tests/test_fuzz.py) checks credential forwarding on every request it makes; the
tests here pin the same down for each route and header, and look for secrets everywhere a
client or an operator can read: response bodies and headers, log records, `/metrics`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from proxy.abuse import BadKeyThrottle
from proxy.errors import AuthenticationFailed
from proxy.keys import KeyService, open_store
from proxy.logs import JSONFormatter
from proxy.upstream import InProcessTransport
from tests.faults import (
    CHAT,
    CLIENT_KEY,
    LAST_CHUNK,
    SSE_HEAD,
    UPSTREAM_KEY,
    Conn,
    EchoUpstream,
    RawUpstream,
    assert_openai_error_body,
    chat_request,
    chunk,
    http_response,
    message,
    read_response,
    serve_gateway,
    stream_events,
)

pytestmark = pytest.mark.anyio

WRONG_KEY = "sk-wrong-guess-0c61e9d2b7f4"
OTHER_CLIENT_KEY = "sk-client-second-1e8a47bd02"


# --- credentials are never forwarded ---------------------------------------------------------------


NATIVE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}


async def test_client_credentials_never_reach_the_upstream() -> None:
    echo = EchoUpstream(keep_bodies=True, forbidden=(CLIENT_KEY, "cookie-secret", "proxy-secret"))
    async with serve_gateway(transport=InProcessTransport(echo)) as gateway:
        client_headers = {
            "authorization": f"Bearer {CLIENT_KEY}",
            "x-api-key": CLIENT_KEY,
            "cookie": "session=cookie-secret",
            "proxy-authorization": "Basic proxy-secret",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "client-chosen-beta",
        }
        async with httpx.AsyncClient(base_url=gateway.url, headers=client_headers, timeout=10) as client:
            translated = [
                await client.post("/v1/chat/completions", json=CHAT),
                await client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
                await client.get("/v1/models"),
            ]
            for header in ("authorization", "x-api-key"):  # each credential header on its own, too
                alone = {header: client_headers[header]}
                translated.append(await client.post("/v1/chat/completions", json=CHAT, headers=alone))
            native = [
                await client.post("/v1/messages", json=NATIVE),
                await client.post("/v1/messages", json={**NATIVE, "stream": True}),
                await client.post(
                    "/v1/messages/count_tokens", json={k: v for k, v in NATIVE.items() if k != "max_tokens"}
                ),
            ]
    assert [r.status_code for r in translated + native] == [200] * 8
    assert echo.problems == []
    assert len(echo.headers) == 8
    for number, seen in enumerate(echo.headers):
        assert seen["x-api-key"] == UPSTREAM_KEY
        assert not {"authorization", "cookie", "proxy-authorization"} & set(seen)
        if number < 5:  # translated requests carry the gateway's own API version and no client beta
            assert seen["anthropic-version"] != "2023-06-01" and "anthropic-beta" not in seen
        else:  # native ones forward exactly these two, as proxy/native_route.py documents
            assert (seen["anthropic-version"], seen["anthropic-beta"]) == ("2023-06-01", "client-chosen-beta")


# --- secrets never surface ---------------------------------------------------------------------


async def by_prompt(conn: Conn) -> None:
    """Replies chosen by the prompt: `refuse` → a 401 that quotes the key, as some proxies do."""
    assert conn.request is not None
    request = conn.request.json()
    prompt = request["messages"][-1]["content"]
    if isinstance(prompt, list):
        prompt = prompt[-1]["text"]
    if prompt == "refuse":
        quoted = f"invalid x-api-key: {conn.request.headers['x-api-key']}"
        body = orjson.dumps({"type": "error", "error": {"type": "authentication_error", "message": quoted}})
        await conn.send(http_response(401, body))
    elif request.get("stream"):
        await conn.send(SSE_HEAD)
        await conn.send_events(stream_events(["streamed"]))
        await conn.send(LAST_CHUNK)
    else:
        await conn.send(http_response(200, orjson.dumps(message("ok"))))


async def test_secrets_never_appear_in_responses_logs_or_metrics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = (UPSTREAM_KEY, CLIENT_KEY, OTHER_CLIENT_KEY, WRONG_KEY)
    seen_by_clients: list[str] = []
    async with (
        RawUpstream(by_prompt) as upstream,
        serve_gateway(upstream.url, api_keys=f"{CLIENT_KEY},{OTHER_CLIENT_KEY}") as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        good = {"authorization": f"Bearer {CLIENT_KEY}"}
        calls: list[tuple[str, str, dict[str, str], Any]] = [
            ("POST", "/v1/chat/completions", good, CHAT),
            ("POST", "/v1/chat/completions", good, {**CHAT, "stream": True}),
            ("POST", "/v1/chat/completions", {"x-api-key": OTHER_CLIENT_KEY}, CHAT),
            ("POST", "/v1/chat/completions", {"authorization": f"Bearer {WRONG_KEY}"}, CHAT),
            ("POST", "/v1/chat/completions", {"x-api-key": WRONG_KEY}, CHAT),
            ("POST", "/v1/chat/completions", {"authorization": f"Basic {WRONG_KEY}"}, CHAT),
            ("POST", "/v1/chat/completions", {}, CHAT),
            ("GET", "/v1/models", {"authorization": f"Bearer {WRONG_KEY}"}, None),
            ("POST", "/v1/chat/completions", good, {"model": 5}),
            # Last: the upstream refuses the gateway's key (and quotes it), which takes the key out of rotation.
            ("POST", "/v1/chat/completions", good, {**CHAT, "messages": [{"role": "user", "content": "refuse"}]}),
            ("POST", "/v1/chat/completions", good, {**CHAT, "stream": True}),
        ]
        statuses = []
        for method, path, headers, body in calls:
            response = await client.request(method, path, headers=headers, json=body)
            statuses.append(response.status_code)
            seen_by_clients.append(response.text)
            seen_by_clients.append(str(response.headers))
            if response.status_code >= 400:
                assert_openai_error_body(response.json())
        metrics = (await client.get("/metrics")).text
    assert statuses == [200, 200, 200, 401, 401, 401, 401, 401, 400, 502, 502]
    formatter = JSONFormatter()
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert "upstream_authentication_error" in "".join(seen_by_clients)  # the refusal was rendered …
    assert '"key":"key-2"' in logged  # … and the access log names keys by name
    for secret in secrets:
        assert secret not in "".join(seen_by_clients), f"{secret} reached a client"
        assert secret not in logged, f"{secret} was logged"
        assert secret not in metrics, f"{secret} is in /metrics"
        assert secret not in caplog.text


# --- constant-time comparison ------------------------------------------------------------------


async def test_key_comparison_is_compare_digest_over_the_digests_of_every_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = ["sk-first-key-aaaaaaaa", "sk-middle-key-bbbbbbbb", "sk-last-key-cccccccc"]
    digests = {hashlib.sha256(k.encode()).digest() for k in keys}
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    # The service the gateway authenticates with, holding the keys of PROXY_API_KEYS.
    service = KeyService(open_store(str(tmp_path / "keys.db")), static_keys=[SecretStr(k) for k in keys])
    for presented, expected in [(keys[0], "key-1"), (keys[2], "key-3"), ("sk-not-a-key-dddddddd", None)]:
        calls.clear()
        headers = {"authorization": f"Bearer {presented}"}
        if expected is None:
            with pytest.raises(AuthenticationFailed):
                await service.authenticate(headers)
        else:
            assert (await service.authenticate(headers)).name == expected
        # Every key is compared, whichever matches (no early exit), and only 32-byte digests are compared.
        assert len(calls) == len(keys), calls
        candidate = hashlib.sha256(presented.encode()).digest()
        for a, b in calls:
            assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 32
            assert candidate in (a, b)
        assert {b if a == candidate else a for a, b in calls} == digests


# --- body limits -------------------------------------------------------------------------------


async def test_declared_body_over_the_limit_is_refused_before_it_is_sent() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo), max_body_bytes=4096) as gateway:
        reader, writer = await asyncio.open_connection(*gateway.address)
        try:
            head = chat_request(b"", headers={"content-length": str(10**9)})
            writer.write(head + b'{"model": "cl')  # a gigabyte announced, a few bytes sent
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), 2)
        finally:
            writer.close()
    assert response.status == 413
    error = assert_openai_error_body(orjson.loads(response.body))
    assert error["code"] == "request_too_large" and "4096" in error["message"]
    assert echo.requests == 0


async def test_chunked_body_over_the_limit_is_refused_once_the_limit_is_crossed() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo), max_body_bytes=4096) as gateway:
        reader, writer = await asyncio.open_connection(*gateway.address)
        try:
            writer.write(chat_request(b"", headers={"content-length": None, "transfer-encoding": "chunked"}))
            for _ in range(5):  # 5 KiB, one over the limit; the body never ends
                writer.write(chunk(b" " * 1024))
                await writer.drain()
                await asyncio.sleep(0.01)
            response = await asyncio.wait_for(read_response(reader), 2)
        finally:
            writer.close()
    assert response.status == 413
    assert assert_openai_error_body(orjson.loads(response.body))["code"] == "request_too_large"
    assert echo.requests == 0


async def test_chunked_body_within_the_limit_is_served() -> None:
    echo = EchoUpstream()
    async with serve_gateway(transport=InProcessTransport(echo), max_body_bytes=4096) as gateway:
        reader, writer = await asyncio.open_connection(*gateway.address)
        try:
            writer.write(chat_request(b"", headers={"content-length": None, "transfer-encoding": "chunked"}))
            body = orjson.dumps(CHAT)
            writer.write(chunk(body[:10]) + chunk(body[10:]) + LAST_CHUNK)
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), 2)
        finally:
            writer.close()
    assert response.status == 200, response.body
    assert echo.requests == 1


# --- CORS --------------------------------------------------------------------------------------


async def test_cors_is_off_unless_configured() -> None:
    echo = EchoUpstream()
    async with (
        serve_gateway(transport=InProcessTransport(echo)) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=5) as client,
    ):
        origin = {"origin": "https://evil.example"}
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                **origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        simple = await client.post(
            "/v1/chat/completions", json=CHAT, headers={**origin, "authorization": f"Bearer {CLIENT_KEY}"}
        )
        models = await client.get("/v1/models", headers={**origin, "authorization": f"Bearer {CLIENT_KEY}"})
    assert simple.status_code == 200 and models.status_code == 200
    assert preflight.status_code == 405
    assert_openai_error_body(preflight.json())
    for response in (preflight, simple, models):
        assert not any(name.startswith("access-control-") for name in response.headers), response.headers


# --- repeated bad keys (proxy.abuse) -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Callable[[], float], **kwargs: Any) -> BadKeyThrottle:
    return BadKeyThrottle(**{"max_failures": 3, "window": 60.0, "clock": clock, **kwargs})


def test_bad_keys_up_to_the_limit_pass_then_the_address_waits_for_the_oldest_to_expire() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for _ in range(3):
        assert limiter.check("203.0.113.7") is None
        limiter.record_failure("203.0.113.7")
        clock.now += 10
    assert limiter.check("203.0.113.7") == pytest.approx(30.0)  # the first failure, at 1000, expires at 1060
    clock.now = 1059.0
    assert limiter.check("203.0.113.7") == pytest.approx(1.0)
    clock.now = 1060.0
    assert limiter.check("203.0.113.7") is None  # one guess more, no more
    limiter.record_failure("203.0.113.7")
    assert limiter.check("203.0.113.7") == pytest.approx(10.0)


def test_failures_spread_wider_than_the_window_never_block() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for i in range(50):
        assert limiter.check("203.0.113.7") is None
        limiter.record_failure("203.0.113.7")
        assert limiter.failures("203.0.113.7") == min(i + 1, 2)  # at most two inside any 60 s
        clock.now += 30.1


def test_a_success_clears_the_address_and_other_addresses_are_unaffected() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for _ in range(3):
        limiter.record_failure("203.0.113.7")
    assert limiter.check("203.0.113.7") is not None
    assert limiter.check("203.0.113.8") is None
    limiter.record_success("203.0.113.7")
    assert limiter.check("203.0.113.7") is None and limiter.failures("203.0.113.7") == 0


def test_ipv6_addresses_share_their_slash_64_and_mapped_ipv4_is_ipv4() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::dead:beef", "2001:db8:1:2:ffff::9"):
        limiter.record_failure(host)
    assert limiter.check("2001:db8:1:2::42") is not None
    assert limiter.check("2001:db8:1:3::1") is None
    for _ in range(3):
        limiter.record_failure("::ffff:198.51.100.4")
    assert limiter.check("198.51.100.4") is not None


def test_an_unknown_address_is_never_throttled() -> None:
    limiter = throttle(Clock())
    for _ in range(10):
        limiter.record_failure(None)
    assert limiter.check(None) is None and len(limiter) == 0


def test_memory_is_bounded_by_addresses_and_failures_per_address() -> None:
    clock = Clock()
    limiter = throttle(clock, max_addresses=100)
    for i in range(10_000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    assert limiter.failures("10.0.0.0") == 0  # the oldest were forgotten first …
    assert limiter.failures("10.0.39.15") == 1  # … the newest kept
    for _ in range(10_000):
        limiter.record_failure("192.0.2.1")
    assert limiter.failures("192.0.2.1") == 3
    assert len(limiter._failures["192.0.2.1"]) == 3
    clock.now += 61
    assert limiter.check("192.0.2.1") is None and limiter.failures("192.0.2.1") == 0


def test_a_repeat_offender_stays_tracked_while_one_off_addresses_are_evicted() -> None:
    clock = Clock()
    limiter = throttle(clock, max_addresses=10)
    for i in range(100):
        limiter.record_failure("198.51.100.200")  # kept recent by its own failures
        limiter.record_failure(f"10.0.0.{i}")
        clock.now += 0.1
    assert limiter.check("198.51.100.200") is not None


async def test_the_eleventh_bad_key_from_one_address_within_a_minute_is_429_with_retry_after() -> None:
    echo = EchoUpstream()
    async with (
        serve_gateway(transport=InProcessTransport(echo)) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=5) as client,
    ):
        bad = {"authorization": f"Bearer {WRONG_KEY}"}
        statuses = [(await client.post("/v1/chat/completions", json=CHAT, headers=bad)).status_code for _ in range(10)]
        eleventh = await client.post("/v1/chat/completions", json=CHAT, headers=bad)
    assert statuses == [401] * 10
    assert eleventh.status_code == 429
    assert assert_openai_error_body(eleventh.json())["type"] == "rate_limit_error"
    assert 1 <= int(eleventh.headers["retry-after"]) <= 60
    assert echo.requests == 0


@pytest.mark.parametrize(
    "kwargs", [{"max_failures": 0}, {"window": 0}, {"window": -1.0}, {"max_addresses": 0}], ids=str
)
def test_nonsensical_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BadKeyThrottle(**kwargs)
