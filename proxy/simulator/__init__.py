"""A deterministic stand-in for Anthropic's Messages API.

Used in-process when no ``ANTHROPIC_API_KEY`` is set (the product then runs offline), and served
standalone (``python -m proxy simulator --port P``) for client tests and the benchmark. It answers in
the API's shapes and refuses what the real API refuses, consulting the same
:class:`~proxy.models.ModelTable` as the gateway. It does not import the ``anthropic`` SDK (a test
dependency only); the tests check it against the SDK's types.

``create_app(*, table=None, api_key=None, event_delay=0.0, extra_models=None)`` returns a Starlette
app serving::

    POST /v1/messages               a Message, or with "stream": true a text/event-stream
    POST /v1/messages/count_tokens  {"input_tokens": N}
    GET  /v1/models                 {"data": [ModelInfo...], "has_more", "first_id", "last_id"}
                                    (``extra_models``' ids, then the SDK's ModelParam ids, as
                                    validate.MODEL_IDS; limit / after_id / before_id / lifecycle[],
                                    by default active and deprecated models, as the API)
    GET  /v1/models/{model_id}      one ModelInfo, retired ones included

Each ModelInfo is built from the model's table row as the API sends it: ``capabilities`` (effort
levels, thinking types, structured outputs, image / PDF input, citations, web search),
``lifecycle``, ``retires_at`` (once deprecated), ``max_tokens`` and ``max_input_tokens``.
``extra_models`` maps more model ids to table rows (``{"claude-nova-6": {"effort": ["low"]}}``,
``{"claude-old-1": {"lifecycle": "retired", "retires": "2026-01-31"}}``): the simulator lists and
serves them, so tests can declare a model the shipped table has never heard of, a deprecated one
and a retired one.

Every request needs ``x-api-key`` or ``Authorization: Bearer`` (401 authentication_error without;
with ``api_key`` set, any other key is a 401) and an ``anthropic-version`` header (any value; 400
without). Errors are ``{"type": "error", "error": {"type", "message"}, "request_id"}`` and every
response carries a ``request-id`` header (``req_011CSim…``, a per-app counter).

Validation: the body is checked against tables of the request's shapes read off the SDK's
``MessageCreateParamsNonStreaming`` (or ``MessageCountTokensParams``) and the types they use, with the
API's error style (``messages.0.content.1.text.text: Input should be a valid string``); unknown fields
are ``<path>.<field>: Extra inputs are not permitted`` -- which is what ``temperature`` / ``top_p`` /
``top_k`` get unless the model's ``caps.sampling`` lists them. Then:
model not ``claude-*`` -> 404; ``max_tokens`` above ``caps.max_output_tokens``; a final assistant turn
(prefill) on a model without ``caps.prefill``, or ending in whitespace; empty or whitespace-only text
blocks; ``tool_use`` without matching leading ``tool_result`` blocks in the next user turn, and
``tool_result`` without a ``tool_use`` in the previous assistant turn; thinking modes outside
``caps.thinking``, a budget under 1024 or not below ``max_tokens``, forced ``tool_choice`` with
thinking, and (thinking ``enabled``) a final assistant message mid tool loop that does not start with
a thinking block. Thinking signatures are not verified.

Replies are a pure function of the request (ids included): ``"Hello! You said: <last user text, at
most 20 words>."`` (plus a line acknowledging the system prompt, if any) padded with a fixed sentence to
about 40 words; a prefill is continued, not repeated. Tokens are ``\\w+`` runs and single other
non-space characters; ``input_tokens`` covers system, messages and tools. ``max_tokens`` truncates
(``stop_reason: "max_tokens"``), ``stop_sequences`` cut before the first match (``"stop_sequence"``).
Tools (custom ones, ``tool_choice`` not ``none``, no ``tool_result`` in the last user turn): the named
tool for ``{"type": "tool"}``, else every tool named in the last user text in order of appearance, else
the first tool; ``disable_parallel_tool_use`` keeps one. Inputs fill the schema's required properties
("example" / first enum value, 1, 1.5, true, [], objects recursively). With ``tool_choice`` auto a
short "I'll call X." text precedes them. A last user turn with tool results gets a text quoting them.
Thinking (enabled / adaptive) adds a thinking block with a signature first. ``output_config.format``
(json_schema) makes the text a JSON example of the schema. The stream sends the API's event order
(message_start, ping, per-block start / deltas / stop, message_delta, message_stop); with
``event_delay`` > 0 each event is a separate chunk, ``event_delay`` seconds apart.

Triggers, in the last user text (the request must otherwise be valid):

    SIMULATE_ERROR <status> [<type>]   answer that error instead, e.g. ``SIMULATE_ERROR 529
                                       overloaded_error`` or ``SIMULATE_ERROR 429 rate_limit_error``
                                       (429 adds ``retry-after: 1``). Without a type, the status picks
                                       the usual one (400 invalid_request_error, 401
                                       authentication_error, 403 permission_error, 404
                                       not_found_error, 413 request_too_large, 429 rate_limit_error,
                                       500 api_error, 504 timeout_error, 529 overloaded_error).
                                       Applies to /v1/messages, streaming or not; statuses 400-599.
    SIMULATE_STREAM_ERROR              a stream sends message_start, ping, a text block start and up to
                                       three text deltas, then ``event: error`` with overloaded_error
                                       and ends. Non-streaming requests answer normally.
"""

from proxy.simulator.app import create_app

__all__ = ["create_app"]
