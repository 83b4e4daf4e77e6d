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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from proxy.abuse import HOSTS_PER_KEY, BadKeyThrottle
from proxy.errors import AuthenticationFailed
from proxy.keys import KeyService, open_store
from proxy.logs import JSONFormatter
from proxy.server import uvicorn_config as server_config
from proxy.simulator.transport import InProcessTransport
from tests import servers
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
    gateway_settings,
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


NATIVE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}


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
        else:  # native ones forward exactly these two, as proxy/dialects/native.py documents
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


def test_a_valid_key_never_clears_its_addresss_failures_and_other_addresses_are_unaffected() -> None:
    clock = Clock()
    limiter = throttle(clock)
    for _ in range(2):
        assert limiter.refuse_bad_key("203.0.113.7") is None
    assert limiter.refuse_valid_key("203.0.113.7", "key-1") is None  # served …
    assert limiter.failures("203.0.113.7") == 2  # … and the guesses still count
    assert limiter.refuse_bad_key("203.0.113.7") is None
    assert limiter.refuse_bad_key("203.0.113.7") == pytest.approx(60.0)  # the fourth guess gets no answer
    assert limiter.check("203.0.113.8") is None


def test_keys_used_from_a_throttled_address_keep_working_and_new_ones_wait_like_guesses() -> None:
    clock = Clock()
    limiter = throttle(clock)
    assert limiter.refuse_valid_key("203.0.113.7", "ci") is None  # a colleague's key, used before the guessing
    assert limiter.refuse_valid_key("2001:db8:1:2::1", "laptop") is None
    for _ in range(3):
        limiter.refuse_bad_key("203.0.113.7")
        limiter.refuse_bad_key("2001:db8:1:2::1")
    clock.now += 5
    for _ in range(100):
        assert limiter.refuse_valid_key("203.0.113.7", "ci") is None
        assert limiter.refuse_valid_key("2001:db8:1:2::99", "laptop") is None  # the same /64
    # A valid key never used from here is answered exactly as a guess would be: no oracle.
    assert limiter.refuse_valid_key("203.0.113.7", "laptop") == pytest.approx(55.0)
    assert limiter.refuse_bad_key("203.0.113.7") == pytest.approx(55.0)
    assert limiter.failures("203.0.113.7") == 3  # refused guesses are not counted: the wait does not grow
    clock.now += 55
    assert limiter.refuse_valid_key("203.0.113.7", "laptop") is None  # once the window has passed


def test_the_hosts_remembered_per_key_are_bounded() -> None:
    clock = Clock()
    limiter = throttle(clock, max_addresses=50)
    for i in range(1000):
        limiter.refuse_valid_key(f"10.1.{i // 256}.{i % 256}", "shared")
        limiter.refuse_valid_key("192.0.2.1", f"key-{i}")
    assert len(limiter._hosts_of_key) <= 50
    assert all(len(hosts) <= HOSTS_PER_KEY for hosts in limiter._hosts_of_key.values())
    assert list(limiter._hosts_of_key["shared"])[-1] == "10.1.3.231"  # the newest kept


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


async def test_nine_guesses_and_one_valid_key_on_repeat_are_throttled_all_the_same() -> None:
    echo = EchoUpstream()
    async with (
        serve_gateway(transport=InProcessTransport(echo)) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=5) as client,
    ):
        bad, good = {"authorization": f"Bearer {WRONG_KEY}"}, {"authorization": f"Bearer {CLIENT_KEY}"}
        guesses = []
        for _ in range(2):  # the valid key in between used to wipe the address's record
            guesses += [(await client.get("/v1/models", headers=bad)).status_code for _ in range(9)]
            assert (await client.get("/v1/models", headers=good)).status_code == 200
    assert guesses == [401] * 10 + [429] * 8


async def test_a_valid_key_keeps_working_from_an_address_throttled_by_guesses() -> None:
    echo = EchoUpstream()
    async with (
        serve_gateway(transport=InProcessTransport(echo), api_keys=f"{CLIENT_KEY},{OTHER_CLIENT_KEY}") as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=5) as client,
    ):
        good, other = {"authorization": f"Bearer {CLIENT_KEY}"}, {"authorization": f"Bearer {OTHER_CLIENT_KEY}"}
        bad = {"authorization": f"Bearer {WRONG_KEY}"}
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=good)).status_code == 200
        guesses = [(await client.post("/v1/chat/completions", json=CHAT, headers=bad)).status_code for _ in range(11)]
        after = [(await client.post("/v1/chat/completions", json=CHAT, headers=good)).status_code for _ in range(3)]
        guess = await client.post("/v1/chat/completions", json=CHAT, headers=bad)
        new_key = await client.post("/v1/chat/completions", json=CHAT, headers=other)  # first use, from here
    assert guesses == [401] * 10 + [429]
    assert after == [200] * 3  # the stale CI job behind the same NAT locks nobody else out …
    # … and a key new to this address is answered exactly as a guess, so the answers tell guesses nothing.
    assert (new_key.status_code, new_key.json()) == (guess.status_code, guess.json()) == (429, guess.json())
    assert guess.json()["error"]["code"] == "too_many_invalid_keys"
    assert echo.requests == 4


def test_x_forwarded_for_is_trusted_only_from_the_proxies_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    plain = server_config(gateway_settings())
    assert plain.proxy_headers is False  # uvicorn's default would trust X-Forwarded-For from loopback
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1, 192.168.0.0/16")
    behind_proxy = server_config(gateway_settings())
    assert behind_proxy.proxy_headers is True
    assert behind_proxy.forwarded_allow_ips == ["10.0.0.1", "192.168.0.0/16"]


def access_records(log_path: Path, path: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    return [line for line in lines if line.get("logger") == "proxy.access" and line.get("path") == path]


def wait_for_records(log_path: Path, path: str, count: int, within: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while len(records := access_records(log_path, path)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return records


@pytest.mark.parametrize(
    ("allowed", "throttled", "client"), [("", True, "127.0.0.1"), ("127.0.0.1", False, "198.51.100.10")]
)
def test_spoofed_x_forwarded_for_neither_escapes_the_throttle_nor_fakes_the_logged_client(
    tmp_path: Path, allowed: str, throttled: bool, client: str
) -> None:
    log_path = tmp_path / "gateway.log"
    env = {"FORWARDED_ALLOW_IPS": allowed, "PROXY_LOG_LEVEL": "info"}
    with servers.gateway("http://127.0.0.1:9", CLIENT_KEY, env, log_path) as url:
        statuses = [
            httpx.get(
                f"{url}/v1/models",
                headers={"authorization": f"Bearer {WRONG_KEY}", "x-forwarded-for": f"198.51.100.{10 + i}"},
            ).status_code
            for i in range(11)
        ]
        records = wait_for_records(log_path, "/v1/models", 11)
    assert statuses == [401] * 10 + ([429] if throttled else [401])
    assert records[0]["client"] == client  # the address guessing can be traced to
