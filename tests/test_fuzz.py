"""Input fuzzing: generated chat-completion requests, valid and not, sent to the real gateway.

The gateway runs on a real uvicorn server in a background thread (hypothesis drives examples
synchronously), in front of `EchoUpstream`, which answers every request with its last user text
and checks each one: the body against the anthropic SDK's request types, the headers for the
gateway's own key and no client credential. Invariants, for every example:

* never a 5xx, never a hang (every request has a 10 s timeout);
* every error is OpenAI-shaped, with a 400/413 status and a `param` that names a place in the
  request the client actually sent;
* every body that reaches the upstream is a valid Messages API request, carrying no client key;
* text round-trips byte for byte through the echo, streamed or not.

`FUZZ_EXAMPLES` scales the number of examples per test (default 150).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.control import event as hypothesis_event
from pydantic import TypeAdapter

from tests.faults import (
    CLIENT_KEY,
    EchoUpstream,
    ThreadedGateway,
    assert_openai_error_body,
    stream_payloads,
    streamed_text,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def echo() -> EchoUpstream:
    return EchoUpstream()


@pytest.fixture(scope="module")
def client(echo: EchoUpstream) -> Iterator[httpx.Client]:
    with ThreadedGateway(echo) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http
    # Whatever happened, the upstream saw no invalid body and no client credential in the whole run.
    assert echo.problems == []


# --- strategies -----------------------------------------------------------------------------------

TEXT = st.text(max_size=40)
WORDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(lambda t: not t.isspace())
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)

IMAGE_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0",
    "image/gif": b"GIF89a",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "application/pdf": b"%PDF-1.7\n",
}
MEDIA_TYPES = st.sampled_from(
    [*IMAGE_MAGIC, "IMAGE/PNG", "image/svg+xml", "text/plain", "application/octet-stream", "", " image/png "]
)


@st.composite
def payloads(draw: st.DrawFn) -> str:
    """base64 payloads: valid ones of real magic numbers or noise, and broken ones."""
    raw = draw(st.sampled_from([*IMAGE_MAGIC.values(), b""])) + draw(st.binary(max_size=24))
    good = base64.b64encode(raw).decode()
    return draw(
        st.sampled_from(
            [
                good,
                good.rstrip("="),
                good + "=",
                good[:-1] + "!" if good else "!",
                good[: len(good) // 2] + "\n" + good[len(good) // 2 :],
                " " + good,
                "",
                "%%%%",
            ]
        )
    )


@st.composite
def data_urls(draw: st.DrawFn) -> str:
    media, payload = draw(MEDIA_TYPES), draw(payloads())
    shape = draw(st.sampled_from(["data:{m};base64,{p}", "data:{m},{p}", "data:{m};base64{p}", "data:;base64,{p}"]))
    return shape.format(m=media, p=payload)


IMAGE_URLS = data_urls() | st.sampled_from(["https://example.com/cat.png", "http://x", "ftp://x/y.png", "", "data:"])

TEXT_PART = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
IMAGE_PART = st.fixed_dictionaries(
    {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": IMAGE_URLS})},
    optional={"detail": st.sampled_from(["auto", "low", "high"])},
)
FILE_PART = st.fixed_dictionaries(
    {"type": st.just("file"), "file": st.fixed_dictionaries({}, optional={"file_data": data_urls(), "file_id": TEXT})}
)
USER_PART = TEXT_PART | IMAGE_PART | FILE_PART | st.fixed_dictionaries({"type": st.sampled_from(["input_audio", "x"])})

ARGUMENTS = st.one_of(
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3).map(json.dumps),
    st.sampled_from(["", "  ", "{", '{"a": 1', "[1, 2]", "null", "42", '"text"', "{}", '{"a": NaN}']),
    st.integers(1, 2000).map(lambda depth: '{"a": ' * depth + "1" + "}" * depth),
    TEXT,
)
CALL_IDS = st.sampled_from(["call_1", "call_2", "toolu_01", ""]) | TEXT
TOOL_CALL = st.fixed_dictionaries(
    {
        "id": CALL_IDS,
        "type": st.sampled_from(["function", "function", "custom"]),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["get_weather", "lookup", ""]), "arguments": ARGUMENTS}
        ),
    }
)
SYSTEM = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer"]), "content": TEXT | st.lists(TEXT_PART, max_size=2)}
)
USER = st.fixed_dictionaries({"role": st.just("user"), "content": WORDS | TEXT | st.lists(USER_PART, max_size=3)})
ASSISTANT = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "content": st.none() | TEXT | st.lists(TEXT_PART, max_size=2),
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
        "refusal": TEXT,
    },
)
TOOL = st.fixed_dictionaries(
    {"role": st.just("tool"), "tool_call_id": CALL_IDS, "content": TEXT | st.lists(TEXT_PART, max_size=2)}
)
ODD_ROLE = st.fixed_dictionaries({"role": st.sampled_from(["robot", "", "USER", "function", None]), "content": TEXT})
MESSAGE = st.one_of(USER, USER, ASSISTANT, SYSTEM, TOOL, ODD_ROLE)

SCHEMAS = st.sampled_from(
    [
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        {"properties": {"n": {"type": "integer"}}},
        {},
        {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "object"}}}},
    ]
)
TOOL_DEF = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["get_weather", "lookup"])},
            optional={"description": TEXT, "parameters": SCHEMAS, "strict": st.booleans()},
        ),
    }
)
MODELS = st.sampled_from(["claude-haiku-4-5", "claude-haiku-4-5", "claude-opus-4-6", "claude-future-9", ""])

OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(-5, 70000),
    "max_completion_tokens": st.integers(1, 70000),
    "temperature": st.floats(-1, 3, allow_nan=False),
    "top_p": st.floats(0, 1),
    "stop": TEXT | st.lists(TEXT, max_size=3),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "tools": st.lists(TOOL_DEF, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required", "any"])
    | st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": TEXT})}),
    "parallel_tool_calls": st.booleans(),
    "user": TEXT,
    "n": st.integers(0, 3),
    "response_format": st.sampled_from(
        [{"type": "text"}, {"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x"}}]
    ),
    "seed": st.integers(),
    "metadata": JSON_VALUES,
    "logit_bias": st.dictionaries(TEXT, st.integers(-100, 100), max_size=2),
    "x_unknown_field": JSON_VALUES,
}

BASE_REQUEST = st.fixed_dictionaries(
    {"model": MODELS, "messages": st.lists(MESSAGE, max_size=6)},
    optional=OPTIONAL_FIELDS,
)


# Requests that are valid by construction: the gateway must accept every one (200), and what it
# sends upstream must validate against the SDK's types.
VALID_IMAGE_URLS = st.one_of(
    st.tuples(st.sampled_from(sorted(set(IMAGE_MAGIC) - {"application/pdf"})), st.binary(max_size=16)).map(
        lambda t: f"data:{t[0]};base64," + base64.b64encode(IMAGE_MAGIC[t[0]] + t[1]).decode()
    ),
    st.sampled_from(["https://example.com/cat.png", "http://example.com/a.jpg?x=1"]),
)
VALID_USER_PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": WORDS}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": VALID_IMAGE_URLS})},
        optional={"detail": st.sampled_from(["auto", "low", "high"])},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("file"),
            "file": st.fixed_dictionaries(
                {
                    "file_data": st.binary(max_size=16).map(
                        lambda b: "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.7" + b).decode()
                    )
                },
                optional={"filename": st.text(max_size=20)},
            ),
        }
    ),
)
VALID_USER = st.fixed_dictionaries(
    {"role": st.just("user"), "content": WORDS | st.lists(VALID_USER_PART, min_size=1, max_size=3)}
)
VALID_SYSTEM = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer"]),
        "content": WORDS
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": WORDS}), min_size=1, max_size=2),
    }
)
VALID_ARGUMENTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3).map(json.dumps) | st.just("")


@st.composite
def tool_exchanges(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An assistant turn that calls tools, then one tool message per call, then a user turn or not."""
    ids = draw(st.lists(st.text("abcdefghij0123456789_", min_size=1, max_size=12), min_size=1, max_size=3, unique=True))
    calls = [
        {
            "id": f"call_{call_id}",
            "type": "function",
            "function": {"name": draw(st.sampled_from(["get_weather", "lookup"])), "arguments": draw(VALID_ARGUMENTS)},
        }
        for call_id in ids
    ]
    assistant: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
    if draw(st.booleans()):
        assistant["content"] = draw(WORDS)
    results = [{"role": "tool", "tool_call_id": call["id"], "content": draw(WORDS | st.just(""))} for call in calls]
    return [assistant, *results]


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = draw(st.lists(VALID_SYSTEM, max_size=2))
    for _ in range(draw(st.integers(1, 4))):
        messages.append(draw(VALID_USER))
        if draw(st.booleans()):
            messages.extend(draw(tool_exchanges()))
        else:
            messages.append({"role": "assistant", "content": draw(WORDS)})
    if messages[-1]["role"] != "tool" or draw(st.booleans()):
        messages.append(draw(VALID_USER))
    if draw(st.integers(0, 4)) == 0:
        messages.append({"role": "assistant", "content": draw(WORDS)})  # a prefill, which these models take
    request: dict[str, Any] = {
        "model": draw(st.sampled_from(["claude-haiku-4-5", "claude-haiku-4-5"])),
        "messages": messages,
    }
    optional = {
        "max_tokens": st.integers(1, 64000),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stop": WORDS | st.lists(WORDS, max_size=3),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "tools": st.lists(TOOL_DEF, min_size=1, max_size=2, unique_by=lambda t: t["function"]["name"]),
        "user": TEXT,
        "seed": st.integers(-(2**63), 2**63 - 1),
        "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
        "x_unknown_field": JSON_VALUES,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=5)):
        request[name] = draw(optional[name])
    if "tools" in request and draw(st.booleans()):
        request["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required"])
            | st.sampled_from(request["tools"]).map(
                lambda t: {"type": "function", "function": {"name": t["function"]["name"]}}
            )
        )
        request["parallel_tool_calls"] = draw(st.booleans())
    return request


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible request, then sometimes broken: a value of the wrong type, a field removed."""
    request = copy.deepcopy(draw(BASE_REQUEST))  # drawn values may be shared constants: never mutate them
    for _ in range(draw(st.integers(0, 2))):
        paths = [p for p in _paths(request) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = request
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return request


# --- invariants -----------------------------------------------------------------------------------

_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def param_names_a_sent_place(request: Any, param: str) -> bool:
    """`param` (``messages[2].content[0].image_url.url``) walks into the request as sent: every step
    but the last must exist; the last may be missing (a missing required field)."""
    steps: list[str | int] = []
    position = 0
    while position < len(param):
        match = _STEP.match(param, position)
        if match is None:
            return False
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    node = request
    for step in steps[:-1]:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return False
        elif not isinstance(node, dict) or step not in node:
            return False
        node = node[step]
    last = steps[-1] if steps else None
    if isinstance(last, int):
        return isinstance(node, list) and last < len(node)
    return isinstance(node, dict)


def event(name: str) -> None:
    if currently_in_test_context():
        hypothesis_event(name)


def check(response: httpx.Response, request: Any, echo: EchoUpstream) -> None:
    assert echo.problems == [], echo.problems
    status = response.status_code
    event(f"HTTP {status}")  # see --hypothesis-show-statistics
    assert status in (200, 400, 413), (status, response.text[:2000])
    if status != 200:
        assert response.headers["content-type"].startswith("application/json")
        error = assert_openai_error_body(response.json())
        event(f"HTTP {status} {error['code']}")
        if error["param"] is not None:
            assert param_names_a_sent_place(request, error["param"]), (error, request)
        return
    if isinstance(request, dict) and request.get("stream") is True:
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = stream_payloads(response.content)
        assert response.content.endswith(b"data: [DONE]\n\n"), response.content[-500:]
        assert not any("error" in p for p in payloads)
    else:
        completion = response.json()
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["finish_reason"] == "stop"


def post(client: httpx.Client, body: bytes, *, x_api_key: bool = False) -> httpx.Response:
    auth = {"x-api-key": CLIENT_KEY} if x_api_key else {"authorization": f"Bearer {CLIENT_KEY}"}
    return client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json", **auth})


# --- the fuzz tests -------------------------------------------------------------------------------


@FUZZ
@given(request=requests(), x_api_key=st.booleans(), ascii_only=st.booleans())
def test_generated_requests_get_an_answer_or_an_openai_error_never_a_500(
    client: httpx.Client, echo: EchoUpstream, request: dict[str, Any], x_api_key: bool, ascii_only: bool
) -> None:
    body = json.dumps(request, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    check(post(client, body, x_api_key=x_api_key), request, echo)


@FUZZ
@given(request=valid_requests(), x_api_key=st.booleans())
def test_valid_requests_are_accepted_and_reach_the_upstream_as_valid_messages_requests(
    client: httpx.Client, echo: EchoUpstream, request: dict[str, Any], x_api_key: bool
) -> None:
    before = echo.requests
    response = post(client, json.dumps(request).encode(), x_api_key=x_api_key)
    check(response, request, echo)
    assert response.status_code == 200, response.text
    assert echo.requests == before + 1


def _breakages(valid: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level damage to a valid body: invalid UTF-8, truncation, random bytes."""
    bad_utf8 = st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"])
    at = st.integers(0, len(valid))
    return st.one_of(
        st.tuples(at, bad_utf8).map(lambda t: valid[: t[0]] + t[1] + valid[t[0] :]),
        at.map(lambda n: valid[:n]),
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b'"x"',
                b"{}",
                b"1e999",
                b'{"model": Infinity}',
                b"\xef\xbb\xbf" + valid,
                valid + b"garbage",
            ]
        ),
    )


