"""The OpenAI Responses API dialect's translators (issue 15): pure, like the chat dialect's.

- `common`: what both directions share (tool names, call ids, sealed reasoning, item ids, the
  translated request).
- `request`: a `POST /v1/responses` body → a Messages API body, with `input` (items → turns) and
  `tools` (flat, namespace, custom and web search tools → Claude tools) in their own modules.
- `response`, `stream`: a Message, or Claude's stream, → a Response object or its named events.
"""
