"""Crash safety with real processes: SIGTERM, SIGKILL, and two runs sharing one database.

Each test runs `dealscout snap` as a subprocess against an emulator served from this
test process, then reads the truth from the SQLite file and the emulator's stats.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import FAKE_KEY
from photo_factory import make_jpeg
from processes import spawn

from dealscout_cli.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.slow


def make_items(folder: Path, count: int) -> Path:
    for n in range(count):
        make_jpeg(
            folder / f"item-{n:04d}.jpg",
            size=(320, 240),
            kind=("mug", "book", "lamp")[n % 3],
            seed=n,
        )
    return folder


def start_snap(folder: Path, db: Path, emulator_url: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "GEMINI_API_KEY": FAKE_KEY, "DEALSCOUT_DB": str(db)}
    return spawn(
        [
            sys.executable,
            "-m",
            "dealscout_cli.cli",
            "snap",
            str(folder),
            "--base-url",
            emulator_url,
            "--quiet",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql).fetchall()


def wait_for(db: Path, sql: str, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                if query(db, sql)[0][0] >= at_least:
                    return
            except sqlite3.OperationalError:
                pass  # schema not there yet
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {sql} >= {at_least}")


def test_sigterm_finishes_in_flight_releases_the_rest_and_rerun_completes(tmp_path: Path) -> None:
    photos, db = make_items(tmp_path / "p", 12), tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=1, latency=0.4)) as emu:
        proc = start_snap(photos, db, emu.url, "--concurrency", "2", "--grace", "20")
        wait_for(db, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 143, stderr
        assert query(db, "SELECT COUNT(*) FROM jobs WHERE state = 'running'")[0][0] == 0
        done_at_stop = query(db, "SELECT COUNT(*) FROM jobs WHERE state = 'done'")[0][0]
        assert done_at_stop < 12
        assert query(db, "SELECT status FROM runs")[0][0] == "interrupted"
        rerun = start_snap(photos, db, emu.url, "--concurrency", "4")
        rerun.communicate(timeout=120)
        assert rerun.returncode == 0
    assert query(db, "SELECT COUNT(*) FROM listings")[0][0] == 12


def test_two_concurrent_snaps_never_process_an_item_twice(tmp_path: Path) -> None:
    photos, db = make_items(tmp_path / "p", 40), tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=2, latency=0.05)) as emu:
        first = start_snap(photos, db, emu.url, "--concurrency", "3")
        second = start_snap(photos, db, emu.url, "--concurrency", "3")
        # Wait for both before asserting, so a failure never leaves the other process running.
        stderrs = [proc.communicate(timeout=180)[1] for proc in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], stderrs
        seen = emu.stats().images_seen
    assert len(seen) == 40 and set(seen.values()) == {1}  # each photo sent exactly once
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM listings")[0] == (40, 40)
    per_run = query(db, "SELECT COUNT(DISTINCT run_id) FROM calls")[0][0]
    assert per_run == 2  # both processes did part of the work


def test_killed_runs_resume_without_duplicates(tmp_path: Path) -> None:
    items, kills, concurrency = 200, 4, 4
    photos, db = make_items(tmp_path / "p", items), tmp_path / "d.db"
    rng = random.Random(7)
    faults = EmulatorConfig(
        seed=3,
        latency=0.03,
        error_rates={429: 0.05, 500: 0.02, 503: 0.02},
        drop_rate=0.01,
        malformed_rate=0.01,
    )
    with Emulator(faults) as emu:
        for _ in range(kills):
            proc = start_snap(
                photos,
                db,
                emu.url,
                "--concurrency",
                str(concurrency),
                "--lease",
                "2",
                "--max-attempts",
                "10",
                "--max-retries",
                "6",
            )
            done_before = (
                query(db, "SELECT COUNT(*) FROM jobs WHERE state='done'")[0][0]
                if db.exists()
                else 0
            )
            wait_for(
                db,
                "SELECT COUNT(*) FROM jobs WHERE state = 'done'",
                done_before + rng.randint(5, 30),
            )
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        time.sleep(2.1)  # let the killed run's leases expire
        final = start_snap(
            photos,
            db,
            emu.url,
            "--concurrency",
            str(concurrency),
            "--lease",
            "2",
            "--max-attempts",
            "10",
            "--max-retries",
            "6",
        )
        _, stderr = final.communicate(timeout=600)
        stats = emu.stats()
    assert final.returncode == 0, stderr
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM listings")[0] == (items, items)
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", items)]
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"
    # Every request the emulator answered was recorded, except those in flight when a run was killed.
    recorded = query(db, "SELECT COUNT(*) FROM calls")[0][0]
    served = sum(stats.requests_by_model.values())
    assert recorded <= served <= recorded + kills * concurrency
    # Paid identifications: one per item, plus at most one per in-flight item per kill.
    ok_identify = query(db, "SELECT COUNT(*) FROM calls WHERE stage='identify' AND outcome='ok'")[
        0
    ][0]
    assert items <= ok_identify <= items + kills * concurrency


def test_second_signal_cancels_in_flight_items_and_releases_them(tmp_path: Path) -> None:
    photos, db = make_items(tmp_path / "p", 6), tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=4, latency=5.0)) as emu:
        proc = start_snap(photos, db, emu.url, "--concurrency", "3", "--grace", "60")
        wait_for(db, "SELECT COUNT(*) FROM calls", 0)  # schema exists
        wait_for(db, "SELECT COUNT(*) FROM jobs WHERE state = 'running'", 3)
        # Claimed is not yet calling (photos are prepared first): wait until all three calls
        # have reached the server, so exactly three are in flight when the signals come.
        deadline = time.monotonic() + 30
        while emu.stats().requests < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        proc.communicate(timeout=30)
        assert time.monotonic() - started < 4  # did not wait out the 5 s answers or the grace
    assert proc.returncode == 130
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("queued", 6)]
    assert query(db, "SELECT COUNT(*) FROM calls WHERE outcome = 'cancelled'")[0][0] == 3


def test_ctrl_c_while_scanning_exits_130_with_a_line_and_loses_nothing(tmp_path: Path) -> None:
    # Enough photos that the scan (read + sha256 of each) is still running when SIGINT comes.
    folder = tmp_path / "photos"
    make_jpeg(folder / "seed.jpg", size=(64, 48))
    seed = (folder / "seed.jpg").read_bytes()
    for n in range(3000):
        (folder / f"copy-{n:04d}.jpg").write_bytes(seed + n.to_bytes(4, "big"))  # all distinct
    db = tmp_path / "scan.db"
    proc = spawn(
        [sys.executable, "-m", "dealscout_cli.cli", "snap", str(folder), "--offline", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    fds = Path(f"/proc/{proc.pid}/fd")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the moment it has a photo open, it is scanning
        try:
            if any(str(folder) in os.readlink(fd) for fd in fds.iterdir()):
                break
        except OSError:
            pass  # an fd closed while we looked
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr or "SIGINT received" in stderr  # scan, or the run just after
    if db.exists():
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
