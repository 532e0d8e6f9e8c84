"""`status` and the other commands that only read: the pace of a run and its ETA (with an
injected clock), and proof that reading never writes, on real databases made by `snap`.

Tests run as root here, and root ignores permission bits: a chmod alone proves nothing. So
the "never writes" tests compare the file's bytes, its mtime and the files beside it before
and after, on a copy whose journal mode (DELETE) any write-mode open would change; and the
read-only-folder tests run the CLI under `setpriv` without the capabilities that let root
ignore permissions (as another user, the bits apply as they are).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress
from test_store import IDENT, PRICE, found_item
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.cli.progress import EtaColumn
from dealscout_cli.cli.render import about, status_table
from dealscout_cli.errors import StoreError
from dealscout_cli.status import status_report
from dealscout_cli.store import Store
from dealscout_cli.store.schema import MIGRATIONS, MIGRATIONS_TABLE

runner = CliRunner()
T0 = 1_800_000_000.0  # the injected clock's start (unix seconds)


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- pace and ETA


def finish_items(store: Store, run_id: int, times: list[float], *, first: int = 1) -> None:
    """One item per time in `times`, claimed and completed at that moment."""
    store.enqueue([found_item(first + n) for n in range(len(times))], now=times[0] - 1)
    for moment in times:
        lease = store.claim_next_job("w", now=moment - 0.5, lease_seconds=30)
        assert lease is not None
        store.complete(
            lease,
            now=moment,
            run_id=run_id,
            identification=IDENT,
            price=PRICE,
            prompt_version="t",
            vision_model="v",
            pricing_model="p",
            offline=False,
        )


def start_run(store: Store, *, at: float, seen: float) -> int:
    run_id = store.start_run(f"owner-{at}", {}, offline=False, now=at)
    store.update_run_limits(run_id, [], now=seen)
    return run_id


def test_a_short_run_is_paced_over_the_time_it_has_run(db: Path) -> None:
    # the run: 1.03 items/s for 45 s; before, 46 items over "5 min" and an ISO ETA
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 45)
        finish_items(store, run_id, [T0 + 45 * (n + 1) / 46 for n in range(46)])
        store.enqueue([found_item(100 + n) for n in range(20)], now=T0 + 45)
        report = status_report(store, now=T0 + 45)
    assert report["throughput_items_per_minute"] == pytest.approx(46 / 45 * 60, abs=0.01)
    assert report["throughput_window_seconds"] == 45
    assert report["eta_seconds"] == round(20 * 45 / 46)  # 20 s, not half an hour


def test_a_long_run_is_paced_over_the_last_five_minutes(db: Path) -> None:
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 3600)
        slow = [T0 + 60 * n for n in range(1, 11)]  # 10 items in the first ten minutes
        fast = [T0 + 3300 + 10 * n for n in range(1, 31)]  # 30 in the last five
        finish_items(store, run_id, slow + fast)
        store.enqueue([found_item(200 + n) for n in range(12)], now=T0 + 3600)
        report = status_report(store, now=T0 + 3600)
    assert report["throughput_items_per_minute"] == pytest.approx(6.0)
    assert report["throughput_window_seconds"] == 300
    assert report["eta_seconds"] == 120  # 12 left at 6 a minute


def test_failed_items_count_as_finished(db: Path) -> None:
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 20)
        finish_items(store, run_id, [T0 + 5, T0 + 10])
        store.enqueue([found_item(50), found_item(51)], now=T0)
        lease = store.claim_next_job("w", now=T0 + 11, lease_seconds=30)
        assert lease is not None
        store.fail(lease, now=T0 + 12, kind="bad_output", error="x", retryable=False)
        report = status_report(store, now=T0 + 20)
    assert report["throughput_items_per_minute"] == pytest.approx(9.0)  # 3 in 20 s
    assert report["eta_seconds"] == round(1 * 20 / 3)


def test_no_throughput_or_eta_once_the_run_has_ended(db: Path) -> None:
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 30)
        finish_items(store, run_id, [T0 + n for n in range(1, 11)])
        store.enqueue([found_item(300)], now=T0 + 30)  # left queued by a stopped run
        store.finish_run(run_id, "stopped", {}, now=T0 + 31)
        report = status_report(store, now=T0 + 40)
    assert report["active_runs"] == 0
    assert report["throughput_items_per_minute"] is None and report["eta_seconds"] is None
    assert "none: no run is active" in table_text(report)
    assert "│ eta " not in table_text(report)


def test_no_eta_when_nothing_is_left(db: Path) -> None:
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 30)
        finish_items(store, run_id, [T0 + n for n in range(1, 11)])
        report = status_report(store, now=T0 + 30)
    assert report["throughput_items_per_minute"] == pytest.approx(20.0)
    assert report["eta_seconds"] is None


def test_no_eta_before_a_few_items_have_finished(db: Path) -> None:
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 2)
        finish_items(store, run_id, [T0 + 1])
        store.enqueue([found_item(400 + n) for n in range(50)], now=T0)
        report = status_report(store, now=T0 + 2)
    assert report["eta_seconds"] is None


def test_a_run_whose_clock_runs_ahead_gives_no_negative_pace(db: Path) -> None:
    # a fleet host a minute ahead: its run "started" after our now
    with Store.open(db) as store:
        run_id = start_run(store, at=T0 + 60, seen=T0 + 60)
        finish_items(store, run_id, [T0 + 61, T0 + 62, T0 + 63])
        store.enqueue([found_item(500)], now=T0)
        report = status_report(store, now=T0)
    assert report["throughput_window_seconds"] == 1.0
    assert report["throughput_items_per_minute"] >= 0 and report["eta_seconds"] >= 0


def table_text(report: dict[str, Any]) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(status_table(report))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_table_shows_the_eta_as_a_duration(db: Path) -> None:
    with Store.open(db) as store:
        run_id = start_run(store, at=T0, seen=T0 + 45)
        finish_items(store, run_id, [T0 + 45 * (n + 1) / 46 for n in range(46)])
        store.enqueue([found_item(100 + n) for n in range(200)], now=T0 + 45)
        report = status_report(store, now=T0 + 45)
    text = table_text(report)
    assert "61.3 items/min over the last 45 s" in text
    # 200 left at 1.02 a second: 196 s
    eta_row = next(line for line in text.splitlines() if "│ eta " in line)
    assert "about 3 min" in eta_row and ":" not in eta_row  # a duration, not a UTC time


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, "a few seconds"),
        (9.9, "a few seconds"),
        (19.6, "about 20 s"),
        (57.4, "about 55 s"),
        (59, "about 1 min"),
        (196, "about 3 min"),
        (3599, "about 1 h"),
        (7500, "about 2 h 5 min"),
        (10 * 86400, "about 240 h"),
    ],
)
def test_time_left_reads_as_people_say_it(seconds: float, said: str) -> None:
    assert about(seconds) == said


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bar_eta(clock: Clock, progress: Progress) -> str:
    return EtaColumn().render(progress.tasks[0]).plain


def test_the_bar_shows_no_eta_until_a_few_items_have_finished() -> None:
    # before, rich guessed from the first completions: 2 items 20 ms apart read 0:00:02 for 98 left
    clock = Clock()
    progress = Progress(EtaColumn(), get_time=clock, console=Console(file=io.StringIO()))
    task = progress.add_task("snap", total=100)
    clock.now = 10.0
    progress.update(task, completed=1)
    clock.now = 10.02
    progress.update(task, completed=2)
    assert bar_eta(clock, progress) == "-:--:--"
    clock.now = 12.0
    progress.update(task, completed=4)
    assert bar_eta(clock, progress) == "0:04:48"  # 96 left at 4 per 12 s


# ---------------------------------------------------------------- reading never writes


def made_by_snap(photos: Path, db: Path) -> Path:
    db.parent.mkdir(exist_ok=True)
    result = run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    assert result.exit_code == 0, result.output
    return db


def backup_in_delete_mode(source: Path, copy: Path) -> Path:
    """A copy made with SQLite's backup, in the DELETE journal mode a write-mode open changes."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    assert journal_mode(copy) == "delete"
    return copy


