"""Blocks → the Messages API's `system` and alternating `messages` turns (design §2).

A dialect walks its own message list and hands each message's blocks to a `Conversation`:
`system(blocks)`, `user(blocks, path)`, `assistant(blocks, path)`, `tool_results(blocks, path)`,
then `finish()`. Upstream rules owned here:

- turns alternate: consecutive turns of one role are merged, `tool_result` blocks first in a user
  turn and thinking blocks first in an assistant turn (each kept in its own order);
- a final assistant turn (prefill) must not end in whitespace, and some models refuse it; echoed
  thinking in it is dropped (the API refuses it there).

Every step is linear in the request (a body of tens of thousands of tool results is translated on
the event loop), and `count` charges every content field to the request's block budget.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

from proxy.errors import InvalidRequest
from proxy.translate.checks import invalid_value
from proxy.translate.claude.blocks import THINKING_TYPES, Block

__all__ = [
    "DEFAULT_MAX_CONTENT_BLOCKS",
    "DEFAULT_MAX_MESSAGES",
    "Conversation",
    "Turn",
    "ends_in_prefill",
]

Turn = dict[str, Any]

# The Messages API's own limit ("a limit of 100,000 messages in a single request"): past it the
# request would fail upstream anyway, after the gateway had done all the work of translating it.
DEFAULT_MAX_MESSAGES: Final = 100_000
# Content parts, tool calls and thinking blocks in all messages together: two for each message the
# API allows. The body size limit bounds this too, but this one fails early and says why.
DEFAULT_MAX_CONTENT_BLOCKS: Final = 200_000

# The blocks the API wants first in a turn of each role: tool results before anything else in a
# user turn, thinking before anything else in an assistant turn (each kept in its own order).
_LEADING: Final[dict[str, frozenset[str]]] = {"user": frozenset({"tool_result"}), "assistant": THINKING_TYPES}


class _Turn:
    """One upstream turn being built from one or more consecutive client messages.

    The blocks that lead the turn are kept apart from the rest as they arrive, so that merging a
    message is proportional to that message alone; the turn is put in order once, at the end.
    (Re-sorting the merged turn on every message made 20,000 tool results take 20 seconds.)
    """

    __slots__ = ("leading", "rest", "role", "source")

    def __init__(self, role: str, source: str) -> None:
        self.role = role
        self.source = source  # path of the last client message merged into this turn
        self.leading: list[Block] = []
        self.rest: list[Block] = []

    def extend(self, blocks: list[Block]) -> None:
        leading = _LEADING[self.role]
        for block in blocks:
            (self.leading if block["type"] in leading else self.rest).append(block)

    def content(self) -> list[Block]:
        return self.leading + self.rest


class Conversation:
    """The system blocks and turns built so far, and the request's block budget.

    `field` names the client's message list (``messages``, ``input``) in errors about it as a
    whole; `max_content_blocks` bounds the content fields charged with `count`.
    """

    __slots__ = ("_system", "_turns", "blocks_left", "field", "max_content_blocks")

    def __init__(self, max_content_blocks: int = DEFAULT_MAX_CONTENT_BLOCKS, *, field: str = "messages") -> None:
        self._system: list[Block] = []
        self._turns: list[_Turn] = []
        self.field = field
        self.max_content_blocks = max_content_blocks
        self.blocks_left = max_content_blocks

    def count(self, value: Any, path: str) -> None:
        """Charge a content field to the request's block budget, before it is converted: an array
        counts its items (each becomes at most one block), anything else one."""
        self.blocks_left -= len(value) if isinstance(value, list) else 1
        if self.blocks_left < 0:
            limit = self.max_content_blocks
            raise InvalidRequest(
                f"Invalid '{path}': too many content parts. A request may hold at most {limit} content "
                f"parts, tool calls and thinking blocks in all its messages (the gateway's "
                f"max_content_blocks is {limit}), and this one holds more.",
                param=path,
                code="array_above_max_length",
            )

    def system(self, blocks: list[Block]) -> None:
        """Instructions, wherever they appear: collected in order into the top-level `system`."""
        self._system.extend(blocks)

    def user(self, blocks: list[Block], path: str) -> None:
        """A user message's blocks; `path` is the client message's."""
        self._add("user", blocks, path)

    def tool_results(self, blocks: list[Block], path: str) -> None:
        """`tool_result` blocks: they join (or start) a user turn, ahead of its other blocks."""
        self._add("user", blocks, path)

    def assistant(self, blocks: list[Block], path: str) -> None:
        """An assistant message's blocks, in the order Claude wrote them: thinking, text, tool calls."""
        self._add("assistant", blocks, path)

    def _add(self, role: str, blocks: list[Block], path: str) -> None:
        if not blocks:
            return
        if not self._turns or self._turns[-1].role != role:
            self._turns.append(_Turn(role, path))
        turn = self._turns[-1]
        turn.extend(blocks)
        turn.source = path

    def finish(self, *, model: str, prefill: bool) -> tuple[list[Block], list[Turn]]:
        """The `system` blocks and the turns, each in order, after the checks on the last turn.
        `prefill` says whether `model` accepts a final assistant turn (from the model table)."""
        if not self._turns:
            self._empty()
        last = self._turns[-1]
        if last.role == "assistant" and all(block["type"] != "tool_use" for block in last.rest):
            # A prefill, not an unanswered tool call (which upstream judges). Echoed thinking only
            # matters before a tool call, and the API refuses it in a final assistant turn: drop it.
            last.leading.clear()
            if not last.rest:
                self._turns.pop()
                if not self._turns:
                    self._empty()
            else:
                _check_prefill(last, model=model, prefill=prefill)
        return self._system, [{"role": turn.role, "content": turn.content()} for turn in self._turns]

    def _empty(self) -> NoReturn:
        invalid_value(self.field, "expected at least one user or assistant message with content.")


def _check_prefill(last: _Turn, *, model: str, prefill: bool) -> None:
    # Only text blocks are left, none of them blank, so stripping never empties the turn.
    content = last.rest
    content[-1] = {**content[-1], "text": content[-1]["text"].rstrip()}
    if not prefill:
        raise InvalidRequest(
            f"The model {model!r} does not accept prefill: the conversation must not end with "
            "an assistant message. Remove the trailing assistant message.",
            param=last.source,
            code="unsupported_value",
        )


def ends_in_prefill(upstream: dict[str, Any]) -> bool:
    """The upstream body's conversation ends in an assistant turn that is not a tool call."""
    last = upstream["messages"][-1]
    return last["role"] == "assistant" and all(block["type"] != "tool_use" for block in last["content"])
