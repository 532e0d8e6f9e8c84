"""Hostile text from outside, end to end: a model's title that is a spreadsheet formula, a
description with terminal escape sequences, a file name with a bidi override. Stored as it
came in a real database, it must leave every CSV export as text, reach every terminal line
with its control characters escaped, and come back exact from `--json`."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from photo_factory import make_jpeg
from typer.testing import CliRunner

from dealscout_cli.cli import app

runner = CliRunner()

FORMULAS = {
    "title": '=HYPERLINK("http://x","y")',
    "description": "+1",
    "brand": "@SUM(A1)",
    "model": "-2+3",
    "category": " =1+1",  # a formula behind a blank still runs in some spreadsheets
}
ESCAPES = {
    "title": "Lamp \x1b[2J cleared \x1b[5mblink",
    "description": "Safe \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ text\x07\nline two \u202eevil",
    "brand": "\u202eAcme\x1b[5m",
    "model": "M\x9b31m1",  # C1 CSI: one byte, colours some terminals
    "category": "Home\r\nGarden\u2066",
}
SERVER_SAID = "server said \x1b[2J\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\u202e"
FORMULA_START = "=+-@\t\r＝＋－＠"
# What must never reach a terminal from data: C0 (bar newline), DEL, C1, bidi controls.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
BASE_URL = "https://photos.example.com/shop"


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def shown(result: Any) -> str:
    """Everything a command printed, stdout and stderr."""
    return result.stdout + result.stderr


def sku_of(db: Path, item_id: int) -> str:
    with sqlite3.connect(db) as conn:
        (sku,) = conn.execute("SELECT sku FROM listings WHERE item_id = ?", [item_id]).fetchone()
    conn.close()
    return str(sku)


def set_identification(db: Path, item_id: int, fields: dict[str, str]) -> None:
    """What a model could have answered, stored as the pipeline stores it."""
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute(
            "SELECT identification FROM listings WHERE item_id = ?", [item_id]
        ).fetchone()
        identification = {**json.loads(text), "defects": [], **fields}
        conn.execute(
            "UPDATE listings SET title = ?, identification = ? WHERE item_id = ?",
            [fields["title"], json.dumps(identification), item_id],
        )
    conn.close()


@pytest.fixture
def hostile_db(photos: Path, db: Path) -> dict[str, int]:
    """Six offline listings; item 1 says formulas, item 2 escape sequences, item 3 failed
    with a server message full of them, item 4 is priced in a "currency" that is one."""
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    set_identification(db, 1, FORMULAS)
    set_identification(db, 2, ESCAPES)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'failed', error = ? WHERE item_id = 3",
            [SERVER_SAID],
        )
        (price,) = conn.execute("SELECT price FROM listings WHERE item_id = 4").fetchone()
        conn.execute(
            "UPDATE listings SET price = ? WHERE item_id = 4",
            [json.dumps({**json.loads(price), "currency": "\x1b[5"})],
        )
    conn.close()
    return {"formulas": 1, "escapes": 2, "failed": 3, "odd_currency": 4}


# --- CSV exports --------------------------------------------------------------------------------

EXPORTS = {
    "csv": ["--format", "csv"],
    "ebay": ["--format", "ebay", "--include-offline"],
    "shopify": ["--format", "shopify", "--include-offline"],
    "meta": [
        "--format",
        "meta",
        "--include-offline",
        "--photo-base-url",
        BASE_URL,
        "--product-url",
        "https://shop.example.com/p/{sku}",
    ],
}
# Where each format puts the title, description and brand of a listing.
TEXT_COLUMNS = {
    "csv": {"title": "title", "description": "description", "brand": "brand", "model": "model",
            "category": "category"},
    "ebay": {"title": "Title", "description": "Description"},
    "shopify": {"title": "Title", "description": "Body (HTML)", "brand": "Vendor",
                "category": "Type"},
    "meta": {"title": "title", "description": "description", "brand": "brand"},
}  # fmt: skip


def would_run(cell: str) -> bool:
    visible = cell.lstrip()
    return bool(cell) and (cell[0] in FORMULA_START or visible[:1] in FORMULA_START)


@pytest.mark.parametrize("fmt", EXPORTS)
def test_no_exported_cell_runs_as_a_formula(hostile_db: dict[str, int], fmt: str) -> None:
    result = run("export", *EXPORTS[fmt])
    assert result.exit_code == 0, result.output
    table = list(csv.reader(io.StringIO(result.stdout, newline="")))
    cells = [cell for row in table[1:] for cell in row]
    assert cells and not [cell for cell in cells if would_run(cell)]


@pytest.mark.parametrize("fmt", EXPORTS)
def test_a_formula_cell_keeps_its_text_behind_one_quote(
    hostile_db: dict[str, int], db: Path, fmt: str
) -> None:
    result = run("export", *EXPORTS[fmt])
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    sku_column = {"csv": "sku", "ebay": "Custom label (SKU)", "shopify": "Variant SKU",
                  "meta": "id"}[fmt]  # fmt: skip
    row = next(r for r in rows if r[sku_column] == sku_of(db, hostile_db["formulas"]))
    for field, name in TEXT_COLUMNS[fmt].items():
        assert row[name] == "'" + FORMULAS[field], (field, name)
        # quoted in the file too, as OWASP asks: a reader that unquotes still sees text
        assert '"' + "'" + FORMULAS[field].replace('"', '""') + '"' in result.stdout


@pytest.mark.parametrize("fmt", ["ebay", "shopify", "meta"])
def test_marketplace_numbers_and_header_are_written_as_before(
    hostile_db: dict[str, int], fmt: str
) -> None:
    text = run("export", *EXPORTS[fmt]).stdout
    header = text.splitlines()[0]
    assert '"' not in header and "'" not in header  # our header row, as the importers expect
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    price = {"ebay": "Price", "shopify": "Variant Price", "meta": "price"}[fmt]
    assert all(re.fullmatch(r"\d+\.\d\d( USD)?", r[price]) for r in rows if r[price])
    if fmt == "ebay":
        assert all(r["Condition ID"].isdigit() and r["Quantity"] == "1" for r in rows)


def test_an_ebay_title_with_its_quote_still_fits_80_characters(
    hostile_db: dict[str, int], db: Path
) -> None:
    long_formula = "=" + "A1+" * 30 + "1"  # 92 characters, one word
    set_identification(db, 1, {**FORMULAS, "title": long_formula[:80]})
    rows = list(csv.reader(io.StringIO(run("export", *EXPORTS["ebay"]).stdout)))
    title = next(row[3] for row in rows if row[1] == sku_of(db, hostile_db["formulas"]))
    assert len(title) == 80 and title == "'" + long_formula[:79]


# --- the terminal -------------------------------------------------------------------------------


def assert_no_controls(result: Any) -> None:
    found = CONTROL.findall(shown(result))
    assert not found, f"control characters reached the terminal: {found}"


def test_listings_table_shows_escapes_as_text_and_json_keeps_them(
    hostile_db: dict[str, int],
) -> None:
    result = run("listings")
    assert result.exit_code == 0
    assert_no_controls(result)
    assert "\\x1b[2J" in result.stdout
    listings = {x["item_id"]: x for x in json.loads(run("listings", "--json").stdout)}
    for item, fields in ((hostile_db["formulas"], FORMULAS), (hostile_db["escapes"], ESCAPES)):
        ident = listings[item]["identification"]
        assert {k: ident[k] for k in fields} == fields


def test_listing_in_full_shows_escapes_as_text_and_json_keeps_them(
    hostile_db: dict[str, int],
) -> None:
    result = run("listings", "--item", str(hostile_db["escapes"]))
    assert result.exit_code == 0
    assert_no_controls(result)
    assert "\\x1b]8;;http://evil\\x1b\\link" in result.stdout
    assert "\\u202eAcme\\x1b[5m" in result.stdout and "Home\\r\\nGarden" in result.stdout
    # a description keeps its own lines: "line two" starts a line of the table
    assert "text\\x07 " in result.stdout and "\\nline two" not in result.stdout
    one = json.loads(run("listings", "--item", str(hostile_db["escapes"]), "--json").stdout)
    assert {k: one["identification"][k] for k in ESCAPES} == ESCAPES


def test_status_error_lines_show_escapes_as_text_and_json_keeps_them(
    hostile_db: dict[str, int],
) -> None:
    result = run("status")
    assert_no_controls(result)
    assert "server said \\x1b[2J" in result.stdout
    (error,) = json.loads(run("status", "--json").stdout)["last_errors"]
    assert error["error"] == SERVER_SAID


def test_export_messages_show_escapes_as_text(hostile_db: dict[str, int], tmp_path: Path) -> None:
    # to a file: the CSV itself keeps the exact text (it is data, not a message)
    result = run("export", "--format", "ebay", "--include-offline", "-o", str(tmp_path / "e.csv"))
    assert result.exit_code == 0
    assert_no_controls(result)
    assert "priced in \\x1b[5," in result.stderr


def on_a_terminal(*args: str) -> str:
    """What `dealscout ARGS` shows when its stdout is a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "dealscout_cli.cli", *args]
    proc = subprocess.Popen(command, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal adds the \r


def test_export_to_a_terminal_shows_escapes_as_text(hostile_db: dict[str, int]) -> None:
    shown = on_a_terminal("export")
    assert "\\x1b[2J" in shown and not CONTROL.findall(shown)


def hostile_photos(tmp_path: Path) -> Path:
    """A photo whose file name moves the cursor and reverses text, and a broken one."""
    folder = tmp_path / "hostile"
    make_jpeg(folder / "lamp\x1b[2J\u202egpj.exe.jpg", kind="lamp")
    (folder / "notes\x1b]8;;x\x1b\\y\x1b]8;;\x1b\\.jpg").write_text("not an image")
    return folder


def test_snap_shows_file_names_with_escapes_as_text(tmp_path: Path, db: Path) -> None:
    result = run("snap", str(hostile_photos(tmp_path)), "--offline")
    assert result.exit_code == 1  # the broken photo
    assert_no_controls(result)
    assert "lamp\\x1b[2J\\u202egpj.exe" in result.stdout  # the "listings made" table
    assert "notes\\x1b]8;;x\\x1b\\y" in result.stderr  # the failure list


def test_snap_log_file_lines_show_escapes_as_text_and_log_json_keeps_them(
    tmp_path: Path, db: Path
) -> None:
    photos = hostile_photos(tmp_path)
    lines, events = tmp_path / "snap.log", tmp_path / "snap.jsonl"
    run("snap", str(photos), "--offline", "--log-file", str(lines))
    text = lines.read_text(encoding="utf-8")
    assert not CONTROL.findall(text) and "lamp\\x1b[2J\\u202egpj.exe" in text
    run("snap", str(photos), "--offline", "--force", "--log-json", "--log-file", str(events))
    labels = {e.get("label") for e in map(json.loads, events.read_text().splitlines())}
    assert any(label and "lamp\x1b[2J\u202egpj.exe" in label for label in labels)
