"""Checking the JSON a client sent, shared by every dialect's translator.

The input is whatever JSON the client sent, so every access is type-checked first and every failure
is an `InvalidRequest` whose `param` is the exact path at fault (``messages[2].content[0].image_url``).
Wording and codes follow the OpenAI API's own 400s (``invalid_type``, ``missing_required_parameter`` …).
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

from proxy.errors import InvalidRequest

__all__ = [
    "MAX_MODEL_NAME_LENGTH",
    "boolean",
    "check_length",
    "invalid_type",
    "invalid_value",
    "json_type",
    "missing",
    "number",
    "requested_model",
    "required",
    "required_string",
    "required_type",
    "unsupported_value",
]

# Model ids and aliases are a few dozen characters; the requested name labels metrics and log
# lines, which must not grow with what a client sends (100 KB names made /metrics 235 MB).
MAX_MODEL_NAME_LENGTH: Final = 256


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def invalid_type(param: str, expected: str, value: Any) -> NoReturn:
    raise InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, detail: str) -> NoReturn:
    raise InvalidRequest(f"Invalid value for '{param}': {detail}", param=param, code="invalid_value")


def unsupported_value(param: str, detail: str) -> NoReturn:
    raise InvalidRequest(f"Unsupported value for '{param}': {detail}", param=param, code="unsupported_value")


def check_length(param: str, length: int, limit: int, setting: str) -> None:
    """400 when the array at `param` holds more than `limit` items; `setting` names the limit."""
    if length > limit:
        raise InvalidRequest(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit} "
            f"(the gateway's {setting}), but got an array with length {length} instead.",
            param=param,
            code="array_above_max_length",
        )


def missing(param: str) -> NoReturn:
    raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def required(obj: dict[str, Any], key: str, path: str) -> Any:
    value = obj.get(key)
    if value is None:
        missing(f"{path}.{key}")
    return value


def required_type(obj: dict[str, Any], key: str, path: str, kind: type, expected: str) -> Any:
    value = required(obj, key, path)
    if not isinstance(value, kind):
        invalid_type(f"{path}.{key}", expected, value)
    return value


def required_string(obj: dict[str, Any], key: str, path: str) -> str:
    """A required, non-empty string (ids and names)."""
    value = required_type(obj, key, path, str, "a string")
    if not value:
        invalid_value(f"{path}.{key}", "expected a non-empty string.")
    result: str = value
    return result


def number(value: Any, name: str, low: float, high: float) -> float:
    """A JSON number (not a boolean) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        invalid_type(name, "a number", value)
    if not low <= value <= high:
        invalid_value(name, f"{value!r} is out of range; expected a number from {low:g} to {high:g}.")
    return value


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        invalid_type(name, "a boolean", value)
    return value


def requested_model(body: Any) -> str:
    """The `model` a request body names: the body must be a JSON object and the model a non-empty
    string of at most `MAX_MODEL_NAME_LENGTH` characters. Shared by every dialect and the native
    passthrough, so that no route lets an unbounded name into metrics labels or logs."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    requested = body.get("model")
    if requested is None:
        missing("model")
    if not isinstance(requested, str):
        invalid_type("model", "a string", requested)
    if not requested:
        invalid_value("model", "expected a non-empty string.")
    if len(requested) > MAX_MODEL_NAME_LENGTH:
        # Not echoed back: the name is the very thing too long to repeat.
        raise InvalidRequest(
            f"Invalid 'model': string too long. Expected a string with maximum length "
            f"{MAX_MODEL_NAME_LENGTH}, but got a string with length {len(requested)} instead.",
            param="model",
            code="string_above_max_length",
        )
    return requested
