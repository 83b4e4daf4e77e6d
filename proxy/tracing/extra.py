"""Whether the ``tracing`` extra is installed, and what to install when it is not (a leaf: the
settings check it at start-up without importing anything of tracing)."""

from __future__ import annotations

import importlib.util
from typing import Final

INSTALL_HINT: Final = "pip install 'claude-proxy[tracing]'"


def installed() -> bool:
    """Whether the ``tracing`` extra's packages can be imported (found, not imported)."""
    for module in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except ModuleNotFoundError:  # a parent package is missing
            return False
    return True
