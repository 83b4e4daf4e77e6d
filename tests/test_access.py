"""The access middleware's route labels come from the app's own route table."""

from __future__ import annotations

import pytest

from proxy.access import RouteLabels
from proxy.app import create_app
from proxy.config import Settings


@pytest.fixture(scope="module")
def labels() -> RouteLabels:
    return RouteLabels(create_app(Settings(anthropic_api_key="sk-ant-test")).routes)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/messages", "/v1/messages"),
        ("/v1/messages/count_tokens", "/v1/messages/count_tokens"),
        ("/v1/models", "/v1/models"),
        ("/v1/models/claude-haiku-4-5", "/v1/models/{model}"),
        ("/v1/models/a/b/c", "/v1/models/{model}"),
        ("/admin/keys/team-a", "/admin"),
        ("/healthz", "/healthz"),
    ],
)
def test_every_route_of_the_app_is_labelled_by_its_own_path(labels: RouteLabels, path: str, label: str) -> None:
    assert labels(path) == label


@pytest.mark.parametrize("path", ["/", "/wp-login.php", "/v1/chat/completions/x", "/adminx", "/v1/messagesx"])
def test_any_other_path_is_labelled_other_so_scanners_cannot_grow_the_metrics(labels: RouteLabels, path: str) -> None:
    assert labels(path) == "other"
