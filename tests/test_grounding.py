"""--grounded-prices: the Google Search tool on the pricing call, its fee, its sources."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.costs import PRICE_TABLE, call_cost_micros, grounding_fee_micros
from dealscout_cli.emulator import Emulator, EmulatorConfig
from dealscout_cli.pipeline import strip_code_fence

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_grounding_fee_follows_each_family_rule() -> None:
    assert grounding_fee_micros("gemini-3.5-flash-lite", 2) == 28_000  # $14 / 1,000 queries
    assert grounding_fee_micros("gemini-3.5-flash-lite", 0) == 0  # it chose not to search
    assert grounding_fee_micros("gemini-2.5-flash", 3) == 35_000  # $35 / 1,000 prompts
    assert grounding_fee_micros("some-new-model", 1) == 35_000


def test_code_fences_are_stripped() -> None:
    assert strip_code_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_code_fence('  {"a": 1} ') == '{"a": 1}'


def test_off_by_default(photos: Path, db: Path, env_with_key, emulator: Any) -> None:
    assert run("snap", str(photos), "--quiet").exit_code == 0
    assert emulator.stats().grounded_requests == 0
    assert rows(db, "SELECT COUNT(*) FROM stages WHERE stage = 'price'") == [(0,)]


def test_grounded_prices_online(photos: Path, db: Path, env_with_key, emulator: Any) -> None:
    result = run("snap", str(photos), "--grounded-prices", "--quiet")
    assert result.exit_code == 0, result.output
    assert emulator.stats().grounded_requests == 6  # pricing only, never identification
    listings = json.loads(run("listings", "--json").stdout)
    assert len(listings) == 6
    assert all(x["price"]["low"] <= x["price"]["suggested"] <= x["price"]["high"] for x in listings)
    stages = rows(db, "SELECT output FROM stages WHERE stage = 'price'")
    assert len(stages) == 6
    for (output,) in stages:
        saved = json.loads(output)
        assert saved["grounding_sources"] and all(
            uri.startswith("https://example.com/") for uri in saved["grounding_sources"]
        )
        assert saved["search_queries"] == 2
    calls = rows(db, "SELECT stage, model, input_tokens, output_tokens, cost_micro_usd FROM calls")
    for stage, model, tokens_in, tokens_out, cost in calls:
        tokens = call_cost_micros(PRICE_TABLE, model, tokens_in, tokens_out)
        extra = grounding_fee_micros(model, 2) if stage == "price" else 0
        assert cost == tokens + extra


def test_grounded_prices_in_batch_mode(
    photos: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Against a served emulator, not --offline: offline calls cost nothing, this checks prices.
    with Emulator(EmulatorConfig(seed=1, batch_seconds=0.0)) as emu:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.url)
        for _ in range(3):  # collect identify, submit price; collect price
            result = run("snap", str(photos), "--batch", "--grounded-prices")
            assert result.exit_code == 0, result.output
    assert len(json.loads(run("listings", "--json").stdout)) == 6
    assert rows(db, "SELECT grounded FROM batches ORDER BY id") == [(0,), (1,)]
    calls = rows(db, "SELECT stage, model, input_tokens, output_tokens, cost_micro_usd FROM calls")
    for stage, model, tokens_in, tokens_out, cost in calls:
        half = call_cost_micros(PRICE_TABLE, model, tokens_in, tokens_out, batch=True)
        assert cost == half + (grounding_fee_micros(model, 2) if stage == "price" else 0)
    sources = rows(db, "SELECT output FROM stages WHERE stage = 'price'")
    assert len(sources) == 6 and all(json.loads(o)["grounding_sources"] for (o,) in sources)


def test_emulator_refuses_json_mode_with_search(emulator: Any) -> None:
    from google import genai
    from google.genai import errors, types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=emulator.url))
    config = types.GenerateContentConfig(
        response_mime_type="application/json",
        tools=[types.Tool(google_search=types.GoogleSearch())],
    )
    try:
        client.models.generate_content(model="gemini-3.5-flash-lite", contents="x", config=config)
    except errors.ClientError as exc:
        assert exc.code == 400
    else:
        raise AssertionError("JSON mode with tools was accepted")
    finally:
        client.close()
