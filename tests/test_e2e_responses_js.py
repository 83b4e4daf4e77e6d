"""End to end, the Responses API from JavaScript: the official `openai` npm client and the Vercel AI
SDK (`ai` + `@ai-sdk/openai`, whose `openai(model)` speaks the Responses API), run by node against the
real gateway process in front of the simulator process (tests/js/responses_check.mjs)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import npm, servers

CLIENT_KEY = "sk-e2e-responses-js-key"
MODEL = "claude-haiku-4-5"
JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "responses_check.mjs"
TERMINAL = ("response.completed", "response.incomplete", "response.failed")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    for package in ("openai", "ai", "@ai-sdk/openai"):
        npm.installed(JS_DIR, package)
    with servers.simulator() as upstream, servers.gateway(upstream, CLIENT_KEY) as url:
        yield url


def run_client(gateway_url: str, mode: str, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(SCRIPT), mode, f"{gateway_url}/v1", CLIENT_KEY, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{mode} failed: {done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_npm_client_responses_create(gateway_url: str) -> None:
    result = run_client(gateway_url, "openai-create", {"model": MODEL, "input": "Hello from node"})
    response = result["response"]
    assert response["object"] == "response" and response["status"] == "completed"
    assert "Hello from node" in result["outputText"]


def test_npm_client_streamed_events_join_to_the_created_text(gateway_url: str) -> None:
    request = {"model": MODEL, "input": "Stream from node"}
    streamed = run_client(gateway_url, "openai-stream", request)
    names = [event["type"] for event in streamed["events"]]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert [name for name in names if name in TERMINAL] == ["response.completed"] and names[-1] in TERMINAL
    numbers = [event["sequence_number"] for event in streamed["events"]]
    assert numbers == sorted(set(numbers))
    created = run_client(gateway_url, "openai-create", request)
    assert streamed["text"] == created["outputText"] and "Stream from node" in streamed["text"]
    assert streamed["final"]["status"] == "completed"


def test_ai_sdk_generate_text(gateway_url: str) -> None:
    result = run_client(gateway_url, "ai-generate", {"model": MODEL, "input": "Hello from the AI SDK"})
    assert "Hello from the AI SDK" in result["text"]
    assert result["finishReason"] == "stop"
    assert result["usage"]["inputTokens"] > 0 and result["usage"]["outputTokens"] > 0


def test_ai_sdk_stream_text_joins_to_the_generated_text(gateway_url: str) -> None:
    request = {"model": MODEL, "input": "Stream from the AI SDK"}
    streamed = run_client(gateway_url, "ai-stream", request)
    assert len(streamed["pieces"]) > 1 and "".join(streamed["pieces"]) == streamed["text"]
    assert streamed["finishReason"] == "stop"
    assert streamed["text"] == run_client(gateway_url, "ai-generate", request)["text"]


def test_ai_sdk_tool_loop_runs_the_tool_and_answers(gateway_url: str) -> None:
    result = run_client(gateway_url, "ai-tools", {"model": MODEL, "input": "What is the weather in Paris?"})
    assert result["calls"] == ["example"] and result["steps"] == 2
    assert result["finishReason"] == "stop" and "Sunny in example" in result["text"]
