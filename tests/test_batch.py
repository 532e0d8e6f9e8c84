"""`snap --batch` end to end: the real google-genai client, the emulator's Batch Mode, real SQLite."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_KEY
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.costs import PRICE_TABLE, call_cost_micros

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def batch_emulator(request: pytest.FixtureRequest) -> Iterator[Any]:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    options = getattr(request, "param", {"batch_seconds": 0.0})
    with Emulator(EmulatorConfig(seed=1, **options)) as emu:
        yield emu


@pytest.fixture
def batch_env(batch_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", batch_emulator.url)
    return {"GEMINI_API_KEY": FAKE_KEY, "GOOGLE_GEMINI_BASE_URL": batch_emulator.url}


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def status(db: Path) -> dict[str, Any]:
    return json.loads(run("status", "--json", "--db", str(db)).stdout)


def test_round_trip_identify_batch_then_price_batch_then_listings(
    photos: Path, db: Path, batch_env: dict[str, str], batch_emulator: Any
) -> None:
    first = run("snap", str(photos), "--batch")
    assert first.exit_code == 0, first.output
    assert "run again later" in first.output
    assert rows(db, "SELECT stage, state FROM batches") == [("identify", "pending")]
    assert status(db)["counts"]["batched"] == 6
    table = run("status", "--db", str(db)).output
    assert "batched" in table and "6 (the next `snap --batch` collects them)" in table
    assert rows(db, "SELECT COUNT(*) FROM calls") == [(0,)]  # billed when collected
    assert batch_emulator.stats().batch_requests == 6
    assert batch_emulator.stats().requests == 0  # nothing went the online way

    second = run("snap", str(photos), "--batch")
    assert second.exit_code == 0, second.output
    assert rows(db, "SELECT stage, state, collected FROM batches ORDER BY id") == [
        ("identify", "succeeded", 1),
        ("price", "pending", 0),
    ]
    assert rows(db, "SELECT COUNT(*) FROM stages WHERE stage = 'identify'") == [(6,)]
    assert status(db)["counts"]["batched"] == 6

    third = run("snap", str(photos), "--batch", "--json")
    assert third.exit_code == 0, third.output
    assert json.loads(third.stdout)["batch"]["done"] == 6
    listings = json.loads(run("listings", "--json").stdout)
    assert len(listings) == 6
    assert all(x["price"]["low"] <= x["price"]["suggested"] <= x["price"]["high"] for x in listings)

    calls = rows(
        db,
        "SELECT stage, model, outcome, input_tokens, output_tokens, cost_micro_usd, batch_id"
        " FROM calls",
    )
    assert len(calls) == 12 and {c[0] for c in calls} == {"identify", "price"}
    for _stage, model, outcome, tokens_in, tokens_out, cost, batch_id in calls:
        assert outcome == "ok" and batch_id is not None and tokens_in > 0 and tokens_out > 0
        full = call_cost_micros(PRICE_TABLE, model, tokens_in, tokens_out)
        assert abs(cost - full / 2) <= 1  # half price
    report = status(db)
    assert report["counts"]["done"] == 6 and report["counts"].get("batched", 0) == 0
    assert report["calls"] == 12 and report["cost_micro_usd"] == sum(c[5] for c in calls)
    stats = batch_emulator.stats()
    assert stats.batch_jobs == 2 and stats.batch_requests == 12 and stats.requests == 0

    fourth = run("snap", str(photos), "--batch")
    assert fourth.exit_code == 0 and "nothing to do" in fourth.output
    assert batch_emulator.stats().batch_jobs == 2


@pytest.mark.parametrize("batch_emulator", [{"batch_seconds": 3600.0}], indirect=True)
def test_rerun_while_pending_makes_no_new_calls(
    photos: Path, db: Path, batch_env: dict[str, str], batch_emulator: Any
) -> None:
    assert run("snap", str(photos), "--batch").exit_code == 0
    before = batch_emulator.stats()
    again = run("snap", str(photos), "--batch", "--json")
    assert again.exit_code == 0, again.output  # pending is not a failure
    payload = json.loads(again.stdout)["batch"]
    assert payload["submitted"] == [] and len(payload["pending"]) == 1
    after = batch_emulator.stats()
    assert after.batch_jobs == before.batch_jobs == 1
    assert after.batch_requests == before.batch_requests and after.requests == 0
    assert after.batch_polls == before.batch_polls + 1
    assert rows(db, "SELECT COUNT(*) FROM calls") == [(0,)]
    # an online run meanwhile neither claims nor waits for the batched items
    online = run("snap", str(photos), "--quiet")
    assert online.exit_code == 0, online.output
    assert batch_emulator.stats().requests == 0
    assert status(db)["counts"]["batched"] == 6


@pytest.mark.parametrize(
    "batch_emulator", [{"batch_seconds": 0.0, "malformed_rate": 0.3}], indirect=True
)
def test_bad_inlined_response_fails_that_item_only(
    photos: Path, db: Path, batch_env: dict[str, str], batch_emulator: Any
) -> None:
    run("snap", str(photos), "--batch")
    bad = batch_emulator.stats().faults.get("malformed", 0)  # answers are drawn on submission
    assert 0 < bad < 6  # the seed spoils some identify answers, not all
    result = run("snap", str(photos), "--batch")
    assert result.exit_code == 1  # failed items, as online
    failed = rows(db, "SELECT error_kind, error FROM jobs WHERE state = 'failed'")
    assert len(failed) == bad
    assert all(kind == "bad_output" and "does not fit" in error for kind, error in failed)
    assert rows(db, "SELECT COUNT(*) FROM calls WHERE outcome = 'bad_output'") == [(bad,)]
    run("snap", str(photos), "--batch")
    counts = status(db)["counts"]
    bad_total = batch_emulator.stats().faults.get("malformed", 0)
    assert counts["failed"] == bad_total and counts["done"] == 6 - bad_total


@pytest.mark.parametrize(
    "batch_emulator", [{"batch_seconds": 0.0, "error_rates": {500: 1.0}}], indirect=True
)
def test_per_request_errors_go_back_to_the_queue(
    photos: Path, db: Path, batch_env: dict[str, str]
) -> None:
    run("snap", str(photos), "--batch")
    result = run("snap", str(photos), "--batch", "--json")
    assert json.loads(result.stdout)["batch"]["requeued"] == 6
    assert status(db)["counts"]["queued"] == 6
    assert rows(db, "SELECT DISTINCT outcome, http_status FROM calls") == [("server_error", 500)]


def test_offline_batch_waits_for_the_built_in_emulator(photos: Path, db: Path) -> None:
    result = run("snap", str(photos), "--batch", "--offline")
    assert result.exit_code == 0, result.output
    assert len(json.loads(run("listings", "--json").stdout)) == 6
    assert rows(db, "SELECT COUNT(*) FROM batches WHERE collected = 1") == [(2,)]


@pytest.mark.parametrize("batch_emulator", [{"batch_seconds": 3600.0}], indirect=True)
def test_batch_the_server_no_longer_has_gives_its_items_back(
    photos: Path,
    db: Path,
    batch_env: dict[str, str],
    batch_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    assert run("snap", str(photos), "--batch").exit_code == 0
    assert status(db)["counts"]["batched"] == 6
    # The batch is deleted server-side (or outlived its retention): a new server knows nothing.
    with Emulator(EmulatorConfig(seed=1, batch_seconds=0.0)) as fresh:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fresh.url)
        again = run("snap", str(photos), "--batch", "--json")
        assert again.exit_code == 3, again.output  # like a failed or expired batch: say so
        payload = json.loads(again.stdout)["batch"]
        assert payload["requeued"] == 6
        assert any("no longer has this batch" in error for error in payload["errors"])
        assert rows(db, "SELECT state, finished_at IS NOT NULL FROM batches ORDER BY id")[0] == (
            "lost",
            1,
        )
        assert fresh.stats().batch_jobs == 1 and fresh.stats().batch_requests == 6  # resent
        assert status(db)["counts"]["batched"] == 6  # now waiting on the new batch
        while status(db)["counts"]["done"] < 6:  # the new server answers at once
            assert run("snap", str(photos), "--batch").exit_code == 0
    assert rows(db, "SELECT COUNT(*) FROM listings") == [(6,)]


def test_max_cost_holds_items_back_from_batches_at_the_batch_price(
    photos: Path, db: Path, batch_env: dict[str, str], batch_emulator: Any
) -> None:
    # The budget expects an item at half the estimate's (deliberately high) online price;
    # 2.5 items' worth lets two go into the batch.
    per_item = json.loads(run("estimate", str(photos), "--json").stdout)["cost_per_item_micro_usd"]
    limit = f"{2.5 * math.ceil(per_item / 2) / 1e6:.6f}"
    first = run("snap", str(photos), "--batch", "--max-cost", limit, "--json")
    assert first.exit_code == 3, first.output  # work held back: raise --max-cost to go on
    payload = json.loads(first.stdout)["batch"]
    assert "raise --max-cost to go on" in payload["stop_reason"]
    assert sum(batch["items"] for batch in payload["submitted"]) == 2
    assert status(db)["counts"]["batched"] == 2 and status(db)["counts"]["queued"] == 4
    for _ in range(6):  # collect; real costs below the estimate may leave room for one more
        run("snap", str(photos), "--batch", "--max-cost", limit)
    report = status(db)
    assert 2 <= report["counts"]["done"] < 6 and report["counts"]["queued"] >= 1
    assert report["counts"].get("batched", 0) == 0
    assert report["cost_micro_usd"] <= float(limit) * 1e6  # the budget held
    raised = run("snap", str(photos), "--batch", "--max-cost", "1", "--json")
    assert raised.exit_code == 0, raised.output
    assert (
        sum(b["items"] for b in json.loads(raised.stdout)["batch"]["submitted"])
        == (report["counts"]["queued"])
    )
