"""What a client is told when Claude refuses (`stop_reason: refusal`): one wording for every dialect,
so chat's `message.refusal` and the Responses API's `refusal` part say the same thing."""

from __future__ import annotations

from typing import Any

__all__ = ["refusal_text"]


def refusal_text(stop_details: Any) -> str:
    """Claude's explanation (`stop_details.explanation`) when it gives one; else a sentence naming
    the policy category when there is one."""
    details = stop_details if isinstance(stop_details, dict) else {}
    explanation = details.get("explanation")
    if isinstance(explanation, str) and explanation.strip():
        return explanation
    category = details.get("category")
    about = f" (policy category: {category})" if isinstance(category, str) and category else ""
    return f"The model declined to respond to this request{about}."
