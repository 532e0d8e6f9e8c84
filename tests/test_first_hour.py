"""A reseller's first hour: what a new user meets, tried as a new user would."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dealscout_cli.cli import app


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_trying_offline_first_never_traps_the_real_run_in_placeholders(
    photos: Path, db: Path, env_with_key: dict[str, str]
) -> None:
    offline = run("snap", str(photos), "--db", str(db), "--offline", "--json", env={})
    assert offline.exit_code == 0
    items = json.loads(offline.stdout)["run"]["done"]
    assert rows(db, "SELECT DISTINCT offline FROM listings") == [(1,)]
    estimate = json.loads(run("estimate", str(photos), "--db", str(db), "--json").stdout)
    assert estimate["cost_usd"] > 0  # the placeholders are still to be paid for, not free
    real = run("snap", str(photos), "--db", str(db), "--json")
    assert real.exit_code == 0, real.output
    payload = json.loads(real.stdout)
    assert payload["redo_offline"] == items and payload["run"]["done"] == items
    assert rows(db, "SELECT DISTINCT offline FROM listings") == [(0,)]
    again = run("snap", str(photos), "--db", str(db), "--offline", "--json")
    assert json.loads(again.stdout)["run"] is None  # offline never redoes (or spoils) real work
    assert rows(db, "SELECT DISTINCT offline FROM listings") == [(0,)]


def test_a_bad_file_fails_the_run_that_meets_it_not_every_cron_run_after(
    photos: Path, db: Path
) -> None:
    (photos / "broken.jpg").write_bytes(b"")
    (photos / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    first = run("snap", str(photos), "--db", str(db), "--offline", "--json")
    assert first.exit_code == 1  # this run met two bad files
    second = run("snap", str(photos), "--db", str(db), "--offline", "--json")
    assert second.exit_code == 0, second.output  # nothing new tried, nothing went wrong
    assert json.loads(second.stdout)["failed"] == []
    status = json.loads(run("status", "--db", str(db), "--json").stdout)
    counts = status["counts"]  # the earlier failures are still there for whoever looks
    assert counts["failed"] + counts["skipped"] == 2


def test_the_readme_emulator_example_needs_no_key(photos: Path, db: Path, emulator: Any) -> None:
    result = run("snap", str(photos), "--db", str(db), "--base-url", emulator.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"]["done"] == 6


def test_without_a_key_the_error_says_a_local_emulator_needs_none(photos: Path) -> None:
    result = run("snap", str(photos), "--base-url", "https://proxy.example.com")
    assert result.exit_code == 2
    assert "GEMINI_API_KEY" in result.output and "needs no key" in result.output


def test_a_budget_stop_closes_with_what_was_really_spent(
    photos: Path, db: Path, env_with_key: dict[str, str]
) -> None:
    from dealscout_cli.costs import format_usd

    result = run("snap", str(photos), "--db", str(db), "--max-cost", "0.01", "--json")
    assert result.exit_code == 3
    run_ = json.loads(result.stdout)["run"]
    spent = rows(db, "SELECT SUM(cost_micro_usd) FROM calls")[0][0]
    assert f"({format_usd(spent)} spent;" in run_["stop_reason"]
    assert run_["cost_usd"] * 1_000_000 == spent


def test_an_offline_run_fits_any_budget_since_it_costs_nothing(photos: Path, db: Path) -> None:
    result = run("snap", str(photos), "--db", str(db), "--offline", "--max-cost", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"]["cost_usd"] == 0
    assert rows(db, "SELECT SUM(cost_micro_usd) FROM calls")[0][0] == 0


def test_a_model_without_a_price_costs_unknown_never_zero(
    photos: Path, db: Path, env_with_key: dict[str, str]
) -> None:
    model = "gemini-3.9-ultra"  # not in the price table: the emulator serves any name
    snapped = run("snap", str(photos), "--db", str(db), "--vision-model", model, "--json")
    assert snapped.exit_code == 0, snapped.output
    status = run("status", "--db", str(db))
    assert "calls to models without a price" in status.stdout  # the priced part, and the rest
    one = run("listings", "--db", str(db), "--item", "1")
    assert one.exit_code == 0
    cost_rows = [line for line in one.stdout.splitlines() if line.strip("│ ").startswith("cost")]
    assert cost_rows and all("unknown" in line for line in cost_rows), cost_rows


def test_when_no_call_has_a_price_the_total_is_unknown(
    photos: Path, db: Path, env_with_key: dict[str, str]
) -> None:
    models = ["--vision-model", "gemini-3.9-ultra", "--pricing-model", "gemini-3.9-mini"]
    assert run("snap", str(photos), "--db", str(db), *models).exit_code == 0
    status = run("status", "--db", str(db)).stdout
    cost_line = next(line for line in status.splitlines() if "│ cost" in line)
    assert "unknown (" in cost_line and "$0" not in cost_line
