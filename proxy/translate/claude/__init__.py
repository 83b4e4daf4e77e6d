"""Claude-side rules any OpenAI dialect uses.

- `blocks`: Messages API content blocks from values a dialect extracted (text, images, PDF
  documents, thinking, tool use and results, cache breakpoints on a part).
- `turns`: `Conversation`, which merges blocks into alternating turns and checks the last one.
- `tools`: function tools, tool choice, parallel tool use and the web search server tool.
- `reasoning`: a reasoning effort → thinking and effort, under the model's capabilities.
- `outputs`: structured outputs (JSON schema, JSON mode).
- `caching`: prompt cache breakpoints and their lifetime.
- `sampling`: max_tokens, stop sequences, temperature/top_p, service tier, metadata.user_id.

All pure: dicts in, dicts out, errors as `proxy.errors.InvalidRequest` naming the client's path.
"""
