"""End to end through the CLI: real SQLite, the real google-genai client, the emulator over HTTP."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAKE_KEY
from photo_factory import make_jpeg
from PIL import Image
from typer.testing import CliRunner

from dealscout_cli.cli import app

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def calls_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def test_no_key_is_a_clear_error_naming_both_ways_out(photos: Path) -> None:
    result = run("snap", str(photos))
    assert result.exit_code == 2
    assert "GEMINI_API_KEY" in result.output and "--offline" in result.output


def test_missing_folder_is_a_usage_error(tmp_path: Path, env_with_key) -> None:
    result = run("snap", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_bad_group_flag_is_a_usage_error(photos: Path, env_with_key) -> None:
    result = run("snap", str(photos), "--group", "shelf")
    assert result.exit_code == 2 and "--group" in result.output


def test_the_group_choices_are_the_ones_scan_takes(photos: Path, db: Path) -> None:
    from dealscout_cli.cli.options import Group
    from dealscout_cli.scan import GROUPINGS

    assert tuple(Group) == GROUPINGS
    result = run("estimate", str(photos), "--group", "shelf")
    assert result.exit_code == 2 and "--group" in result.output


def test_snap_offline_makes_one_listing_per_item(photos: Path, db: Path) -> None:
    result = run("snap", str(photos), "--group", "folder", "--offline", "--quiet")
    assert result.exit_code == 0, result.output
    listings = json.loads(run("listings", "--json").stdout)
    assert len(listings) == 4  # each loose photo at the top, and the sneaker folder
    assert all(listing["offline"] for listing in listings)
    assert sorted(len(x["photos"]) for x in listings) == [1, 1, 1, 3]
    assert all(len(x["identification"]["title"]) <= 80 for x in listings)


def test_offline_listings_are_marked_in_the_tables(photos: Path, db: Path) -> None:
    made = run("snap", str(photos), "--group", "folder", "--offline").output
    assert "[offline placeholders]" in made  # rich must not read it as a markup tag
    table = run("listings").output
    assert table.count("[offline]") == 4


def test_paths_that_look_like_rich_markup_are_printed_as_they_are(tmp_path: Path, db: Path) -> None:
    # "[/x]" is a closing tag to rich: printed as markup it raised MarkupError (a traceback)
    shoot = tmp_path / "shoot [/x]"
    make_jpeg(shoot / "mug.jpg")
    (shoot / "notes [").mkdir()  # a "/" inside the brackets is a folder
    (shoot / "notes [/y].jpg").write_text("not an image")
    result = run("snap", str(shoot), "--offline")
    assert result.exit_code == 1
    assert "notes [/y].jpg: not an image" in result.output
    missing = run("status", "--db", str(tmp_path / "[/z]" / "x.db"))
    assert missing.exit_code == 1
    assert f"no database at {tmp_path / '[/z]' / 'x.db'}" in missing.output


def test_snap_with_key_through_emulator_prices_every_item(
    photos: Path, db: Path, env_with_key
) -> None:
    result = run("snap", str(photos), "--quiet")
    assert result.exit_code == 0, result.output
    listings = json.loads(run("listings", "--json").stdout)
    assert len(listings) == 6
    assert all(x["price"]["low"] <= x["price"]["suggested"] <= x["price"]["high"] for x in listings)
    assert not any(x["offline"] for x in listings)


def test_rerun_makes_no_new_calls_and_says_so(photos: Path, db: Path, env_with_key) -> None:
    run("snap", str(photos), "--quiet")
    before = calls_in(db)
    result = run("snap", str(photos))
    assert result.exit_code == 0
    assert calls_in(db) == before
    assert "6 already done" in result.output and "no calls made" in result.output


def test_renamed_photo_makes_no_new_work(photos: Path, db: Path, env_with_key) -> None:
    run("snap", str(photos), "--quiet")
    before = calls_in(db)
    (photos / "mug.jpg").rename(photos / "kitchen-mug-renamed.jpg")
    assert run("snap", str(photos), "--quiet").exit_code == 0
    assert calls_in(db) == before


def test_every_call_is_recorded_with_tokens_and_cost(photos: Path, db: Path, env_with_key) -> None:
    run("snap", str(photos), "--quiet")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT stage, model, outcome, input_tokens, output_tokens, cost_micro_usd, latency_ms FROM calls"
        ).fetchall()
    assert {r[0] for r in rows} == {"identify", "price"}
    assert all(r[2] == "ok" and r[3] > 0 and r[4] > 0 and r[5] > 0 and r[6] >= 0 for r in rows)
    identify_tokens = [r[3] for r in rows if r[0] == "identify"]
    assert min(identify_tokens) >= 258  # at least one image tile


def test_failed_item_gives_exit_1_and_the_rest_go_on(photos: Path, db: Path, env_with_key) -> None:
    (photos / "empty.jpg").write_bytes(b"")
    result = run("snap", str(photos))
    assert result.exit_code == 1
    assert "empty.jpg" in result.output and "empty file" in result.output
    assert len(json.loads(run("listings", "--json").stdout)) == 6


def test_status_json_shows_every_item_done(photos: Path, db: Path, env_with_key) -> None:
    run("snap", str(photos), "--quiet")
    report = json.loads(run("status", "--json").stdout)
    assert report["counts"]["done"] == 6 and report["counts"]["queued"] == 0
    assert report["calls"] == 12 and report["cost_micro_usd"] > 0


def test_status_without_database_says_how_to_start(tmp_path: Path) -> None:
    result = run("status", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 1 and "dealscout snap" in result.output


def test_listings_item_shows_photos_and_calls(photos: Path, db: Path, env_with_key) -> None:
    run("snap", str(photos), "--group", "folder", "--quiet")
    listings = json.loads(run("listings", "--json").stdout)
    sneaker = next(x for x in listings if any("sneaker" in p["path"] for p in x["photos"]))
    result = run("listings", "--item", str(sneaker["item_id"]))
    assert result.exit_code == 0
    assert (
        "front.jpg" in result.output
        and "call identify" in result.output
        and "cost" in result.output
    )


def test_listings_table_keeps_skus_and_prices_whole_at_80_columns(
    photos: Path, db: Path, env_with_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dealscout_cli.cli.options import out

    run("snap", str(photos), "--quiet")
    listings = json.loads(run("listings", "--json").stdout)
    monkeypatch.setattr(out.console, "width", 80)  # a cron mail or a default terminal
    table = run("listings").output
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 80
    for listing in listings:
        assert listing["sku"] in table
        assert f"{listing['price']['suggested']:.2f} {listing['price']['currency']}" in table


def test_export_csv_and_jsonl_round_trip(
    photos: Path, db: Path, env_with_key, tmp_path: Path
) -> None:
    run("snap", str(photos), "--quiet")
    rows = list(csv.DictReader(io.StringIO(run("export").stdout)))
    assert len(rows) == 6 and all(len(r["title"]) <= 80 for r in rows)
    out = tmp_path / "listings.jsonl"
    assert run("export", "--format", "jsonl", "-o", str(out)).exit_code == 0
    assert len(out.read_text().splitlines()) == 6


def test_ebay_photo_urls_follow_the_folders_below_a_relative_photo_root(
    photos: Path, db: Path, env_with_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("snap", str(photos), "--group", "folder", "--quiet")
    monkeypatch.chdir(photos.parent)
    result = run("export", "--format", "ebay", "--photo-base-url", "https://cdn.example/s",
                 "--photo-root", ".")  # fmt: skip
    assert result.exit_code == 0, result.output
    urls = {u for row in csv.reader(io.StringIO(result.stdout)) for u in row[7].split("|")}
    assert "https://cdn.example/s/photos/sneaker/front.jpg" in urls
    assert "https://cdn.example/s/photos/mug.jpg" in urls
    outside = run("export", "--format", "ebay", "--photo-base-url", "https://cdn.example/s",
                  "--photo-root", str(photos / "sneaker"))  # fmt: skip
    assert outside.exit_code == 2 and "is not in --photo-root" in outside.output


def test_unknown_export_format_is_a_usage_error(db: Path) -> None:
    result = run("export", "--format", "xml")
    assert result.exit_code == 2 and "csv" in result.output


def test_bad_model_output_becomes_a_clear_item_error(tmp_path: Path, db: Path, monkeypatch) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    make_jpeg(tmp_path / "p" / "mug.jpg")
    with Emulator(EmulatorConfig(seed=3, malformed_rate=1.0)) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        result = run("snap", str(tmp_path / "p"), "--base-url", emu.url, "--json")
    assert result.exit_code == 1
    failed = json.loads(result.stdout)["failed"]
    assert failed[0]["error_kind"] == "bad_output"
    assert "does not fit Identification" in failed[0]["error"]


def test_429_is_retried_then_succeeds(tmp_path: Path, db: Path, monkeypatch) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    for n in range(3):
        make_jpeg(tmp_path / "p" / f"{n}.jpg", seed=n)
    with Emulator(EmulatorConfig(seed=5, error_rates={429: 0.3})) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        result = run(
            "snap", str(tmp_path / "p"), "--base-url", emu.url, "--quiet", "--max-retries", "6"
        )
        stats = emu.stats()
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        outcomes = dict(
            conn.execute("SELECT outcome, COUNT(*) FROM calls GROUP BY outcome").fetchall()
        )
    assert outcomes.get("rate_limited", 0) >= 1 and outcomes["ok"] == 6
    assert sum(stats.requests_by_model.values()) == sum(outcomes.values())


def test_api_key_never_reaches_db_or_output(photos: Path, db: Path, env_with_key) -> None:
    (photos / "broken.jpg").write_text("not an image")
    result = run("snap", str(photos), "--log-json")
    status = run("status", "--json")
    assert FAKE_KEY not in result.output + status.output
    for path in db.parent.glob("dealscout.db*"):
        assert FAKE_KEY.encode() not in path.read_bytes()


def test_log_json_writes_one_object_per_line(
    photos: Path, db: Path, env_with_key, tmp_path: Path
) -> None:
    log = tmp_path / "run.log"
    run("snap", str(photos), "--log-json", "--log-file", str(log))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    assert sum(e["event"] == "run_started" for e in events) == 1
    assert sum(e["event"] == "item_done" for e in events) == 6


def command_names() -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]


@pytest.mark.parametrize("command", command_names())
def test_every_command_has_help_with_an_example_and_is_in_the_readme(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0 and "Example:" in result.output
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"dealscout {command}" in readme


def loaded_by(*args: str, db: Path) -> set[str]:
    """Which heavy libraries a real `dealscout ARGS` start imports (as pip's script runs it)."""
    heavy = ("google.genai", "rich", "PIL", "anyio", "pydantic")
    code = (
        "import sys; from dealscout_cli.cli import main; sys.argv[0] = 'dealscout'\n"
        "try:\n    main()\nfinally:\n"
        f"    print('LOADED', *[m for m in {heavy!r} if m in sys.modules], file=sys.stderr)"
    )
    env = {"DEALSCOUT_DB": str(db), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED"))
    return set(line.split()[1:])


def test_start_up_paths_stay_light(tmp_path: Path) -> None:
    # google-genai takes ~1.4 s to import, rich ~40 ms: --help and scripts pay for neither
    from dealscout_cli.store import Store

    db = tmp_path / "light.db"
    Store.open(db).close()
    assert loaded_by("--help", db=db) == set()
    assert loaded_by("status", "--json", db=db) == set()
    assert loaded_by("status", db=db) == {"rich"}  # the table


def test_slow_trickled_answer_times_out_and_is_recorded(
    tmp_path: Path, db: Path, monkeypatch
) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    make_jpeg(tmp_path / "p" / "mug.jpg")
    with Emulator(EmulatorConfig(seed=4, trickle_rate=1.0, trickle_seconds=3.0)) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        result = run(
            "snap",
            str(tmp_path / "p"),
            "--base-url",
            emu.url,
            "--timeout",
            "1",
            "--max-retries",
            "0",
            "--max-attempts",
            "1",
            "--json",
        )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failed"][0]["error_kind"] == "timeout"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT outcome FROM calls").fetchall() == [("timeout",)]


def test_daily_quota_stops_the_run_cleanly_and_keeps_the_rest_queued(
    tmp_path: Path, db: Path, monkeypatch
) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    for n in range(6):
        make_jpeg(tmp_path / "p" / f"{n}.jpg", seed=n)
    with Emulator(EmulatorConfig(seed=6, rpd=4)) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        result = run("snap", str(tmp_path / "p"), "--base-url", emu.url, "--concurrency", "1")
        served = emu.stats().requests
    assert result.exit_code == 3, result.output
    assert "daily quota exhausted" in result.output
    report = json.loads(run("status", "--json").stdout)
    # 4 requests a day per model: 4 items identified and priced, the 5th refused.
    assert report["counts"]["done"] == 4 and report["counts"]["queued"] == 2
    assert report["counts"]["failed"] == 0
    assert served == 9  # one refused call, not a retry storm


def test_rejected_key_stops_the_run_without_leaking_it(
    tmp_path: Path, db: Path, monkeypatch
) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    for n in range(4):
        make_jpeg(tmp_path / "p" / f"{n}.jpg", seed=n)
    with Emulator(EmulatorConfig(seed=7, api_key="the-right-key")) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        result = run("snap", str(tmp_path / "p"), "--base-url", emu.url, "--concurrency", "1")
    assert result.exit_code == 3
    assert "API key was rejected" in result.output and FAKE_KEY not in result.output
    assert json.loads(run("status", "--json").stdout)["counts"]["queued"] == 4


def test_unknown_model_name_stops_the_run_instead_of_failing_every_item(
    tmp_path: Path, db: Path, monkeypatch
) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    for n in range(4):
        make_jpeg(tmp_path / "p" / f"{n}.jpg", seed=n)
    served = EmulatorConfig(seed=7, models=("gemini-3.6-flash", "gemini-3.5-flash-lite"))
    with Emulator(served) as emu:
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        result = run(
            "snap",
            str(tmp_path / "p"),
            "--base-url",
            emu.url,
            "--concurrency",
            "1",
            "--vision-model",
            "gemini-1.5-flash",
        )  # retired: Google answers 404
        answered = emu.stats().requests_by_status
    assert result.exit_code == 3, result.output
    assert "model gemini-1.5-flash not found (404)" in result.output
    assert "--vision-model" in result.output
    assert answered == {404: 1}  # one call learned it; no retries, no other items tried
    assert json.loads(run("status", "--json").stdout)["counts"]["queued"] == 4


def test_max_cost_stops_claiming_before_the_budget_is_passed(
    photos: Path, db: Path, env_with_key
) -> None:
    # About $0.008 an item at the defaults (Gemini 3 thinking billed as output): room for two.
    result = run("snap", str(photos), "--max-cost", "0.02", "--concurrency", "1")
    assert result.exit_code == 3
    assert "--max-cost" in result.output
    report = json.loads(run("status", "--json").stdout)
    assert 1 <= report["counts"]["done"] < 6 and report["counts"]["queued"] >= 1
    assert report["cost_micro_usd"] <= 20000


def test_barcode_on_a_photo_reaches_the_listing_and_the_ebay_upc(
    tmp_path: Path, db: Path, env_with_key
) -> None:
    import zxingcpp
    from test_barcodes import photo_with

    code = zxingcpp.create_barcode("4006381333931", zxingcpp.BarcodeFormat.EAN13)
    label = Image.fromarray(code.to_image(scale=3)).convert("RGB")
    photo_with(tmp_path / "p" / "box.jpg", label)
    assert run("snap", str(tmp_path / "p"), "--quiet").exit_code == 0
    [listing] = json.loads(run("listings", "--json").stdout)
    assert listing["barcodes"] == ["4006381333931"]
    ebay = run("export", "--format", "ebay", "--photo-base-url", "https://example.com/p/").stdout
    [row] = list(csv.DictReader(io.StringIO(ebay)))
    assert row["UPC"] == "4006381333931"
