"""End to end, the Codex CLI (`@openai/codex` from npm, its native binary inside the package):
`codex exec` with a model provider whose `base_url` is the gateway's `/v1` and `wire_api =
"responses"`, against the simulator, on a task that makes it run a shell command. The run must
finish (exit 0), and the gateway must have seen the tool round trip: the call in one answer, its
output in the next request.

The config turns off everything in Codex that reaches the internet: the update check, analytics,
feedback, OpenTelemetry, web search, MCP servers, apps, plugins and login (the key comes from
`env_key`); `--strict-config` makes a key this Codex version does not know an error, not a no-op.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import npm, servers
from tests.polling import eventually

CLIENT_KEY = "sk-e2e-codex-key"
MODEL = "claude-haiku-4-5"
JS_DIR = Path(__file__).parent / "js"
CODEX = JS_DIR / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
# The simulator's command for a shell-like tool (proxy/simulator/reply.py SHELL_COMMAND) prints this.
ECHOED = "claude-proxy simulator"
TASK = "Use exec_command to run a shell command in this directory, then tell me what it printed."

pytestmark = pytest.mark.e2e


def codex_config(base_url: str) -> str:
    return f"""\
model = "{MODEL}"
model_provider = "claude-proxy"
approval_policy = "never"
sandbox_mode = "read-only"
web_search = "disabled"
check_for_update_on_startup = false
project_doc_max_bytes = 0
cli_auth_credentials_store = "file"
mcp_servers = {{}}

[features]
plugins = false
apps = false
shell_snapshot = false

[apps._default]
enabled = false

[skills]
include_instructions = false

[skills.bundled]
enabled = false

[history]
persistence = "none"

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[model_providers.claude-proxy]
name = "claude-proxy"
base_url = "{base_url}/v1"
env_key = "CLAUDE_PROXY_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    npm.installed(JS_DIR, "@openai/codex")
    log_path = tmp_path_factory.mktemp("codex-gateway") / "gateway.log"
    # Payload logging: the test reads the requests Codex sent out of the gateway's access lines.
    env = {"PROXY_LOG_PAYLOADS": "true", "PROXY_LOG_FORMAT": "json"}
    with servers.simulator() as upstream, servers.gateway(upstream, CLIENT_KEY, env, log_path) as url:
        yield url, log_path


def run_codex(base_url: str, home: Path, work: Path, task: str) -> subprocess.CompletedProcess[str]:
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(codex_config(base_url))
    # Only what Codex needs: no OPENAI_API_KEY or proxy settings of this machine leak into the run.
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "CLAUDE_PROXY_API_KEY": CLIENT_KEY}
    command = ["node", str(CODEX), "exec", "--strict-config", "--ephemeral", "--skip-git-repo-check", "--json"]
    return subprocess.run(
        [*command, "--color", "never", "--cd", str(work), task],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,  # else it waits for more of the prompt on stdin
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def responses_requests(log_path: Path, count: int) -> list[dict[str, Any]]:
    """The access lines of the first ``count`` POST /v1/responses, once the log writer wrote them."""

    def written() -> list[dict[str, Any]]:
        # Whole lines only: the writer may be part-way through a long one (a payload line) as we read.
        complete = log_path.read_text().rpartition("\n")[0]
        lines = [json.loads(line) for line in complete.splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("path") == "/v1/responses" and line.get("method") == "POST"]
        return found if len(found) >= count else []

    return eventually(written, what=f"{count} access lines for POST /v1/responses")


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_codex_exec_runs_a_shell_command_through_the_gateway_and_finishes(
    gateway: tuple[str, Path], tmp_path: Path
) -> None:
    url, log_path = gateway
    done = run_codex(url, tmp_path / "codex-home", tmp_path / "work", TASK)
    assert done.returncode == 0, f"codex exec failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"

    items = [e["item"] for e in events_of(done.stdout) if e.get("type") == "item.completed"]
    commands = [item for item in items if item.get("type") == "command_execution"]
    assert len(commands) == 1 and "echo claude-proxy simulator" in commands[0]["command"], done.stdout
    messages = [item["text"] for item in items if item.get("type") == "agent_message"]
    assert messages and ECHOED in messages[-1], done.stdout

    first, second = responses_requests(log_path, 2)[:2]
    assert first["status"] == second["status"] == 200
    assert first["stream"] is True and first["request_body"]["store"] is False
    replayed = second["request_body"]["input"]
    calls = [item for item in replayed if item.get("type") == "function_call"]
    outputs = [item for item in replayed if item.get("type") == "function_call_output"]
    assert [call["name"] for call in calls] == ["exec_command"]
    assert json.loads(calls[0]["arguments"])["cmd"] == "echo claude-proxy simulator"
    assert [output["call_id"] for output in outputs] == [calls[0]["call_id"]]
    assert ECHOED in json.dumps(outputs[0]["output"])
