"""Messages API content blocks from the values a dialect's content parts carry (design §2).

Each function takes what the dialect extracted from its own part shape, plus the client's path
to it, and returns a block (or raises `InvalidRequest` naming that path). Upstream rules owned
here, so that a request never fails for a reason the client cannot see in its own body: text
blocks must contain non-whitespace text (blank text is dropped); an image's declared media type
must match its bytes (the bytes win); a tool call's arguments must be a JSON object.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, Final

import orjson

from proxy.translate.checks import (
    invalid_type,
    invalid_value,
    required_string,
    required_type,
    unsupported_value,
)
from proxy.translate.params import Drop

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "THINKING_TYPES",
    "Block",
    "cached",
    "detail_dropped",
    "document_block",
    "image_block",
    "part_type",
    "plain_text",
    "text_blocks",
    "thinking_block",
    "tool_result_block",
    "tool_use_block",
]

Block = dict[str, Any]

IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
THINKING_TYPES: Final = frozenset({"thinking", "redacted_thinking"})


# Text ----------------------------------------------------------------------------------------


def plain_text(text: str) -> list[Block]:
    """`text` as a text block, or no block when it is blank (upstream refuses blank text)."""
    return [{"type": "text", "text": text}] if text and not text.isspace() else []


def text_blocks(content: Any, path: str, parts: Mapping[str, str], drop: Drop | None = None) -> list[Block]:
    """Text-only content: a string, or an array of parts whose `type` is a key of `parts` (the
    value names the part's field holding the text: chat's ``{"text": "text", "refusal": "refusal"}``).
    `drop` records what a part asks for that is not sent as asked (see `cached`)."""
    if isinstance(content, str):
        return plain_text(content)
    if not isinstance(content, list):
        invalid_type(path, "a string or an array of text parts", content)
    blocks: list[Block] = []
    for j, part in enumerate(content):
        part_path = f"{path}[{j}]"
        kind = part_type(part, part_path)
        field = parts.get(kind)
        if field is None:
            allowed = " or ".join(repr(name) for name in parts)
            unsupported_value(f"{part_path}.type", f"{kind!r} parts are not accepted here, only {allowed}.")
        text = plain_text(required_type(part, field, part_path, str, "a string"))
        blocks.extend(cached(block, part, part_path, drop) for block in text)
    return blocks


def part_type(part: Any, path: str) -> str:
    """The `type` of a content part, which must be an object with a string `type`."""
    if not isinstance(part, dict):
        invalid_type(path, "an object", part)
    kind: str = required_type(part, "type", path, str, "a string")
    return kind


# Images and documents ------------------------------------------------------------------------


def image_block(url: str, path: str) -> Block:
    """An image block for an http(s) URL or a base64 ``data:`` URL; `path` is the URL's."""
    scheme = url[:8].lower()
    if scheme.startswith("data:"):
        media_type, data, raw = _data_url(url, path)
        if media_type not in IMAGE_MEDIA_TYPES:
            unsupported_value(
                path,
                f"image media type {media_type!r} is not supported; use image/jpeg, image/png, "
                "image/gif or image/webp.",
            )
        # Clients often mislabel images (a PNG sent as image/jpeg); upstream checks the bytes
        # against the declared type and refuses a mismatch, so trust the magic number instead.
        media_type = _sniff_image(raw) or media_type
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if scheme.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    unsupported_value(path, "an image URL must be an http(s) URL or a base64 data: URL.")


def detail_dropped(detail: Any, path: str, drop: Drop) -> None:
    """An image's OpenAI `detail` (at `path`) has no Messages API equivalent: Claude sees every
    image at its own resolution. Anything but "auto", the default, is reported as dropped."""
    if detail is not None and detail != "auto":
        drop(path, "Claude has no image detail levels; the image is sent as it is")


def document_block(url: str, path: str, *, title: str | None = None) -> Block:
    """A PDF document block for a base64 ``data:application/pdf`` URL; `path` is the URL's. An
    empty or absent `title` (the file name) is left out."""
    if url[:5].lower() != "data:":
        invalid_value(path, "expected a data: URL (data:application/pdf;base64,…).")
    media_type, data, _ = _data_url(url, path)
    if media_type != "application/pdf":
        unsupported_value(path, f"file media type {media_type!r} is not supported; only application/pdf.")
    block: Block = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if title:
        block["title"] = title
    return block


