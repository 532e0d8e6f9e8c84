"""A real Chromium for the review app's tests, driven by Playwright (plain `sync_api`).

Which Chromium: the first of `chromium`, `chromium-browser`, `google-chrome` on PATH, else the
one Playwright downloaded (`playwright install chromium`) if it is there. With none, and
running as root on Debian or Ubuntu, the fixture installs Debian's (`apt-get install -y
chromium`), so the README's test command works on a fresh machine with only Python and
pip; otherwise it fails naming the fix. It never skips: a review app nobody clicked is
untested.

The flags: --no-sandbox because CI containers run as root; the background-networking ones
because on a machine without internet Chromium otherwise waits on its own update and
field-trial requests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIX = (
    "the review tests need Chromium: `sudo apt-get install -y chromium` (Debian/Ubuntu), "
    "or `python -m playwright install chromium`, or put a chromium on PATH"
)


def find_chromium() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            bundled = pw.chromium.executable_path
    except Exception:  # no playwright browser downloaded: that is what this looks for
        return None
    return bundled if bundled and Path(bundled).exists() else None


def install_chromium() -> None:
    """Debian's Chromium via apt-get, when this process may (root, apt-get present)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600, **quiet)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"],
        check=False,
        timeout=1200,
        **quiet,
    )


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    found = find_chromium()
    if found is None:
        install_chromium()
        found = find_chromium()
    if found is None:
        pytest.fail(FIX, pytrace=False)
    return found


@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Any]:
    """One Chromium per test module (Playwright's sync API keeps an event loop of its own
    while it runs, so it is stopped before the next module's tests run asyncio)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()
