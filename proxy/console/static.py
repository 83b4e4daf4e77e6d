"""The console's static files, read once from the package: a fixed list, so no path is ever
resolved from a request. Only the sign-in page's own assets are served without a session."""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

from proxy.console.web import page, secured

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
PUBLIC = frozenset({"console.css", "theme.js", "favicon.svg"})


def _load() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("proxy.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            files[entry.name] = (entry.read_bytes(), TYPES[suffix])
    return files


FILES = _load()


def response(name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        return page("error.html", 404, message="No such file.")
    body, media_type = found
    answer = secured(Response(body, media_type=media_type))
    answer.headers["cache-control"] = "private, max-age=300"
    return answer