def _data_url(url: str, path: str) -> tuple[str, str, bytes]:
    """Media type (lower-cased), base64 payload and decoded bytes of a ``data:…;base64,…`` URL."""
    header, comma, data = url[5:].partition(",")
    if not comma:
        invalid_value(path, "malformed data: URL (no comma before the data).")
    media_type, *options = header.split(";")
    if "base64" not in (option.strip().lower() for option in options):
        invalid_value(path, "a data: URL must be base64-encoded (data:<media type>;base64,<data>).")
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        invalid_value(path, "the data: URL's payload is not valid base64.")
    if not raw:
        invalid_value(path, "the data: URL's payload is empty.")
    return media_type.strip().lower(), data, raw


def _sniff_image(raw: bytes) -> str | None:
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


# Thinking ------------------------------------------------------------------------------------


def thinking_block(block: Any, path: str) -> Block:
    """A thinking or redacted_thinking block the client echoes back (Claude's signed reasoning),
    rebuilt from its known fields only."""
    kind = part_type(block, path)
    if kind == "thinking":
        thinking = required_type(block, "thinking", path, str, "a string")
        signature = required_string(block, "signature", path)
        return {"type": "thinking", "thinking": thinking, "signature": signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": required_string(block, "data", path)}
    unsupported_value(f"{path}.type", f"{kind!r}; expected 'thinking' or 'redacted_thinking'.")


# Prompt cache breakpoints --------------------------------------------------------------------


def cached(block: Block, part: dict[str, Any], path: str, drop: Drop | None = None) -> Block:
    """`block`, marked as a prompt cache breakpoint when the part carries OpenAI's
    `prompt_cache_breakpoint`; `caching.place_cache_breakpoints` sets the TTL and keeps at most four.
    A lifetime longer than Claude's longest is an adaptation, given to `drop` when there is one."""
    breakpoint_ = part.get("prompt_cache_breakpoint")
    if breakpoint_ is None:
        return block
    bp_path = f"{path}.prompt_cache_breakpoint"
    if not isinstance(breakpoint_, dict):
        invalid_type(bp_path, "an object", breakpoint_)
    mode = breakpoint_.get("mode")
    if mode != "explicit":
        invalid_value(f"{bp_path}.mode", f"{mode!r}; the only supported value is 'explicit'.")
    cache_control: Block = {"type": "ephemeral"}
    ttl = breakpoint_.get("ttl")
    if ttl is not None:
        if ttl not in ("30m", "12h"):
            invalid_value(f"{bp_path}.ttl", f"{ttl!r}. Supported values are: '30m' and '12h'.")
        # Anthropic's cache lives 5 minutes or 1 hour; a minimum lifetime of 30m or more needs 1h.
        cache_control["ttl"] = "1h"
        if ttl == "12h" and drop is not None:
            drop(f"{bp_path}.ttl", "'12h' is sent as Claude's longest cache lifetime, 1 hour")
    return {**block, "cache_control": cache_control}


# Tool calls and results ----------------------------------------------------------------------


def tool_use_block(call_id: str, name: str, arguments: str, path: str) -> Block:
    """A tool_use block for a call the client echoes back; `arguments` is the call's JSON
    arguments string and `path` its path (a blank string means no arguments)."""
    return {"type": "tool_use", "id": call_id, "name": name, "input": _arguments(arguments, path)}


def _arguments(arguments: str, path: str) -> dict[str, Any]:
    # Streaming accumulators send "" for a call without parameters; that means {}.
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except ValueError:
        invalid_value(path, "the arguments are not valid JSON.")
    if not isinstance(value, dict):
        invalid_value(path, "the arguments must be a JSON object.")
    return value


def tool_result_block(
    tool_use_id: str, content: Any, path: str, parts: Mapping[str, str], drop: Drop | None = None
) -> Block:
    """A tool_result block: `content` is absent (None), a string, or an array of text parts as
    `text_blocks` reads them (`parts`, `drop`); blank text leaves the result without content."""
    block: Block = {"type": "tool_result", "tool_use_id": tool_use_id}
    if content is None:
        return block
    if isinstance(content, str):
        # A blank string would be a blank text block upstream; no content says the same.
        if content and not content.isspace():
            block["content"] = content
        return block
    blocks = text_blocks(content, path, parts, drop)
    if blocks:
        block["content"] = blocks
    return block
