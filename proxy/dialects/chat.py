"""OpenAI chat completions (`POST /v1/chat/completions`) as a dialect: shapes only.

Every mapping decision is in `proxy.translate.chat` (over the shared Claude-side rules of
`proxy.translate.claude`); this module only plugs those translators into the pipeline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from proxy.dialects.base import Answer, Dialect, Endpoint, Inbound, Outbound
from proxy.errors import InvalidRequest, ProxyError, UpstreamError
from proxy.translate.chat.request import TranslatedRequest, to_messages_request
from proxy.translate.chat.response import merge_completions, to_chat_completion
from proxy.translate.chat.stream import ChoiceStreams
from proxy.translate.chat.stream import StreamTranslator as ChatStream
from proxy.translate.errors import from_upstream
from proxy.translators import ChoiceTranslator, StreamTranslator
from proxy.upstream import UpstreamReply
from proxy.usage import Usage

MESSAGES_PATH = "/v1/messages"


class ChatCompletions(Dialect):
    endpoints = (Endpoint("/v1/chat/completions", "chat_completions"),)

    def parse(self, endpoint: Endpoint, body: Any, inbound: Inbound) -> Outbound:
        settings = inbound.settings
        translated = to_messages_request(
            body,
            inbound.models,
            max_n=settings.max_n,
            auto_cache=settings.auto_cache,
            max_messages=settings.max_messages,
            max_content_blocks=settings.max_content_blocks,
            max_tools=settings.max_tools,
            strict=settings.strict_fields,
        )
        return Outbound(
            path=MESSAGES_PATH,
            payload=serialise(translated.upstream),
            model=translated.model,
            stream=translated.stream,
            body=translated.upstream,
            n=translated.n,
            hints=translated,
            dropped=translated.dropped,
        )

    def answer(self, replies: Sequence[UpstreamReply], outbound: Outbound) -> Answer:
        created = int(time.time())
        answers = [_completion(reply, created) for reply in replies]
        if len(answers) == 1:
            completion, usage = answers[0]
        else:
            completion = merge_completions([completion for completion, _ in answers])
            usage = sum((usage for _, usage in answers), Usage())
        return Answer(orjson.dumps(completion), usage)

    def relay(self, outbound: Outbound) -> StreamTranslator:
        translated: TranslatedRequest = outbound.hints
        return ChatStream(created=int(time.time()), include_usage=translated.include_usage, model=translated.model)

    def relay_choices(self, outbound: Outbound) -> ChoiceTranslator:
        translated: TranslatedRequest = outbound.hints
        return ChoiceStreams(
            translated.n,
            created=int(time.time()),
            include_usage=translated.include_usage,
            model=translated.model,
            completion_id=f"chatcmpl-{uuid.uuid4().hex}",
        )

    def upstream_failure(self, reply: UpstreamReply) -> ProxyError:
        return from_upstream(reply.status, reply.body, reply.headers)

    def error_body(self, error: ProxyError) -> bytes:
        return error.to_json()


def serialise(upstream: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(upstream)
    except orjson.JSONEncodeError as exc:  # nesting deeper than orjson writes (it reads deeper than it writes)
        raise InvalidRequest(f"The request cannot be forwarded: {exc}.") from None


def _completion(reply: UpstreamReply, created: int) -> tuple[dict[str, Any], Usage]:
    """The chat.completion for an upstream Message and the tokens it used; a malformed one is the
    upstream's fault (502)."""
    try:
        message = reply.json()
        usage = Usage.from_anthropic(message.get("usage"))  # counts that metering and billing can add up
        return to_chat_completion(message, created=created, usage=usage), usage
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError("the upstream API answered with a malformed message") from exc
