"""The npm packages an end-to-end test needs, installed from the lock file on first use.

A test that needs them is skipped, not failed, only when npm itself is missing or its registry cannot
be reached from this machine; any other install failure fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def installed(project: Path, package: str) -> Path:
    """``project``'s ``node_modules`` with ``package`` in it, running ``npm ci`` if it is not there yet."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    modules = project / "node_modules"
    if not (modules / package).exists():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--fetch-timeout=30000", "--fetch-retries=1"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            if not _registry_reachable(project):
                pytest.skip(f"the npm registry cannot be reached, so {package} cannot be installed")
            raise AssertionError(f"npm ci failed in {project}:\n{done.stdout}\n{done.stderr}")
    return modules


def _registry_reachable(project: Path) -> bool:
    ping = subprocess.run(
        ["npm", "ping", "--fetch-timeout=15000", "--fetch-retries=0"],
        cwd=project,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return ping.returncode == 0
