"""A worker lost mid-run (issue #15): its items go out again in seconds, not after the
visibility timeout, and everything paid for is recorded once.

Real redis-server, real `dealscout worker` processes with the PRODUCTION visibility timeout
(600 s: nothing here sets DEALSCOUT_VISIBILITY_TIMEOUT), a real coordinator, the emulator
with some latency. The kill-to-resend time is printed (run with -s to see it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
from fleet import Workers, wait_until
from test_distributed import make_items, query, served, start_coordinator
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.distributed.app import VISIBILITY_TIMEOUT
from dealscout_cli.distributed.heartbeat import BEAT_EXPIRES
from dealscout_cli.distributed.status import fleet_status
from dealscout_cli.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.slow

ITEMS = 40


def first_resend(broker: str, since: float, timeout: float) -> tuple[float, float]:
    """Seconds from `since` until the coordinator sent an item again, and until a worker
    started that copy."""
    client = redis.Redis.from_url(broker)

    def copies() -> list[str]:
        keys = list(client.scan_iter("dealscout:superseded:*"))
        return [v.decode() for v in client.mget(keys)] if keys else []

    def started() -> bool:
        return any(client.exists(f"celery-task-meta-{copy}") for copy in copies())

    try:
        wait_until(lambda: bool(copies()), timeout, "an item sent again")
        resent = time.monotonic() - since
        wait_until(started, timeout, "a copy started")
        return resent, time.monotonic() - since
    finally:
        client.close()


def holds_items(worker: subprocess.Popen) -> bool:
    return worker.log_path.read_text().count("received") >= 2  # type: ignore[attr-defined]


def finish(coordinator: subprocess.Popen, within: float) -> None:
    stdout, stderr = coordinator.communicate(timeout=within)
    assert coordinator.returncode == 0, stderr


def assert_each_item_listed_once(db: Path) -> None:
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", ITEMS)]
    assert query(db, "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM listings")[0] == (ITEMS, ITEMS)


def test_killed_worker_items_run_again_within_a_minute_and_are_recorded_once(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    assert VISIBILITY_TIMEOUT >= 600  # the fallback stays far beyond this test's minute
    folder, db = make_items(tmp_path / "p", ITEMS), tmp_path / "fleet.db"
    with Emulator(EmulatorConfig(seed=7, latency=0.4)) as emu:
        victim, survivor = workers(emu.url, 2, concurrency=2, visibility=None)
        coordinator = start_coordinator(folder, db, redis_server)
        wait_until(lambda: holds_items(victim), 60, "items on the victim")
        time.sleep(0.3)  # mid-call
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        resent_after, running_after = first_resend(redis_server, killed, 50)
        finish(coordinator, 60)
        done_after = time.monotonic() - killed
        report = fleet_status(redis_server)
        shown = CliRunner().invoke(app, ["status", "--broker", redis_server, "--db", str(db)])
        recorded = query(db, "SELECT COUNT(*) FROM calls")[0][0]
        assert served(emu) >= recorded  # a call cut off by the kill was served, never recorded
    print(
        f"\nkilled worker: items sent again {resent_after:.1f} s after the kill, running "
        f"again after {running_after:.1f} s; "
        f"run finished {done_after:.1f} s after it"
    )
    assert resent_after < BEAT_EXPIRES + 5
    assert running_after < BEAT_EXPIRES + 5  # ahead of the queue, not behind the other items
    assert done_after < 60
    assert_each_item_listed_once(db)
    ok = query(
        db, "SELECT COUNT(*), COUNT(DISTINCT item_id || stage) FROM calls WHERE outcome = 'ok'"
    )
    assert ok[0][1] == 2 * ITEMS and ok[0][0] >= 2 * ITEMS
    lost = {w["name"]: w for w in report["workers"]}
    assert lost["w0@test"]["lost"] and lost["w0@test"]["resent"]
    assert not lost["w1@test"]["lost"] and lost["w1@test"]["last_heartbeat_ago"] < 5
    assert set(lost["w0@test"]["resent"]) <= {
        label for (label,) in query(db, "SELECT label FROM items")
    }
    assert "LOST" in shown.stdout and lost["w0@test"]["resent"][0] in shown.stdout


def test_frozen_worker_late_answers_are_recorded_once_with_their_extra_calls(
    tmp_path: Path, redis_server: str, workers: Workers
) -> None:
    folder, db = make_items(tmp_path / "p", ITEMS), tmp_path / "fleet.db"
    with Emulator(EmulatorConfig(seed=8, latency=0.4)) as emu:
        victim, survivor = workers(emu.url, 2, concurrency=2, visibility=None)
        coordinator = start_coordinator(folder, db, redis_server)
        wait_until(lambda: holds_items(victim), 60, "items on the victim")
        time.sleep(0.3)
        os.killpg(victim.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            resent_after, _ = first_resend(redis_server, frozen, 30)
            time.sleep(max(0.0, BEAT_EXPIRES + 3 - (time.monotonic() - frozen)))
        finally:
            os.killpg(victim.pid, signal.SIGCONT)
        finish(coordinator, 60)
        paid = served(emu)
    print(f"\nfrozen worker: items sent again {resent_after:.1f} s after SIGSTOP")
    assert_each_item_listed_once(db)
    calls = query(db, "SELECT COUNT(*) FROM calls")[0][0]
    assert calls == paid  # every call paid for is in the record, the late ones too, once
    ok = query(
        db, "SELECT COUNT(*), COUNT(DISTINCT item_id || stage) FROM calls WHERE outcome = 'ok'"
    )
    assert ok[0][1] == 2 * ITEMS
    assert ok[0][0] > 2 * ITEMS  # the frozen worker's late answers: extra calls, counted
    assert "succeeded" in victim.log_path.read_text()  # type: ignore[attr-defined]


def test_a_worker_that_stops_holding_tasks_is_lost_at_once_and_one_that_finished_is_gone(
    redis_server: str,
) -> None:
    from dealscout_cli.distributed.heartbeat import (
        WorkerBeat,
        lost_holders,
        mark_resent,
        released,
        worker_beats,
    )

    client = redis.Redis.from_url(redis_server)
    try:
        cold, warm = (
            WorkerBeat(client, "cold@h", every=0.1),
            WorkerBeat(client, "warm@h", every=0.1),
        )
        cold.start()
        warm.start()
        cold.holds("t1")
        warm.holds("t2")
        released(client, "warm@h", "t2")
        assert lost_holders(client) == {}
        cold.stop()  # a second Ctrl-C: still holding t1
        warm.stop()  # a warm stop: holds nothing
        assert lost_holders(client) == {"cold@h": {"t1"}}
        mark_resent(client, "cold@h", "t1", "red mug\x1b[2J")
        (shown,) = worker_beats(client, time.time())
        assert shown["name"] == "cold@h" and shown["lost"] and shown["holds"] == ["t1"]
        assert shown["resent"] == ["red mug\x1b[2J"]  # the CLI shows it through printable()
    finally:
        client.close()
