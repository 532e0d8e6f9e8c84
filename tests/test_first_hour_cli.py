"""A reseller's first hour at the command line: hints that work when pasted, one line instead of
a traceback, a `retry` that says what it did, JSON where JSON was asked for, and help that reads
well. Real SQLite files, real photos, the real client against the emulator."""

from __future__ import annotations

import json
import os
import re
import shlex
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
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.config import Settings
from dealscout_cli.emulator import Emulator, EmulatorConfig
from dealscout_cli.errors import ErrorKind

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql).fetchall()


def photos_in(folder: Path, count: int) -> Path:
    for n in range(count):
        make_jpeg(folder / f"item-{n}.jpg", kind=("mug", "book", "lamp")[n % 3], seed=n)
    return folder


def hint_in(text: str, after: str) -> list[str]:
    """The command in backquotes after `after`, split as a shell would."""
    match = re.search(re.escape(after) + r"[^`]*`([^`]+)`", text)
    assert match, text
    return shlex.split(match.group(1))


# ---------------------------------------------------------------- 4: the resume hint


def test_a_stopped_run_names_a_resume_command_that_works_when_pasted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, db = photos_in(tmp_path / "p", 3), tmp_path / "my shop.db"  # a space: quoted
    with Emulator(EmulatorConfig(seed=7, api_key="the-right-key")) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        stopped = run("snap", str(folder), "--db", str(db), "--base-url", emu.url)
        assert stopped.exit_code == 3, stopped.output
        command = hint_in(stopped.output, "to resume:")
        assert command[:2] == ["dealscout", "snap"] and str(folder) not in command
        assert command[command.index("--db") + 1] == str(db)
        monkeypatch.setenv("GEMINI_API_KEY", "the-right-key")
        resumed = run(*command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", 3)]


def test_snap_without_paths_processes_what_is_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, db = photos_in(tmp_path / "p", 2), tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=7, api_key="the-right-key")) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        assert run("snap", str(folder), "--db", str(db), "--base-url", emu.url).exit_code == 3
    result = run("snap", "--db", str(db), "--offline")
    assert result.exit_code == 0, result.output
    assert "Missing argument" not in result.output
    assert query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", 2)]
    assert "Without PATHS, processes what is already queued" in run("snap", "--help").output


def test_snap_without_paths_and_no_database_says_what_to_pass(tmp_path: Path) -> None:
    result = run("snap", "--db", str(tmp_path / "none.db"), "--offline")
    assert result.exit_code == 2
    assert "no database at" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "none.db").exists()


def test_the_resume_command_repeats_how_the_run_was_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from dealscout_cli.snap import resume_command

    assert resume_command(Settings()) == "dealscout snap"
    offline = resume_command(Settings(db_path=Path("shop 1.db"), offline=True))
    assert shlex.split(offline) == ["dealscout", "snap", "--db", "shop 1.db", "--offline"]
    batch = Settings(engine="batch", vision_model="gemini-2.5-flash", barcodes=False)
    assert shlex.split(resume_command(batch)) == [
        "dealscout", "snap", "--vision-model", "gemini-2.5-flash", "--batch", "--no-barcodes",
    ]  # fmt: skip
    fleet = Settings(engine="celery", broker="redis://:s3cret@host:6379/0")
    monkeypatch.setenv("DEALSCOUT_BROKER", "redis://:s3cret@host:6379/0")
    shown = resume_command(fleet)
    assert "s3cret" not in shown and "--broker $DEALSCOUT_BROKER" in shown


def test_ctrl_c_says_a_second_one_cancels_and_how_to_resume(tmp_path: Path) -> None:
    folder, db, log = photos_in(tmp_path / "p", 2), tmp_path / "d.db", tmp_path / "run.log"
    with Emulator(EmulatorConfig(seed=4, latency=1.5)) as emu:
        url = emu.url
        env = {**os.environ, "GEMINI_API_KEY": FAKE_KEY}
        command = [sys.executable, "-m", "dealscout_cli.cli", "snap", str(folder), "--db",
                   str(db), "--base-url", emu.url, "--concurrency", "1", "--log-file", str(log)]  # fmt: skip
        proc = spawn(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while emu.stats().requests < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = log.read_text().splitlines()
    stopping = next(line for line in lines if "stopping:" in line)
    assert "press Ctrl-C again to cancel at once" in stopping
    # Every log line starts with an ISO time that says its zone.
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z) ", x) for x in lines)
    resume = hint_in(stderr, "to resume:")
    assert resume[resume.index("--db") + 1] == str(db)
    assert resume[resume.index("--base-url") + 1] == url


# ---------------------------------------------------------------- 5: one line, not a traceback


def test_export_to_a_missing_folder_or_onto_a_folder_is_one_line(
    photos: Path, tmp_path: Path
) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    missing = run("export", "-o", str(tmp_path / "missing" / "out.csv"))
    assert missing.exit_code == 2
    assert "does not exist" in missing.output and "missing" in missing.output
    onto = run("export", "-o", str(tmp_path))
    assert onto.exit_code == 2 and "is a folder" in onto.output


@pytest.mark.parametrize(
    "price", ['"abc"', '"NaN"', "-1", '"Infinity"', "true", "null", '"1,5"'], ids=str
)
def test_a_bad_price_is_refused_before_any_work_naming_file_model_and_value(
    photos: Path, db: Path, tmp_path: Path, price: str
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(f'{{"gemini-3.6-flash": {{"input": {price}, "output": 2}}}}')
    result = run("snap", str(photos), "--offline", "--prices", str(prices))
    assert result.exit_code == 2, result.output
    assert str(prices) in result.output and "gemini-3.6-flash" in result.output
    assert json.loads(price) is None or json.dumps(json.loads(price)) in result.output
    assert not db.exists()  # nothing scanned, queued or recorded as crashed


def test_a_good_price_file_still_works(photos: Path, db: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"my-model": {"input": "0.5", "output": 0}}')
    result = run("snap", str(photos), "--offline", "--quiet", "--prices", str(prices))
    assert result.exit_code == 0, result.output


def test_a_log_file_in_a_missing_folder_is_one_line(photos: Path, db: Path, tmp_path: Path) -> None:
    result = run("snap", str(photos), "--offline", "--log-file", str(tmp_path / "no" / "x.log"))
    assert result.exit_code == 2
    assert "--log-file" in result.output and "Traceback" not in result.output
    assert not db.exists()


# ---------------------------------------------------------------- 11: retry says what it did


def test_failures_that_cannot_pass_do_not_advertise_retry(tmp_path: Path, db: Path) -> None:
    make_jpeg(tmp_path / "p" / "mug.jpg")
    (tmp_path / "p" / "notes.jpg").write_text("not an image")
    result = run("snap", str(tmp_path / "p"), "--offline")
    assert result.exit_code == 1
    assert "1 item failed or skipped" in result.output
    assert "dealscout retry" not in result.output and "none can pass" in result.output


def test_retry_says_why_a_named_item_was_not_requeued(photos: Path, db: Path) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    result = run("retry", "--item", "999", "--item", "1")
    assert "item 999 not re-queued: no such item" in result.output
    assert "item 1 not re-queued: it is done" in result.output
    payload = json.loads(run("retry", "--item", "999", "--json").stdout)
    assert payload["not_requeued"] == [{"item_id": 999, "why": "no such item"}]


def test_retry_refuses_an_unknown_error_kind_and_lists_the_kinds(photos: Path, db: Path) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    assert run("retry", "--error-kind", "bogus").exit_code == 2
    assert run("retry", "--error-kind", "TIMEOUT").exit_code == 0  # any case
    shown = " ".join(run("retry", "--help").output.split())
    assert all(kind.value in shown for kind in ErrorKind)


# ---------------------------------------------------------------- 16: JSON when JSON was asked


def test_log_json_says_nothing_to_do_and_failures_as_json(tmp_path: Path, db: Path) -> None:
    make_jpeg(tmp_path / "p" / "mug.jpg")
    (tmp_path / "p" / "notes.jpg").write_text("not an image")
    first = run("snap", str(tmp_path / "p"), "--offline", "--log-json")
    again = run("snap", str(tmp_path / "p"), "--offline", "--log-json")
    for result in (first, again):
        records = [json.loads(line) for line in result.stderr.splitlines()]
        assert records
    events = {json.loads(line)["event"] for line in first.stderr.splitlines()}
    assert {"item_failed", "failures"} <= events
    assert {json.loads(line)["event"] for line in again.stderr.splitlines()} == {"nothing_to_do"}


def test_status_json_has_each_run_summary_as_an_object(photos: Path, db: Path) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    [last] = json.loads(run("status", "--json").stdout)["runs"]
    assert isinstance(last["summary"], dict) and last["summary"]["done"] == 6


# ---------------------------------------------------------------- 17: help and words


def test_usage_lines_name_the_paths() -> None:
    assert "snap [OPTIONS] [PATHS]..." in run("snap", "--help").output
    # Typer marks a required argument with braces: {PATHS...}, never the odd {paths}...
    assert "estimate [OPTIONS] {PATHS...}" in run("estimate", "--help").output


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        ("snap", "--group", "photo|folder|auto"),
        ("snap", "--engine", "local|celery"),
        ("estimate", "--group", "photo|folder|auto"),
        ("export", "--format", "csv|jsonl|ebay|shopify|meta"),
    ],
)
def test_options_with_choices_show_them(command: str, option: str, choices: str) -> None:
    assert f"{option} <{choices}>" in run(command, "--help").output


