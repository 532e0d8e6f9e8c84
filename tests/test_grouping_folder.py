"""`snap --group folder` on a shoot as a reseller leaves it: loose photos at the top, product
folders, a file that is not a photo among them, a folder with far too many photos."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from photo_factory import make_jpeg
from typer.testing import CliRunner

from dealscout_cli.cli import app


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def listings(db: Path) -> list[dict[str, Any]]:
    return json.loads(run("listings", "--db", str(db), "--json").stdout)  # type: ignore[no-any-return]


def test_loose_photos_at_the_top_are_one_listing_each(tmp_path: Path, db: Path) -> None:
    shoot = tmp_path / "shoot"
    for seed, kind in enumerate(["mug", "book", "lamp", "handbag"]):
        make_jpeg(shoot / f"IMG_{seed:04d}.jpg", kind=kind, seed=seed)
    make_jpeg(shoot / "sneaker" / "front.jpg", kind="sneaker", seed=8)
    make_jpeg(shoot / "sneaker" / "side.jpg", kind="sneaker", seed=9)
    result = run("snap", str(shoot), "--group", "folder", "--db", str(db), "--offline", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(len(listing["photos"]) for listing in listings(db)) == [1, 1, 1, 1, 2]


def test_one_file_that_is_not_a_photo_is_left_out_of_its_item_with_a_warning(
    tmp_path: Path, db: Path
) -> None:
    folder = tmp_path / "shoot" / "teapot"
    for seed in range(3):
        make_jpeg(folder / f"{seed}.jpg", kind="mug", seed=seed)
    (folder / "notes.jpg").write_text("bought at the flea market, 2 EUR\n")
    result = run(
        "snap", str(tmp_path / "shoot"), "--group", "folder", "--db", str(db), "--offline", "--json"
    )
    assert result.exit_code == 0, result.output  # before: the whole item failed, no warning
    [listing] = listings(db)
    assert any(
        warning.startswith("notes.jpg: left out, not an image")
        for warning in listing["quality_warnings"]
    ), listing["quality_warnings"]
    assert rows(db, "SELECT state, count(*) FROM jobs GROUP BY state") == [("done", 1)]


def test_an_item_fails_only_when_none_of_its_photos_can_be_used(tmp_path: Path, db: Path) -> None:
    folder = tmp_path / "shoot" / "junk"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_text("not a photo")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG cut short
    result = run(
        "snap", str(tmp_path / "shoot"), "--group", "folder", "--db", str(db), "--offline", "--json"
    )
    assert result.exit_code == 1
    [failed] = json.loads(result.stdout)["failed"]
    message = json.dumps(failed)
    assert "none of its 2 photos can be used" in message
    assert "a.jpg: not an image" in message and "b.png:" in message


def test_a_folder_of_many_photos_is_warned_about_at_scan_time_not_skipped(
    tmp_path: Path, db: Path
) -> None:
    folder = tmp_path / "shoot" / "garage sale"
    for seed in range(14):
        make_jpeg(folder / f"{seed:02d}.jpg", (64, 48), seed=seed)
    result = run("snap", str(tmp_path / "shoot"), "--group", "folder", "--db", str(db), "--offline")
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "garage sale: 14 photos in one item" in result.stderr
    assert "skipped" not in result.stderr
    assert rows(db, "SELECT state FROM jobs") == [("done",)]  # a warning is not a skipped item
    as_json = run(
        "snap", str(tmp_path / "shoot"), "--group", "folder", "--db", str(db), "--offline", "--json"
    )
    payload = json.loads(as_json.stdout)
    assert payload["problems"] == []
    assert [w["path"] for w in payload["warnings"]] == [str(folder)]
