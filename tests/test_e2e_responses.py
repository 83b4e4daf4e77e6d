"""End to end, the Responses API (`POST /v1/responses`): the real gateway process in front of the
simulator process, driven by the real Python clients a user would point at it — the official
`openai` client, the OpenAI Agents SDK and LangChain's `ChatOpenAI(use_responses_api=True)`."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests import servers

CLIENT_KEY = "sk-e2e-responses-key"
OTHER_KEY = "sk-e2e-responses-other-key"
MODEL = "claude-haiku-4-5"
# Structured outputs and adaptive reasoning: a model whose capabilities have both.
REASONING_MODEL = "claude-sonnet-4-6"
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "description": "Current weather", "parameters": CITY, "strict": True},
    {"type": "function", "name": "get_time", "description": "Current time", "parameters": CITY, "strict": True},
]
BOTH_TOOLS = "Use get_weather and get_time for Paris."
TERMINAL = ("response.completed", "response.incomplete", "response.failed")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    # Two attempts and no real backoff: an upstream that stays overloaded gives up at once.
    upstream_settings = {"PROXY_UPSTREAM": json.dumps({"max_attempts": 2, "max_backoff": 0.01})}
    with (
        servers.simulator() as upstream,
        servers.gateway(upstream, f"{CLIENT_KEY},{OTHER_KEY}", upstream_settings) as url,
    ):
        yield url


@pytest.fixture
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway_url}/v1", max_retries=0) as client:
        yield client


def function_calls(response: Any) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


def replay(response: Any) -> list[Any]:
    """A response's output items as the next request's input items, as a client sends them back."""
    return [item.model_dump(exclude_none=True) for item in response.output]


def results_for(calls: list[Any]) -> list[dict[str, Any]]:
    return [{"type": "function_call_output", "call_id": c.call_id, "output": f"result-{c.name}"} for c in calls]


# --- the official openai client: plain requests ----------------------------------------------


def test_plain_create_is_a_completed_response_with_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.error is None
    assert response.model.startswith(MODEL)
    assert [item.type for item in response.output] == ["message"]
    assert "Say hello" in response.output_text
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_instructions_become_the_system_prompt(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, instructions="Answer like a pirate.", input="Hi")
    assert "Answer like a pirate." in response.output_text
    assert response.instructions == "Answer like a pirate."


def test_developer_message_and_image_data_url(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "low"},
                ],
            },
        ],
    )
    assert response.status == "completed"
    assert "What is in this image?" in response.output_text and "Be brief." in response.output_text


def test_two_function_calls_and_their_results_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input=BOTH_TOOLS, tools=TOOLS)
    calls = function_calls(first)
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert all(json.loads(c.arguments) == {"city": "example"} and c.call_id for c in calls)
    assert len({c.call_id for c in calls}) == 2

    history = [{"role": "user", "content": BOTH_TOOLS}, *replay(first), *results_for(calls)]
    second = client.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert second.status == "completed" and not function_calls(second)
    assert "result-get_weather" in second.output_text and "result-get_time" in second.output_text


def test_json_schema_text_format_gives_matching_json(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=REASONING_MODEL,
        input="Biggest city in France?",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert set(json.loads(response.output_text)) == {"city", "population"}


class CityFacts(BaseModel):
    city: str
    population: int


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(model=REASONING_MODEL, input="Biggest city in France?", text_format=CityFacts)
    assert isinstance(parsed.output_parsed, CityFacts)


@pytest.mark.parametrize("effort", ["low", "high"])
def test_reasoning_effort_gives_a_reasoning_item_then_the_answer(client: openai.OpenAI, effort: str) -> None:
    response = client.responses.create(
        model=REASONING_MODEL,
        input="Think, then answer: 2+2?",
        reasoning={"effort": effort, "summary": "auto"},  # type: ignore[typeddict-item]
        max_output_tokens=3000,
    )
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens >= 0


# --- streaming ---------------------------------------------------------------------------------


def test_stream_events_are_in_order_and_join_to_the_final_text(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="Tell me about streams", stream=True))
    names = [event.type for event in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert [name for name in names if name in TERMINAL] == ["response.completed"] and names[-1] == "response.completed"
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))
    assert names.index("response.output_item.added") < names.index("response.content_part.added")
    assert names.index("response.content_part.added") < names.index("response.output_text.delta")
    final: Any = events[-1]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == final.response.output_text
    assert deltas == client.responses.create(model=MODEL, input="Tell me about streams").output_text


def test_streamed_function_call_arguments_join_to_the_final_call(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input=BOTH_TOOLS, tools=TOOLS, stream=True))
    final: Any = events[-1]
    assert final.type == "response.completed"
    calls = function_calls(final.response)
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    for call in calls:
        joined = "".join(
            e.delta for e in events if e.type == "response.function_call_arguments.delta" and e.item_id == call.id
        )
        assert joined == call.arguments


def test_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Tell me about helpers") as stream:
        deltas = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == deltas and "Tell me about helpers" in deltas


def test_mid_stream_upstream_error_is_response_failed(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="SIMULATE_STREAM_ERROR", stream=True))
    names = [event.type for event in events]
    assert [name for name in names if name in TERMINAL] == ["response.failed"] and names[-1] == "response.failed"
    final: Any = events[-1]
    assert final.response.status == "failed" and final.response.error is not None


# --- stored responses ---------------------------------------------------------------------------


def test_previous_response_id_continues_the_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, instructions="Be brief.", input="My name is Ada.")
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    fresh = client.responses.create(model=MODEL, input="What is my name?")
    assert second.previous_response_id == first.id
    # The stored input and output came before the new turn; the instructions did not carry over.
    assert second.usage and fresh.usage and second.usage.input_tokens > fresh.usage.input_tokens
    assert "Be brief." not in second.output_text


def test_get_then_delete_a_stored_response(client: openai.OpenAI, gateway_url: str) -> None:
    created = client.responses.create(model=MODEL, input="Keep this one")
    got = client.responses.retrieve(created.id)
    assert (got.id, got.output_text, got.status) == (created.id, created.output_text, "completed")
    items = client.responses.input_items.list(created.id)
    assert [item.type for item in items.data] == ["message"]

    with openai.OpenAI(api_key=OTHER_KEY, base_url=f"{gateway_url}/v1", max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(created.id)

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="Go on", previous_response_id=created.id)


def test_store_false_with_the_reasoning_round_trip(client: openai.OpenAI) -> None:
    # Codex's way: nothing stored, the signed thinking carried in encrypted_content and replayed.
    options: dict[str, Any] = {
        "model": REASONING_MODEL,
        "tools": TOOLS[:1],
        "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
        "max_output_tokens": 3000,
    }
    question = {"role": "user", "content": "Use get_weather for Paris."}
    first = client.responses.create(input=[question], **options)
    assert first.output[0].type == "reasoning" and function_calls(first)
    reasoning: Any = first.output[0]
    assert reasoning.encrypted_content
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)

    # The simulator refuses a thinking tool loop without its thinking block: this succeeds only
    # if the gateway turned the reasoning item back into that block.
    history = [question, *replay(first), *results_for(function_calls(first))]
    second = client.responses.create(input=history, **options)
    assert second.status == "completed" and "result-get_weather" in second.output_text

    tampered = replay(first)
    value = tampered[0]["encrypted_content"]
    tampered[0]["encrypted_content"] = value[:-6] + ("AAAAAA" if value[-6:] != "AAAAAA" else "BBBBBB")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(input=[question, *tampered, *results_for(function_calls(first))], **options)


# --- errors --------------------------------------------------------------------------------------


def test_bad_image_data_is_400_naming_the_path(client: openai.OpenAI) -> None:
    bad = [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,%%%"}]}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input=bad)  # type: ignore[arg-type]
    body: Any = raised.value.body
    assert body["param"] == "input[0].content[0].image_url"


def test_input_of_the_wrong_type_is_400_not_500(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input=123)  # type: ignore[arg-type]
    body: Any = raised.value.body
    assert body["param"] == "input"


def test_overloaded_upstream_until_retries_end_is_an_openai_shaped_503(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as raised:
            client.responses.create(model=MODEL, input="SIMULATE_ERROR 529 overloaded_error", stream=stream)
        assert raised.value.status_code == 503
        body: Any = raised.value.body
        assert isinstance(body["message"], str) and body["type"]


def test_bad_key_is_401(gateway_url: str) -> None:
    with (
        openai.OpenAI(api_key="not-the-key", base_url=f"{gateway_url}/v1", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.responses.create(model=MODEL, input="Hi")


# --- the OpenAI Agents SDK -------------------------------------------------------------------------


def test_agents_sdk_runs_a_function_tool_loop_to_a_final_answer(gateway_url: str) -> None:
    from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool

    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        seen.append(city)
        return f"Sunny in {city}"

    async def run() -> Any:
        async with openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=f"{gateway_url}/v1", max_retries=0) as http:
            agent = Agent(name="weather", instructions="Use your tools.", model=MODEL, tools=[get_weather])
            config = RunConfig(
                model_provider=OpenAIProvider(openai_client=http, use_responses=True), tracing_disabled=True
            )
            return await Runner.run(agent, "What is the weather in Paris?", run_config=config, max_turns=4)

    result = asyncio.run(run())
    assert seen == ["example"]
    # The simulator says what it will call before calling it, as Claude often does.
    assert [item.type for item in result.new_items] == [
        "message_output_item",
        "tool_call_item",
        "tool_call_output_item",
        "message_output_item",
    ]
    assert "Sunny in example" in str(result.final_output)


# --- LangChain ----------------------------------------------------------------------------------


@pytest.fixture
def chat_model(gateway_url: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=MODEL, api_key=CLIENT_KEY, base_url=f"{gateway_url}/v1", use_responses_api=True, max_retries=0
    )


def test_langchain_invoke_and_stream_give_the_same_text(chat_model: Any) -> None:
    message = chat_model.invoke("Say hello to LangChain")
    assert "Say hello to LangChain" in message.text
    chunks = list(chat_model.stream("Say hello to LangChain"))
    assert len(chunks) > 1
    joined = chunks[0]
    for chunk in chunks[1:]:
        joined = joined + chunk
    assert joined.text == message.text


def test_langchain_bind_tools_calls_the_tool_and_reads_its_result(chat_model: Any) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"Sunny in {city}"

    with_tools = chat_model.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris? Use get_weather.")
    call_message = with_tools.invoke([question])
    assert [(c["name"], c["args"]) for c in call_message.tool_calls] == [("get_weather", {"city": "example"})]
    call = call_message.tool_calls[0]
    answer = with_tools.invoke([question, call_message, ToolMessage("Sunny in example", tool_call_id=call["id"])])
    assert not answer.tool_calls and "Sunny in example" in answer.text
