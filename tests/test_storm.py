"""A 429 storm and the stops around it, through real runs against the emulator.

The emulator's storm (everything refused for a while), the adaptive limiter climbing back
after it, the soft time limit that does not count time spent waiting for the quota, and a
stop that wakes the items sleeping in a limiter pause.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from conftest import FAKE_KEY
from photo_factory import make_jpeg
from processes import spawn

from dealscout_cli.config import Settings
from dealscout_cli.emulator import Emulator, EmulatorConfig, parse_storm
from dealscout_cli.snap import snap

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


# -- through a run ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_starts_in_a_storm_recovers_and_no_item_times_out(tmp_path: Path) -> None:
    """The issue's run: 40 items, a healthy 300 RPM server, 10 s of 429s at the start. It
    used to finish 11 items in 480 s, and fail 19 of 20 as 'took longer than 30 s'."""
    photos, db = make_items(tmp_path / "p", 40), tmp_path / "d.db"
    config = EmulatorConfig(seed=3, rpm=300, latency=0.05, storm=(0, 10))
    with Emulator(config) as emu:
        proc = spawn(
            [
                sys.executable, "-m", "dealscout_cli.cli", "snap", str(photos),
                "--base-url", emu.url, "--db", str(db), "--json", "--quiet",
                "--soft-time-limit", "30", "--max-attempts", "2",
            ],
            env={**os.environ, "GEMINI_API_KEY": FAKE_KEY},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.monotonic()
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"not done 120 s after a 10 s storm: {states(db)}")
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["run"]["done"] == 40 and report["failed"] == []
    assert elapsed < 90  # 10 s of storm, then the climb back (it used to take forever)


def test_waiting_for_the_quota_does_not_count_toward_the_soft_time_limit(
    tmp_path: Path,
) -> None:
    # 60 RPM: starts 1 s apart, so the sixth item waits 5 s for its permit, past the 2 s limit.
    photos = make_items(tmp_path / "p", 6)
    with Emulator(EmulatorConfig(seed=4)) as emu:
        settings = Settings(
            db_path=tmp_path / "d.db", api_key=FAKE_KEY, base_url=emu.url, rpm=60,
            concurrency=6, soft_time_limit=2, max_attempts=1, max_retries=0,
        )  # fmt: skip
        result = snap([photos], settings, handle_signals=False)
    assert result.summary is not None
    assert [f["error"] for f in result.failed_in_batch] == []
    assert result.summary.done == 6


def test_a_daily_quota_stop_wakes_the_items_sleeping_in_a_pause(tmp_path: Path) -> None:
    # 12 RPM: one vision start every 5 s. The second is refused for the day; its RetryInfo
    # (a day) pauses the model, and the items waiting for their turn would sleep in that
    # pause until their soft time limit (20 s) ended them. The stop must reach them at once.
    photos = make_items(tmp_path / "p", 4)
    emulator = EmulatorConfig(seed=5, model_overrides={VISION: {"rpd": 1}})
    with Emulator(emulator) as emu:
        settings = Settings(
            db_path=tmp_path / "d.db", api_key=FAKE_KEY, base_url=emu.url, rpm=12,
            concurrency=4, soft_time_limit=20,
        )  # fmt: skip
        started = time.monotonic()
        result = snap([photos], settings, handle_signals=False)
        elapsed = time.monotonic() - started
    summary = result.summary
    assert summary is not None and summary.stop_reason is not None
    assert "daily quota" in summary.stop_reason
    assert elapsed < 12, f"the stop waited {elapsed:.0f} s for the sleeping items"
    assert (summary.done, summary.failed, summary.released) == (1, 0, 3)
    assert states(tmp_path / "d.db") == {"done": 1, "queued": 3}
    with closing(sqlite3.connect(tmp_path / "d.db")) as conn:
        # Given back untouched: no attempt used up by the items that never sent a request.
        attempts = conn.execute("SELECT attempts FROM jobs WHERE state = 'queued'").fetchall()
    assert attempts == [(0,), (0,), (0,)]


def test_a_stop_wakes_a_call_sleeping_between_its_retries() -> None:
    """A RetryInfo-long wait between tries is the server's time too: a stop ends it."""
    import anyio

    from dealscout_cli.limits import Limits, ModelLimit, Stopping

    limits = Limits({}, ModelLimit())

    async def main() -> float:
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:

            async def sleeper() -> None:
                with pytest.raises(Stopping):
                    await limits.backoff(3600)

            tg.start_soon(sleeper)
            await anyio.sleep(0.05)
            limits.wake_all("daily quota exhausted")
        return anyio.current_time() - started

    assert anyio.run(main) < 5
