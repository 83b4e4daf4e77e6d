"""The console ships whole: every template and static file is package data (so it is in the wheel),
and no page or script loads anything from another origin."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import proxy.console

CONSOLE = Path(proxy.console.__file__).parent
ROOT = CONSOLE.parents[1]


def test_every_template_and_static_file_is_package_data() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = declared["proxy.console"]
    files = [
        path.relative_to(CONSOLE).as_posix()
        for folder in ("templates", "static")
        for path in (CONSOLE / folder).iterdir()
    ]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_no_asset_is_loaded_from_another_origin() -> None:
    remote = re.compile(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?(https?:)?//|import\s*\(|fetch\(\s*["']https?:""")
    for path in [*(CONSOLE / "templates").iterdir(), *(CONSOLE / "static").iterdir()]:
        if path.suffix in (".html", ".js", ".css"):
            assert not remote.search(path.read_text()), path