VALID_BODY = json.dumps(
    {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "héllo wörld ✓"}]}, ensure_ascii=False
).encode()


@FUZZ
@given(body=_breakages(VALID_BODY))
def test_broken_bytes_are_a_400_never_a_500(client: httpx.Client, echo: EchoUpstream, body: bytes) -> None:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    response = post(client, body)
    check(response, parsed, echo)
    if parsed is None:
        assert response.status_code == 400


ROUND_TRIP_EXAMPLES = [
    "plain ascii",
    "émoji 👩‍👩‍👧‍👦 🏳️‍🌈 flags 🇫🇷 and skin tones 👍🏽",
    "RTL: مرحبا بالعالم שלום עולם \u202e reversed \u202c",
    "control \x00 \x01 \x07 \x1b[31m red \x7f \u0085 \u2028 \u2029",
    "combining e\u0301 a\u0308 Z\u0351\u0352\u0353",
    "CJK 漢字かなカナ 한국어",
    "line\r\nendings\rand\ttabs\n",
    "  leading and trailing spaces  ",
    "quotes \" ' ` and backslashes \\ \\n \\u0000",
    "data: [DONE]\n\nevent: error\ndata: {}\n\n",
    "\ufeffBOM first",
    "max plane \U0010fffd and noncharacter \uffff",
]


