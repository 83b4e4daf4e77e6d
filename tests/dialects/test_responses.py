"""The Responses dialect through the pipeline (proxy/dialects/responses.py), its upstream mocked:
stored responses scoped to their key, `previous_response_id` continuing the conversation with
Claude's signed thinking intact, the stored-response routes, and errors in OpenAI's shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx
from openai.types.responses import Response

from tests.anthropic_schema import assert_valid_messages_request
from tests.test_app import CLIENT_KEY, MESSAGE, app_client, settings

pytestmark = pytest.mark.anyio

OTHER_KEY = "sk-other-987654321"
MODEL = "claude-haiku-4-5"
SIGNATURE = "EqQBCkgIARABGAIiQL2mBk7tsOqM5fzHfAfzTaNhDNQmVsnAUZLVtPfs9xaHrQ=="
THINKING_CALL = {
    **MESSAGE,
    "content": [
        {"type": "thinking", "thinking": "I should look the weather up.", "signature": SIGNATURE},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
}
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url="https://upstream.test", assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client(mock: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings(api_keys=f"{CLIENT_KEY},{OTHER_KEY}"), mock) as c:
        yield c


def upstream_answers(mock: respx.MockRouter, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    """The upstream answers these messages in turn; the bodies it was sent are collected."""
    sent: list[dict[str, Any]] = []
    replies = iter(messages)

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(orjson.loads(request.content))
        return httpx.Response(200, json=next(replies))

    mock.post("/v1/messages").mock(side_effect=answer)
    return sent


def other(client: httpx.AsyncClient) -> dict[str, str]:
    return {"authorization": f"Bearer {OTHER_KEY}"}


async def test_a_stored_response_is_fetched_listed_and_deleted_by_its_own_key_only(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    upstream_answers(mock, MESSAGE)
    created = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi"})
    assert created.status_code == 200, created.text
    response = Response.model_validate(created.json())
    assert response.output_text == "Hello there."

    fetched = await client.get(f"/v1/responses/{response.id}")
    assert fetched.status_code == 200 and fetched.json() == created.json()
    items = await client.get(f"/v1/responses/{response.id}/input_items")
    assert items.status_code == 200
    listed = items.json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [item["content"][0]["text"] for item in listed["data"]] == ["Hi"]
    assert listed["first_id"] == listed["data"][0]["id"]

    for method in ("GET", "DELETE"):  # another key's id answers exactly as an unknown one
        foreign = await client.request(method, f"/v1/responses/{response.id}", headers=other(client))
        unknown = await client.request(method, "/v1/responses/resp_unknown")
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"]["message"].replace(response.id, "X") == unknown.json()["error"][
            "message"
        ].replace("resp_unknown", "X")

    deleted = await client.delete(f"/v1/responses/{response.id}")
    assert deleted.json() == {"id": response.id, "object": "response.deleted", "deleted": True}
    assert (await client.get(f"/v1/responses/{response.id}")).status_code == 404


async def test_store_false_keeps_nothing(client: httpx.AsyncClient, mock: respx.MockRouter) -> None:
    upstream_answers(mock, MESSAGE)
    created = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "store": False})
    assert created.status_code == 200
    assert (await client.get(f"/v1/responses/{created.json()['id']}")).status_code == 404


async def test_previous_response_id_replays_the_conversation_with_its_signed_thinking(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    sent = upstream_answers(mock, THINKING_CALL, MESSAGE)
    first = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "Weather in Paris?", "tools": TOOLS, "instructions": "Be brief."},
    )
    assert first.status_code == 200, first.text
    output = first.json()["output"]
    assert [item["type"] for item in output] == ["reasoning", "function_call"]
    assert "encrypted_content" not in output[0]  # the client did not ask for it
    call = output[1]

    second = await client.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "previous_response_id": first.json()["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"}],
            "tools": TOOLS,
        },
    )
    assert second.status_code == 200, second.text
    replayed = sent[1]
    assert_valid_messages_request(replayed)
    assert "system" not in replayed  # instructions are not inherited, as OpenAI defines it
    user, assistant, results = replayed["messages"]
    assert user["content"][0]["text"] == "Weather in Paris?"
    assert assistant["content"][0] == THINKING_CALL["content"][0]  # byte for byte, signature included
    assert assistant["content"][1]["id"] == "toolu_01A"
    assert results["content"][0]["tool_use_id"] == "toolu_01A"


async def test_an_unknown_or_foreign_previous_response_id_is_a_404_before_any_upstream_call(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    sent = upstream_answers(mock, MESSAGE)
    first = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi"})
    sent.clear()
    for headers, previous in ((other(client), first.json()["id"]), ({}, "resp_nope")):
        reply = await client.post(
            "/v1/responses", json={"model": MODEL, "input": "Again", "previous_response_id": previous}, headers=headers
        )
        assert reply.status_code == 404
        assert reply.json()["error"]["param"] == "previous_response_id"
    assert sent == []


async def test_a_streamed_response_is_stored_before_its_terminal_event_reaches_the_client(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    upstream_answers(mock, MESSAGE)  # not a stream: replaced below
    events = [
        ("message_start", {"message": {**MESSAGE, "content": [], "stop_reason": None}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello there."}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {}),
    ]
    body = b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"
        for name, data in events
    )
    mock.post("/v1/messages").mock(
        return_value=httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    async with client.stream("POST", "/v1/responses", json={"model": MODEL, "input": "Hi", "stream": True}) as s:
        async for line in s.aiter_lines():
            if line.startswith("data: ") and '"response.completed"' in line:
                response_id = orjson.loads(line.removeprefix("data: "))["response"]["id"]
                # Asked while the stream is still open: it is already there.
                fetched = await client.get(f"/v1/responses/{response_id}")
                assert fetched.status_code == 200
                assert Response.model_validate(fetched.json()).output_text == "Hello there."
                break
        else:
            pytest.fail("no response.completed event")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": 123}, "input"),
        ({"model": MODEL, "input": [{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]}, None),
        ({"model": MODEL, "input": "Hi", "background": True}, "background"),
        ({"model": MODEL, "input": "Hi", "previous_response_id": 5}, "previous_response_id"),
    ],
)
async def test_bad_input_is_a_400_in_openais_shape_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str | None
) -> None:
    reply = await client.post("/v1/responses", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    else:
        assert error["param"].startswith("input[0].content[0]")


async def test_an_overloaded_upstream_is_a_503_in_openais_shape(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    mock.post("/v1/messages").mock(return_value=httpx.Response(529, json=overloaded))
    reply = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi"})
    assert reply.status_code == 503
    assert reply.json()["error"]["type"] == "overloaded_error"


async def test_item_references_name_the_keys_stored_items_without_previous_response_id(
    client: httpx.AsyncClient, mock: respx.MockRouter
) -> None:
    """What the Vercel AI SDK sends on a tool loop's second step: references to the earlier output."""
    sent = upstream_answers(mock, THINKING_CALL, MESSAGE, MESSAGE)
    first = await client.post("/v1/responses", json={"model": MODEL, "input": "Weather in Paris?", "tools": TOOLS})
    reasoning, call = first.json()["output"]
    references = [{"type": "item_reference", "id": reasoning["id"]}, {"type": "item_reference", "id": call["id"]}]
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"}
    second = await client.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "input": [{"role": "user", "content": "Weather in Paris?"}, *references, result],
            "tools": TOOLS,
        },
    )
    assert second.status_code == 200, second.text
    assistant = sent[1]["messages"][1]
    assert assistant["content"][0] == THINKING_CALL["content"][0]  # the sealed thinking, from the store
    assert assistant["content"][1]["id"] == "toolu_01A"

    foreign = await client.post(
        "/v1/responses", json={"model": MODEL, "input": [references[1], result], "tools": TOOLS}, headers=other(client)
    )
    assert foreign.status_code == 400
    assert foreign.json()["error"]["param"] == "input[0].id"
    assert len(sent) == 2  # refused before any upstream call


async def test_a_rate_limited_upstream_is_a_429_with_retry_after_in_openais_shape(mock: respx.MockRouter) -> None:
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    mock.post("/v1/messages").mock(return_value=httpx.Response(429, json=limited, headers={"retry-after": "7"}))
    once = settings(upstream={"max_backoff": 0.001, "max_attempts": 1})
    for stream in (False, True):
        async with app_client(once, mock) as client:
            reply = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "stream": stream})
        assert reply.status_code == 429, reply.text
        assert reply.headers["retry-after"] == "7"
        assert reply.json()["error"]["type"] == "rate_limit_error"
