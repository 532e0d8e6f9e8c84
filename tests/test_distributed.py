"""Distributed mode with real processes: redis-server, Celery workers, a coordinator, the emulator.

Each test starts its own redis-server on a free port and `dealscout worker` processes
whose environment points at the emulator served from this test process. The coordinator
runs as a subprocess too (it may be killed), and the truth is read from the SQLite
file, the emulator's stats and the workers' logs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import FAKE_KEY
from fleet import Workers, free_port, start_redis, stop, wait_until
from photo_factory import make_jpeg
from processes import spawn
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.emulator import Emulator, EmulatorConfig
from dealscout_cli.emulator.stats import StatsSnapshot
from dealscout_cli.store import Store

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


def start_coordinator(
    folder: Path,
    db: Path,
    broker: str,
    *,
    rpm: float | None = None,
    lease: float = 30,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """`dealscout snap --engine celery`, as a user runs it (no API key: the workers hold it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    command = [
        sys.executable,
        "-m",
        "dealscout_cli.cli",
        "snap",
        str(folder),
        "--engine",
        "celery",
        "--broker",
        broker,
        "--db",
        str(db),
        "--lease",
        str(lease),
        "--concurrency",
        "64",
        "--quiet",
        "--json",
    ]
    if rpm:
        command += ["--rpm", str(rpm)]
    command += extra
    return spawn(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def coordinate(folder: Path, db: Path, broker: str, **options: float | None) -> str:
    proc = start_coordinator(folder, db, broker, **options)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql).fetchall()


def served(emu: Emulator) -> int:
    return sum(emu.stats().requests_by_model.values())


# ---------------------------------------------------------------- tests


def test_two_workers_turn_every_item_into_a_listing(
    tmp_path: Path, photos: Path, redis_server: str, workers: Workers
) -> None:
    db = tmp_path / "fleet.db"
    with Emulator(EmulatorConfig(seed=1, latency=0.2)) as emu:
        pair = workers(emu.url, 2)
        coordinate(photos, db, redis_server)
        stats = emu.stats()
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", 6)]
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM listings")[0] == (6, 6)
    assert query(db, "SELECT stage, COUNT(*) FROM calls WHERE outcome = 'ok' GROUP BY stage") == [
        ("identify", 6),
        ("price", 6),
    ]
    assert (
        query(db, "SELECT COUNT(*) FROM calls WHERE input_tokens > 0 AND latency_ms > 0")[0][0]
        == 12
    )
    assert sum(stats.requests_by_model.values()) == 12
    assert set(stats.images_seen.values()) == {1}  # prepared bytes reached the model once each
    assert all("succeeded" in p.log_path.read_text() for p in pair)  # both workers did some


def test_fleet_status_sees_workers_and_queue(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    from dealscout_cli.distributed.status import fleet_status

    with Emulator(EmulatorConfig(seed=1)) as emu:
        workers(emu.url, 1)
        report = fleet_status(redis_server)
        Store.open(tmp_path / "d.db").close()
        shown = CliRunner().invoke(
            app, ["status", "--json", "--broker", redis_server, "--db", str(tmp_path / "d.db")]
        )
    assert report["reachable"] and report["queue_depth"] == 0
    assert [w["name"] for w in report["workers"]] == ["w0@test"]
    assert json.loads(shown.stdout)["fleet"]["workers"][0]["name"] == "w0@test"
    down = fleet_status(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    assert not down["reachable"] and "cannot reach" in down["error"]


def test_flower_monitors_the_workers_and_their_tasks(
    tmp_path: Path, photos: Path, redis_server: str, workers: Workers
) -> None:
    import httpx

    port = free_port()
    env = {**os.environ, "DEALSCOUT_BROKER": redis_server, "FLOWER_UNAUTHENTICATED_API": "1"}
    log = (tmp_path / "flower.log").open("w")
    flower = spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dealscout_cli.distributed.app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"

    def get(path: str) -> dict:
        try:
            return httpx.get(f"{api}/{path}", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}

    try:
        with Emulator(EmulatorConfig(seed=1)) as emu:
            [worker] = workers(emu.url, 1)
            wait_until(
                lambda: "w0@test" in get("workers?refresh=1"), 60, "Flower to see the worker"
            )
            # Workers send no task events until a monitor asks; Flower asks every few seconds.
            wait_until(
                lambda: "Events of group {task} enabled" in worker.log_path.read_text(),
                60,
                "Flower to switch the worker's task events on",
            )
            coordinate(photos, tmp_path / "flower.db", redis_server)
            wait_until(
                lambda: sum(t["state"] == "SUCCESS" for t in get("tasks").values()) == 6,
                30,
                "Flower to see six finished tasks",
            )
        tasks = get("tasks").values()
        assert {t["name"] for t in tasks} == {"dealscout.process_item"}
        assert {t["worker"] for t in tasks} == {"w0@test"}
    finally:
        stop(flower, group=True)
        log.close()


def test_worker_killed_mid_task_is_redelivered_and_recorded_once(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    folder, db = make_items(tmp_path / "p", 4), tmp_path / "fleet.db"
    # Tasks take ~3 s (two calls of 1.5 s); the test's visibility timeout is 6 s (production: 600 s).
    with Emulator(EmulatorConfig(seed=2, latency=1.5)) as emu:
        victim, survivor = workers(emu.url, 2, visibility=6)
        coordinator = start_coordinator(folder, db, redis_server)
        wait_until(lambda: "received" in victim.log_path.read_text(), 30, "a task on the victim")
        time.sleep(0.5)  # mid-call
        os.killpg(victim.pid, signal.SIGKILL)
        stdout, stderr = coordinator.communicate(timeout=90)
        assert coordinator.returncode == 0, stderr
    killed_task = victim.log_path.read_text().split("dealscout.process_item[")[1].split("]")[0]
    assert killed_task in survivor.log_path.read_text()  # redelivered to the other worker
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", 4)]
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM listings")[0] == (4, 4)
    ok = query(
        db, "SELECT COUNT(*), COUNT(DISTINCT item_id || stage) FROM calls WHERE outcome = 'ok'"
    )
    assert ok[0][0] == ok[0][1] == 8  # each stage recorded once per item


def fleet_against_a_quota(
    tmp_path: Path, redis_server: str, workers: Workers, items: int, rpm: float | None = None
) -> tuple[StatsSnapshot, float, Path]:
    """`items` through three workers x 2 against an emulator quota of 100 requests per 10 s
    window per model (600 RPM, 10x shorter than Google's minute so the test is quick)."""
    folder, db = make_items(tmp_path / "p", items), tmp_path / "fleet.db"
    quota = EmulatorConfig(seed=3, rpm=100, window_seconds=10, latency=0.05)
    with Emulator(quota) as emu:
        workers(emu.url, 3, concurrency=2)
        started = time.monotonic()
        coordinate(folder, db, redis_server, rpm=rpm)
        return emu.stats(), time.monotonic() - started, db


def test_three_workers_share_one_rate_limit(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    items = 120
    # The fleet is told 95 per 10 s = 570 RPM: a GCRA spaced exactly at the quota can still
    # land 101 arrivals in a window when network jitter bunches two of them, so like any
    # client it keeps a small margin.
    stats, elapsed, db = fleet_against_a_quota(tmp_path, redis_server, workers, items, rpm=570)
    peaks = stats.max_requests_per_window_by_model
    print(f"fleet peaks per 10 s window: {peaks} (limit 100), {elapsed:.1f} s for {items} items")
    assert peaks and all(peak <= 100 for peak in peaks.values())
    assert stats.rate_limited == {}
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", items)]
    assert elapsed > (items - 95) / 9.5  # the limiter, not the workers' speed, set the pace


def test_three_workers_without_rpm_keep_to_the_quota_by_the_shared_retry_info_pause(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    # No --rpm: nothing spaces the starts. The first 429's RetryInfo (until the server's
    # window has room) pauses the whole fleet, so each window fills and nobody hammers.
    items = 200
    stats, elapsed, db = fleet_against_a_quota(tmp_path, redis_server, workers, items)
    answered = stats.requests_by_status
    print(f"no --rpm: {answered} in {elapsed:.1f} s for {items} items (ideal {items / 10:.0f} s)")
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", items)]
    assert answered.get(429, 0) <= 0.05 * sum(answered.values())
    assert elapsed < 2 * items / 10  # near the quota's pace (measured: 25.6 s for 240 items)


def test_rerun_after_coordinator_killed_collects_finished_results_without_new_calls(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    items = 8
    folder, db = make_items(tmp_path / "p", items), tmp_path / "fleet.db"
    with Emulator(EmulatorConfig(seed=4, latency=0.3)) as emu:
        workers(emu.url, 2, concurrency=2)
        first = start_coordinator(folder, db, redis_server, lease=2)
        wait_until(lambda: db.exists() and served(emu) >= 4, 30, "the first results")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        wait_until(lambda: served(emu) == 2 * items, 30, "the fleet to finish every task")
        recorded_before = query(db, "SELECT COUNT(*) FROM calls")[0][0]
        assert query(db, "SELECT COUNT(*) FROM listings")[0][0] < items
        time.sleep(2.1)  # the killed coordinator's leases expire
        coordinate(folder, db, redis_server, lease=2)
        assert served(emu) == 2 * items  # nothing paid twice
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", items)]
    assert query(db, "SELECT COUNT(*) FROM calls WHERE outcome = 'ok'")[0][0] == 2 * items
    assert recorded_before < 2 * items  # the rerun recorded the calls the killed run had not


def test_redis_limiter_spaces_starts_across_clients_and_shares_pauses(redis_server: str) -> None:
    import anyio
    import redis

    from dealscout_cli.distributed.ratelimit import RedisLimits

    first, second = redis.Redis.from_url(redis_server), redis.Redis.from_url(redis_server)
    try:
        a = RedisLimits(first, rpm=600).for_model("m")  # one start per 0.1 s, fleet-wide
        b = RedisLimits(second, rpm=600).for_model("m")
        starts: list[float] = []

        async def take(limiter, n: int) -> None:
            for _ in range(n):
                await limiter.acquire()
                starts.append(time.monotonic())

        async def both() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(take, a, 10)
                tg.start_soon(take, b, 10)

        anyio.run(both)
        ordered = sorted(starts)
        gaps = [later - earlier for earlier, later in zip(ordered, ordered[1:], strict=False)]
        assert min(gaps) > 0.08 and 1.7 < ordered[-1] - ordered[0] < 2.5

        permit = anyio.run(a.acquire)
        a.record(
            permit, outcome="rate_limited", retry_after=1.0
        )  # a 429 with retryDelay 1s on one worker
        assert b.ready_in() > 0.8  # ... holds back every other worker too
        began = time.monotonic()
        anyio.run(b.acquire)
        assert time.monotonic() - began > 0.8
    finally:
        first.close()
        second.close()


def test_a_task_delivered_twice_pays_once_and_is_recorded_once(
    tmp_path: Path, photos: Path, redis_server: str, workers: Workers
) -> None:
    """A duplicate message for finished work (a resend, or redelivery after the ack was lost)."""
    import redis

    from dealscout_cli.distributed.app import TASK_NAME, make_app

    db = tmp_path / "fleet.db"
    with Emulator(EmulatorConfig(seed=5)) as emu:
        (worker,) = workers(emu.url, 1)
        coordinate(photos, db, redis_server)
        before = served(emu)
        client = redis.Redis.from_url(redis_server)
        celery = make_app(redis_server)
        try:
            task_id = next(
                k.decode().removeprefix("celery-task-meta-")
                for k in client.scan_iter("celery-task-meta-*")
            )
            # an empty payload: the task must answer from the result backend, not from it
            celery.send_task(TASK_NAME, args=[{}], task_id=task_id)
            done = f"[{task_id}] succeeded"
            wait_until(
                lambda: worker.log_path.read_text().count(done) == 2, 15, "the duplicate's answer"
            )
        finally:
            celery.close()
            client.close()
        assert served(emu) == before
    assert query(db, "SELECT COUNT(*) FROM calls")[0][0] == before


def jobs_in_state(db: Path, state: str) -> int:
    """How many jobs are in `state`; 0 while the coordinator is still creating the file."""
    try:
        return (
            query(db, f"SELECT COUNT(*) FROM jobs WHERE state = '{state}'")[0][0]
            if db.exists()
            else 0
        )
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return 0


def test_coordinator_that_loses_redis_stops_cleanly_and_gives_the_jobs_back(tmp_path: Path) -> None:
    redis_proc, broker = start_redis(tmp_path)
    db = tmp_path / "lost.db"
    folder = make_items(tmp_path / "photos", 5)
    # No workers: the tasks wait in Redis, the coordinator polls for their results.
    proc = start_coordinator(folder, db, broker)
    try:
        wait_until(
            lambda: jobs_in_state(db, "running") == 5, 60, "the coordinator to send all five"
        )
    finally:
        redis_proc.kill()
        redis_proc.wait(timeout=10)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr  # stopped early: run again
    assert "Traceback" not in stderr
    assert "lost the broker" in json.loads(stdout)["run"]["stop_reason"]
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("queued", 5)]


def test_snap_with_no_redis_listening_fails_in_one_line_before_claiming(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    folder = make_items(tmp_path / "photos", 2)
    proc = start_coordinator(folder, db, f"redis://:secret@127.0.0.1:{free_port()}/0")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "error: cannot reach the broker at redis://:***@127.0.0.1:" in stderr
    assert "secret" not in stderr and "Traceback" not in stderr
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("queued", 2)]


def test_a_worker_whose_key_is_rejected_stops_the_run_and_fails_no_item(
    tmp_path: Path, photos: Path, redis_server: str, workers: Workers
) -> None:
    db = tmp_path / "key.db"
    with Emulator(EmulatorConfig(seed=1, api_key="the-real-key")) as emu:  # workers hold another
        workers(emu.url, 1)
        proc = start_coordinator(photos, db, redis_server)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr  # as a local run: stopped early, fix the key, run again
    assert "on a worker: the API key was rejected" in json.loads(stdout)["run"]["stop_reason"]
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("queued", 6)]
    assert FAKE_KEY not in stdout + stderr


def test_worker_without_a_key_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "dealscout_cli.cli", "worker",
         "--broker", f"redis://127.0.0.1:{free_port()}/0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no Gemini API key for this worker: set GEMINI_API_KEY" in done.stderr


def test_max_cost_stops_the_fleet_claiming_before_the_budget_is_passed(
    tmp_path: Path, photos: Path, redis_server: str, workers: Workers
) -> None:
    db = tmp_path / "budget.db"
    with Emulator(EmulatorConfig(seed=1)) as emu:
        workers(emu.url, 1)
        # The budget counts the items out at full price: it stops sending before it is passed.
        command = start_coordinator(photos, db, redis_server, extra=("--max-cost", "0.02"))
        stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 3, stderr
    assert "raise --max-cost to go on" in json.loads(stdout)["run"]["stop_reason"]
    report = json.loads(CliRunner().invoke(app, ["status", "--json", "--db", str(db)]).stdout)
    assert 1 <= report["counts"]["done"] < 6 and report["counts"]["queued"] >= 1
    assert report["counts"]["running"] == 0  # the items out came back before it stopped
    assert report["cost_micro_usd"] <= 20000
    print(
        f"fleet under --max-cost 0.02: {report['counts']}, spent {report['cost_micro_usd']} micro-USD"
    )