def round_trip(client: httpx.Client, echo: EchoUpstream, text: str, *, stream: bool, include_usage: bool) -> None:
    if stream:
        request = {
            "model": "claude-haiku-4-5",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
            "stream": True,
            "stream_options": {"include_usage": include_usage},
        }
    else:
        request = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": text}]}
    response = post(client, json.dumps(request, ensure_ascii=False).encode())
    check(response, request, echo)
    if not stream:
        assert response.json()["choices"][0]["message"]["content"] == text
        return
    assert streamed_text(response.content) == text
    usage = [p["usage"] for p in stream_payloads(response.content) if p.get("usage")]
    assert [(u["prompt_tokens"], u["completion_tokens"]) for u in usage] == ([(11, 5)] if include_usage else [])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("text", ROUND_TRIP_EXAMPLES)
def test_awkward_text_round_trips_byte_for_byte(
    client: httpx.Client, echo: EchoUpstream, text: str, stream: bool
) -> None:
    round_trip(client, echo, text, stream=stream, include_usage=True)


@FUZZ
@given(text=WORDS, stream=st.booleans(), include_usage=st.booleans())
@example(text="x" * 100_000, stream=False, include_usage=False)
@example(text="x" * 100_000, stream=True, include_usage=False)
def test_generated_text_round_trips_byte_for_byte(
    client: httpx.Client, echo: EchoUpstream, text: str, stream: bool, include_usage: bool
) -> None:
    round_trip(client, echo, text, stream=stream, include_usage=include_usage)


