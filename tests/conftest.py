"""Shared fixtures: a clean environment, a real emulator on a free port, real photos, real databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import browser, chromium_executable  # noqa: F401  (fixtures for every module)
from fleet import redis_server, workers  # noqa: F401
from photo_factory import make_jpeg
from processes import reap_all

FAKE_KEY = "AIzaTEST-dealscout-fake-key-0123456789"  # recognisable, so leaks can be searched for


@pytest.fixture(autouse=True)
def clean_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real key, no real database, a pinned terminal width: every test starts the same."""
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "DEALSCOUT_VISION_MODEL",
        "DEALSCOUT_PRICING_MODEL",
        "DEALSCOUT_CONCURRENCY",
        "DEALSCOUT_PRICES",
        "DEALSCOUT_DEBUG",
        "DEALSCOUT_BROKER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEALSCOUT_DB", str(tmp_path / "dealscout.db"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(autouse=True)
def reap_processes() -> Iterator[None]:
    """No process a test started outlives it, even when the test fails half-way."""
    yield
    reap_all()


@pytest.fixture
def emulator() -> Iterator[Any]:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(seed=1)) as emu:
        yield emu


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "dealscout.db"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three single-photo items and one three-photo item in its own folder."""
    folder = tmp_path / "photos"
    make_jpeg(folder / "mug.jpg", kind="mug", seed=1)
    make_jpeg(folder / "book.jpg", kind="book", seed=2, orientation=6, gps=True)
    make_jpeg(folder / "lamp.jpg", kind="lamp", seed=3)
    for angle, seed in (("front", 4), ("side", 5), ("sole", 6)):
        make_jpeg(folder / "sneaker" / f"{angle}.jpg", kind="sneaker", seed=seed)
    return folder


@pytest.fixture
def env_with_key(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a CLI run against the emulator with a fake key."""
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.url)
    return dict(os.environ)