def journal_mode(path: Path) -> str:
    """The mode as SQLite reports it (`mode=ro`: on a DELETE file this creates nothing)."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def state_of(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes, its mtime and what lies beside it (a -wal, -shm or -journal)."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


READING_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["listings"],
    ["listings", "--json"],
    ["listings", "--item", "1"],
    ["export"],
    ["export", "--format", "jsonl", "--include-offline"],
]


def test_reading_commands_leave_a_backup_byte_identical(
    photos: Path, db: Path, tmp_path: Path
) -> None:
    copy = backup_in_delete_mode(made_by_snap(photos, db), tmp_path / "backup" / "copy.db")
    before = state_of(copy)
    for command in READING_COMMANDS:
        result = run(*command, "--db", str(copy))
        assert result.exit_code == 0, (command, result.output)
        assert state_of(copy) == before, command
    assert journal_mode(copy) == "delete"
    assert json.loads(run("status", "--json", "--db", str(copy)).stdout)["counts"]["done"] == 6


def test_reading_a_wal_database_leaves_nothing_beside_it(photos: Path, tmp_path: Path) -> None:
    db = made_by_snap(photos, tmp_path / "shop" / "dealscout.db")
    before = state_of(db)
    assert before[0][18:20] == b"\x02\x02"  # the header says WAL
    assert before[2] == ["dealscout.db"]  # snap's last connection removed its -wal and -shm
    for command in READING_COMMANDS:
        assert run(*command, "--db", str(db)).exit_code == 0, command
        assert state_of(db) == before, command


def test_status_sees_what_a_live_run_has_written(db: Path) -> None:
    # a run holding the file open: its writes sit in the -wal, which the reader must read
    with Store.open(db) as live:
        live.enqueue([found_item(n) for n in range(1, 8)], now=T0)
        assert db.with_name(db.name + "-wal").exists()
        report = json.loads(run("status", "--json", "--db", str(db)).stdout)
        assert report["counts"]["queued"] == 7
        live.enqueue([found_item(8)], now=T0)
        report = json.loads(run("status", "--json", "--db", str(db)).stdout)
        assert report["counts"]["queued"] == 8


def as_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child that permission bits apply to. As root (as here) `setpriv` drops
    the capabilities that let root ignore them; the child keeps this environment."""
    command = [sys.executable, "-m", "dealscout_cli.cli", *args]
    if os.geteuid() == 0:
        drop = "--bounding-set=-dac_override,-dac_read_search,-fowner"
        command = ["setpriv", "--inh-caps=-all", drop, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def read_only_shop(photos: Path, tmp_path: Path):
    """A database made by snap, in a folder where neither the file nor the folder is writable."""
    db = made_by_snap(photos, tmp_path / "shop" / "dealscout.db")
    db.chmod(0o444)
    db.parent.chmod(0o555)
    probe = as_unprivileged("--help")
    assert probe.returncode == 0, probe.stderr
    yield db
    db.parent.chmod(0o755)


def test_the_fixture_folder_really_refuses_writes(read_only_shop: Path) -> None:
    # the proof that the tests below run where writes fail: the writer is refused there
    result = as_unprivileged("retry", "--all", "--db", str(read_only_shop))
    assert result.returncode == 1 and "read-only" in result.stderr


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_reading_commands_work_in_a_read_only_folder(
    read_only_shop: Path, command: list[str]
) -> None:
    before = state_of(read_only_shop)
    result = as_unprivileged(*command, "--db", str(read_only_shop))
    assert result.returncode == 0, result.stderr
    assert state_of(read_only_shop) == before


def test_status_reads_another_users_live_database(photos: Path, tmp_path: Path) -> None:
    # the owner's run is writing; we may read its files but write none of them
    db = made_by_snap(photos, tmp_path / "shop" / "dealscout.db")
    with Store.open(db) as live:
        live.enqueue([found_item(n) for n in range(1, 4)], now=T0)
        for path in db.parent.iterdir():
            path.chmod(0o444)
        db.parent.chmod(0o555)
        try:
            result = as_unprivileged("status", "--json", "--db", str(db))
        finally:
            db.parent.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["queued"] == 3


def test_a_log_without_its_shm_in_a_read_only_folder_is_a_clear_error(
    photos: Path, tmp_path: Path
) -> None:
    # what a run killed mid-write leaves, copied without its -shm into a read-only folder
    db = made_by_snap(photos, tmp_path / "shop" / "dealscout.db")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with Store.open(db) as live:
        live.enqueue([found_item(1)], now=T0)
        for name in ("dealscout.db", "dealscout.db-wal"):
            (crashed / name).write_bytes((db.parent / name).read_bytes())
    crashed.chmod(0o555)
    try:
        result = as_unprivileged("status", "--db", str(crashed / "dealscout.db"))
    finally:
        crashed.chmod(0o755)
    assert result.returncode == 1
    assert "dealscout.db-shm" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(crashed)) == ["dealscout.db", "dealscout.db-wal"]


