"""Structured outputs on the Claude side: a JSON schema → `output_config.format`, JSON mode → an
instruction. A dialect finds the schema in its own shape (chat's ``response_format.json_schema``,
the Responses API's ``text.format``) and passes it with its path.
"""

from __future__ import annotations

from typing import Any, Final

from proxy.translate.checks import boolean, invalid_type, invalid_value, missing, unsupported_value
from proxy.translate.claude.turns import ends_in_prefill
from proxy.translate.params import ClaudeContext

__all__ = [
    "JSON_OBJECT_INSTRUCTION",
    "MAX_SCHEMA_DEPTH",
    "close_objects",
    "json_object_instruction",
    "json_schema_output",
    "require_structured_outputs",
]

# JSON mode has no constrained-decoding equivalent: Claude's JSON outputs take a schema whose
# objects are closed (`additionalProperties: false`), so "any object" cannot be expressed. An
# instruction gets valid JSON in practice; it is not a guarantee, and the README says so.
JSON_OBJECT_INSTRUCTION: Final = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it and no code fences."
)

# Deeper schemas than this are refused rather than walked: JSON reads nest far deeper than any
# real schema, and the walk below is recursive.
MAX_SCHEMA_DEPTH: Final = 64

_SUBSCHEMA_MAPS: Final = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS: Final = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE: Final = ("items", "not", "additionalProperties", "contains")


def json_object_instruction(name: str, context: ClaudeContext) -> None:
    """JSON mode: the instruction to answer in one JSON object, appended to the system prompt. An
    adaptation, reported as such: `name` is the format parameter that asked for it."""
    context.drop(name, "JSON mode is sent as an instruction to answer in JSON, which is not a guarantee")
    context.upstream.setdefault("system", []).append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})


def require_structured_outputs(param: str, context: ClaudeContext) -> None:
    """400 at `param` (the format's type) unless the model has structured outputs."""
    if not context.caps.structured_outputs:
        unsupported_value(param, f"the model {context.model!r} does not support structured outputs.")


def json_schema_output(spec: dict[str, Any], path: str, name: str, context: ClaudeContext) -> None:
    """`output_config.format` for a JSON schema format object `spec` at `path`, holding `schema`
    (required) and `strict` (Claude's JSON outputs are always strict); `name` is the top-level
    parameter. Other fields (`name`, `description`) have no Messages API equivalent."""
    schema = spec.get("schema")
    if schema is None:
        missing(f"{path}.schema")
    if not isinstance(schema, dict):
        invalid_type(f"{path}.schema", "an object (a JSON Schema)", schema)
    strict = spec.get("strict")
    if strict is not None:
        boolean(strict, f"{path}.strict")
    if ends_in_prefill(context.upstream):
        unsupported_value(name, "structured outputs cannot continue a prefilled assistant message.")
    output_format = {"type": "json_schema", "schema": close_objects(schema, f"{path}.schema")}
    context.upstream.setdefault("output_config", {})["format"] = output_format


def close_objects(schema: Any, name: str, depth: int = 0) -> Any:
    """A copy of `schema` in which every object schema that leaves `additionalProperties` unset
    sets it to false, as Claude's JSON outputs require (and OpenAI's strict mode already does)."""
    if not isinstance(schema, dict):
        return schema
    if depth > MAX_SCHEMA_DEPTH:
        invalid_value(name, f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels.")
    closed = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(closed.get(key), dict):
            closed[key] = {k: close_objects(v, name, depth + 1) for k, v in closed[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(closed.get(key), list):
            closed[key] = [close_objects(v, name, depth + 1) for v in closed[key]]
    for key in _SUBSCHEMA_ONE:
        if isinstance(closed.get(key), dict):
            closed[key] = close_objects(closed[key], name, depth + 1)
    kind = closed.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if is_object and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed
