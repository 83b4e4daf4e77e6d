"""Translation between OpenAI dialects and the Messages API: pure (dicts in, dicts/bytes out, no I/O).

- `checks`: checking client JSON, shared by every dialect (`invalid_type`, `required`, `requested_model` …).
- `params`: the parameter-table engine (`Param`, `apply_params`, `OMIT`) and `ClaudeContext`.
- `claude/`: Claude-side rules any dialect uses: content blocks, turn merging, tools, reasoning,
  structured outputs, prompt caching, sampling. Dialects pass extracted values and the client's path.
- `chat/`: chat completions: `request` (PARAMS, `to_messages_request`), `messages` (roles → turns),
  `response` (Message → chat.completion), `stream` (stream events → chunks).
- `responses/`: the Responses API dialect, built on the same core.
- `errors`: upstream errors and error events → the gateway's errors, for every dialect.
"""