def test_export_choices_are_the_export_formats() -> None:
    from dealscout_cli.cli.export import Format
    from dealscout_cli.export import ExportFormat

    assert [f.value for f in Format] == [f.value for f in ExportFormat]


def test_choices_read_in_any_case(photos: Path, db: Path) -> None:
    result = run("snap", str(photos), "--offline", "--quiet", "--group", "FOLDER")
    assert result.exit_code == 0, result.output
    assert run("export", "--format", "CSV").exit_code == 0


def test_version_is_printed_fast_without_heavy_imports() -> None:
    from importlib.metadata import version

    started = time.monotonic()
    shown = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dealscout_cli.cli", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout.strip() == f"dealscout {version('dealscout')}"
    assert time.monotonic() - started < 5
    assert not re.search(r"\| (rich|pydantic|google\.genai)$", shown.stderr, re.M)


def test_counts_use_the_right_number(tmp_path: Path, db: Path) -> None:
    make_jpeg(tmp_path / "p" / "mug.jpg")
    result = run("snap", str(tmp_path / "p"), "--offline")
    assert "found 1 item:" in result.output
    (tmp_path / "p" / "bad.jpg").write_text("not an image")
    assert "1 item failed" in run("snap", str(tmp_path / "p"), "--offline").output
    assert "wrote 1 listing to" in run("export", "-o", str(tmp_path / "x.csv")).output


def test_photos_sharing_a_stem_get_labels_of_their_own(tmp_path: Path, db: Path) -> None:
    from PIL import Image

    from dealscout_cli.scan import scan

    make_jpeg(tmp_path / "p" / "photo.jpg", seed=1)
    Image.open(tmp_path / "p" / "photo.jpg").rotate(90).save(tmp_path / "p" / "photo.webp")
    make_jpeg(tmp_path / "p" / "mug.jpg", seed=2)
    labels = sorted(item.label for item in scan([tmp_path / "p"]).items)
    assert labels == ["mug", "photo.jpg", "photo.webp"]


def test_an_offline_run_says_it_was_free(photos: Path, db: Path) -> None:
    result = run("snap", str(photos), "--offline")
    assert "free (offline)" in result.output and "$0.0" not in result.output