# --- shapes hypothesis would rarely reach ---------------------------------------------------------

HEAD = b'{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]'
CALL = b'{"id":"call_1","type":"function","function":{"name":"f","arguments":%s}}'
DEEP_BODIES = {
    # an ignored field
    "metadata": lambda d: HEAD + b',"metadata":{"deep":' + b"[" * d + b"]" * d + b"}}",
    # a tool schema, forwarded upstream as it is
    "tool_parameters": lambda d: (
        HEAD
        + b',"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":'
        + b'{"type":"array","default":'
        + b"[" * d
        + b"]" * d
        + b"}}}}}]}"
    ),
    # tool call arguments: a JSON string holding deep JSON
    "tool_arguments": lambda d: (
        HEAD[:-1]
        + b',{"role":"assistant","tool_calls":['
        + CALL % json.dumps('{"a":' + "[" * d + "]" * d + "}").encode()
        + b']},{"role":"tool","tool_call_id":"call_1","content":"ok"}]}'
    ),
    # a response schema, which the gateway rewrites recursively
    "json_schema": lambda d: (
        HEAD
        + b',"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object",'
        + b'"properties":{"a":'
        + b'{"type":"array","items":' * d
        + b'{"type":"string"}'
        + b"}" * d
        + b"}}}}}"
    ),
}