def older_database(path: Path) -> Path:
    """A file an older release made: only the first migration applied."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"CREATE TABLE {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)")
        name, sql = MIGRATIONS[0]
        conn.executescript(sql)
        conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", [name, "2025-01-01"])
    return path


def test_an_older_database_is_named_with_its_upgrade_and_left_as_it_is(db: Path) -> None:
    before = state_of(older_database(db))
    for command in (["status"], ["listings"], ["export"]):
        result = run(*command, "--db", str(db))
        assert result.exit_code == 1
        assert "older dealscout" in result.output and "dealscout snap" in result.output
    assert state_of(db) == before


def test_an_empty_file_says_there_is_no_data_yet_and_stays_empty(db: Path) -> None:
    db.touch()
    result = run("status", "--db", str(db))
    assert result.exit_code == 1 and "no dealscout data yet" in result.output
    assert db.read_bytes() == b""


def test_another_apps_database_is_named_as_such(db: Path) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(StoreError, match="not a dealscout database"):
        Store.open_read_only(db)


def test_a_missing_database_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no database at .*run `dealscout snap PHOTOS`"):
        Store.open_read_only(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("name", ["shop #1 ?50% off.db", "caf\u00e9 [x].db", "a%20b.db"])
def test_odd_file_names_open_read_only(photos: Path, tmp_path: Path, name: str) -> None:
    # the read-only open goes through a URI: "?", "#" and "%" must reach SQLite as a name
    db = made_by_snap(photos, tmp_path / "odd" / name)
    before = state_of(db)
    result = run("status", "--json", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["done"] == 6
    assert state_of(db) == before
