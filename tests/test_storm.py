"""A 429 storm and the stops around it, through real runs against the emulator.

The emulator's storm (everything refused for a while), the adaptive limiter climbing back
after it, the soft time limit that does not count time spent waiting for the quota, and a
stop that wakes the items sleeping in a limiter pause.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from photo_factory import make_jpeg

from dealscout_cli.config import Settings
from dealscout_cli.emulator import Emulator, EmulatorConfig, parse_storm

VISION = Settings().vision_model
HELLO = {"contents": [{"parts": [{"text": "hi"}]}]}


class HandClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def make_items(folder: Path, count: int) -> Path:
    for n in range(count):
        make_jpeg(
            folder / f"item-{n:03d}.jpg", size=(160, 120), kind=("mug", "book")[n % 2], seed=n
        )
    return folder


def states(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())


# -- the emulator's storm ---------------------------------------------------------------


def test_storm_refuses_every_request_with_retry_info_until_it_ends() -> None:
    clock = HandClock()
    with Emulator(EmulatorConfig(storm=(5, 15)), clock=clock) as emu:
        url = f"{emu.url}/v1beta/models/{VISION}:generateContent?key=k"
        assert httpx.post(url, json=HELLO).status_code == 200
        clock.now += 6
        refused = httpx.post(url, json=HELLO)
        clock.now += 9
        assert httpx.post(url, json=HELLO).status_code == 200
        stats = emu.stats()
    assert refused.status_code == 429
    details = refused.json()["error"]["details"]
    quota = next(d for d in details if d["@type"].endswith("QuotaFailure"))
    assert quota["violations"][0]["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"} in details
    assert stats.requests_by_status == {200: 2, 429: 1}


def test_storm_flag_reads_seconds_or_a_range() -> None:
    assert parse_storm("10") == (0.0, 10.0)
    assert parse_storm("30-40") == (30.0, 40.0)
    with pytest.raises(ValueError, match="START-END"):
        parse_storm("soon")
    with pytest.raises(ValueError, match="start < end"):
        parse_storm("40-30")