@pytest.mark.parametrize(
    ("where", "depth"),
    [
        *((where, depth) for where in ("metadata", "tool_parameters", "tool_arguments") for depth in (50, 300, 1010)),
        ("metadata", 100_000),
        ("json_schema", 50),
        ("json_schema", 300),
        ("json_schema", 1010),
    ],
)
def test_deeply_nested_json_is_answered_or_refused_never_a_500(
    client: httpx.Client, echo: EchoUpstream, where: str, depth: int
) -> None:
    body = DEEP_BODIES[where](depth)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None  # deeper than the gateway reads: it must say so with a 400
    response = post(client, body)
    check(response, parsed, echo)
    if parsed is None:
        assert response.status_code == 400
    if where == "json_schema" and depth > 64:  # deeper than the gateway walks a schema: refused, naming it
        assert response.json()["error"]["param"] == "response_format.json_schema.schema"
    if where == "json_schema" and depth > 64:  # deeper than the gateway walks a schema: refused, naming it
        assert response.json()["error"]["param"] == "response_format.json_schema.schema"


def test_thousands_of_messages_reach_the_upstream_in_one_valid_request(
    client: httpx.Client, echo: EchoUpstream
) -> None:
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(5001)]
    request = {"model": "claude-haiku-4-5", "messages": turns}
    before = echo.requests
    response = post(client, json.dumps(request).encode())
    check(response, request, echo)
    assert response.json()["choices"][0]["message"]["content"] == "turn 5000"
    assert echo.requests == before + 1


def test_empty_and_missing_messages_are_400_naming_messages(client: httpx.Client, echo: EchoUpstream) -> None:
    for request in (
        {"model": "claude-haiku-4-5", "messages": []},
        {"model": "claude-haiku-4-5"},
        {"model": "claude-haiku-4-5", "messages": [{"role": "system", "content": "only a system prompt"}]},
    ):
        response = post(client, json.dumps(request).encode())
        check(response, request, echo)
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_a_body_of_tens_of_megabytes_within_the_limit_round_trips(client: httpx.Client, echo: EchoUpstream) -> None:
    text = "0123456789abcdef" * (1024 * 1024)  # 16 MiB, under the default 32 MiB limit
    request = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": text}]}
    response = post(client, json.dumps(request).encode())
    check(response, request, echo)
    assert response.json()["choices"][0]["message"]["content"] == text


# --- the Responses route --------------------------------------------------------------------------

RESPONSES_FIXTURES = Path(__file__).parent / "fixtures" / "responses" / "request"
RESPONSES_BODIES = [
    json.loads(path.read_text(encoding="utf-8"))["openai"] for path in sorted(RESPONSES_FIXTURES.glob("*.json"))
]
RESPONSE = TypeAdapter(openai.types.responses.Response)


@st.composite
def responses_requests(draw: st.DrawFn) -> Any:
    """A Responses fixture body with one place in it replaced by arbitrary JSON (or left alone)."""
    body = copy.deepcopy(draw(st.sampled_from(RESPONSES_BODIES)))
    places: list[tuple[Any, Any]] = []

    def walk(node: Any, depth: int) -> None:
        if depth > 6:
            return
        keys: Iterable[Any] = (
            node.keys() if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
        )
        for key in keys:
            places.append((node, key))
            walk(node[key], depth + 1)

    walk(body, 0)
    if places and draw(st.booleans()):
        parent, key = draw(st.sampled_from(places))
        parent[key] = draw(JSON_VALUES)
    return body


@FUZZ
@given(request=responses_requests(), stream=st.booleans())
def test_generated_responses_requests_get_a_response_or_an_openai_error_never_a_500(
    client: httpx.Client, echo: EchoUpstream, request: Any, stream: bool
) -> None:
    if isinstance(request, dict):
        request["stream"] = stream
        request.pop("previous_response_id", None)  # an unknown id is a 404 before anything else: tested elsewhere
    headers = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}
    response = client.post("/v1/responses", content=json.dumps(request).encode(), headers=headers)
    assert echo.problems == [], echo.problems
    status = response.status_code
    event(f"HTTP {status}")
    assert status in (200, 400, 404, 413), (status, response.text[:2000])
    if status != 200:
        error = assert_openai_error_body(response.json())
        if status == 404:  # an unaliased OpenAI model name (a fixture's alias is not configured here)
            assert error["code"] == "model_not_found" and error["param"] == "model", error
            return
        if error["param"] is not None:
            assert param_names_a_sent_place(request, error["param"]), (error, request)
        return
    if stream:
        names = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
        assert names[:2] == ["response.created", "response.in_progress"], names[:5]
        terminal = [name for name in names if name in ("response.completed", "response.incomplete", "response.failed")]
        assert terminal == [names[-1]], names[-5:]
    else:
        RESPONSE.validate_python(response.json())
