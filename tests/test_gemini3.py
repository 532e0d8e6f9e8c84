"""Gemini 3 billing: dealscout says its media resolution and thinking level, the emulator
bills images by resolution and thoughts as output, and `estimate` predicts the bill."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types
from PIL import Image
from typer.testing import CliRunner

from dealscout_cli import costs
from dealscout_cli.cli import app
from dealscout_cli.config import Settings, resolve, stage_options, validate
from dealscout_cli.costs import call_cost_micros, load_prices
from dealscout_cli.errors import UsageError
from dealscout_cli.estimate import estimate
from dealscout_cli.models import Identification
from dealscout_cli.providers.base import ModelRequest
from dealscout_cli.providers.gemini import GeminiProvider
from dealscout_cli.snap import snap
from dealscout_cli.tokens import THINKING_TOKENS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GEMINI_3 = "gemini-3.6-flash"
GEMINI_2 = "gemini-2.5-flash"


def photo(width: int = 2000, height: int = 1500) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (180, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def client_for(emulator: Any) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=emulator.url))


def call_totals(db: Path) -> dict[str, tuple[int, int, int]]:
    """stage → (input tokens, output tokens, cost) the run recorded for its answered calls."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT stage, SUM(input_tokens), SUM(output_tokens), SUM(cost_micro_usd)"
            " FROM calls WHERE outcome = 'ok' GROUP BY stage"
        )
        return {stage: (i, o, c) for stage, i, o, c in rows.fetchall()}


# --- a. dealscout says what it wants --------------------------------------------------------


def test_gemini_3_requests_carry_resolution_and_thinking_from_settings() -> None:
    assert stage_options(GEMINI_3, "medium", "low") == ("medium", "low")
    assert stage_options("models/gemini-3.5-flash-lite-001", None, "minimal") == (None, "minimal")


@pytest.mark.parametrize("model", [GEMINI_2, "gemma-4-27b"])
def test_other_families_requests_stay_as_they_were(model: str) -> None:
    assert stage_options(model, "low", "high") == (None, None)


def test_the_sdk_config_names_resolution_and_thinking_level() -> None:
    provider = GeminiProvider(api_key="k", base_url="http://127.0.0.1:9")
    request = ModelRequest(
        GEMINI_3, "s", "p", Identification, media_resolution="low", thinking_level="minimal"
    )
    config = provider._config(request)
    plain = provider._config(ModelRequest(GEMINI_2, "s", "p", Identification))
    asyncio.run(provider.aclose())
    assert config.media_resolution == types.MediaResolution.MEDIA_RESOLUTION_LOW
    assert config.thinking_config is not None
    assert config.thinking_config.thinking_level == types.ThinkingLevel.MINIMAL
    assert plain.media_resolution is None and plain.thinking_config is None


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"media_resolution": "ultra"}, "--media-resolution"),
        ({"media_resolution": ""}, "--media-resolution"),
        ({"identify_thinking": "none"}, "--thinking"),
        ({"price_thinking": "xhigh"}, "--thinking"),
    ],
)
def test_settings_outside_googles_values_are_refused_by_name(
    changes: dict[str, str], flag: str
) -> None:
    with pytest.raises(UsageError, match=flag):
        validate(Settings(api_key="k", **changes))


def test_flags_are_read_without_regard_to_case() -> None:
    settings = resolve({}, media_resolution=" Medium", identify_thinking="HIGH")
    assert (settings.media_resolution, settings.identify_thinking) == ("medium", "high")


def test_a_bad_thinking_level_is_one_line_and_exit_2(photos: Path) -> None:
    result = CliRunner().invoke(app, ["estimate", str(photos), "--thinking", "extreme"])
    assert result.exit_code == 2, result.output
    assert "--thinking must be one of minimal, low, medium, high" in result.output
    assert "Traceback" not in result.output


def test_snap_sends_the_chosen_resolution(photos: Path, db: Path, emulator: Any) -> None:
    settings = Settings(db_path=db, base_url=emulator.url, api_key="k", media_resolution="low")
    assert snap([photos], settings, group="folder", handle_signals=False).exit_code == 0
    with sqlite3.connect(db) as conn:
        text_only = conn.execute(
            "SELECT SUM(input_tokens) FROM calls WHERE stage = 'identify'"
        ).fetchone()[0]
    # Six photos at LOW: 280 tokens each, whatever their size, plus the prompts' text.
    predicted = estimate([photos], settings.with_(db_path=db.with_name("none.db")), "folder")
    assert text_only == predicted.rows[0].input_tokens
    assert predicted.photos == 6
    high = estimate([photos], Settings(db_path=db.with_name("none.db")), "folder")
    assert high.rows[0].input_tokens - predicted.rows[0].input_tokens == 6 * (1120 - 280)


def test_gemini_2_snap_keeps_the_tile_rule(photos: Path, db: Path, emulator: Any) -> None:
    settings = Settings(
        db_path=db, base_url=emulator.url, api_key="k", vision_model=GEMINI_2,
        media_resolution="low", identify_thinking="high",
    )  # fmt: skip
    assert snap([photos], settings, group="folder", handle_signals=False).exit_code == 0
    identify_in, identify_out, _ = call_totals(db)["identify"]
    predicted = estimate([photos], settings.with_(db_path=db.with_name("none.db")), "folder")
    # No mediaResolution went out (Gemini 2.x would cap at 64 a photo), and no thoughts.
    assert identify_in == predicted.rows[0].input_tokens
    assert predicted.rows[0].thinking_tokens == 0
    assert identify_out < 4 * 400


# --- c. the emulator plays Gemini 3 ---------------------------------------------------------


def generate(client: genai.Client, model: str, **config: Any) -> types.GenerateContentResponse:
    return client.models.generate_content(
        model=model,
        contents=[types.Part.from_bytes(data=photo(), mime_type="image/jpeg"), "what is it?"],
        config=types.GenerateContentConfig(**config),
    )


def image_tokens_of(response: types.GenerateContentResponse) -> int:
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_tokens_details is not None
    details = {d.modality: d.token_count for d in usage.prompt_tokens_details}
    return details[types.MediaModality.IMAGE] or 0


@pytest.mark.parametrize(
    ("resolution", "tokens"),
    [
        (None, 1120),
        (types.MediaResolution.MEDIA_RESOLUTION_LOW, 280),
        (types.MediaResolution.MEDIA_RESOLUTION_MEDIUM, 560),
        (types.MediaResolution.MEDIA_RESOLUTION_HIGH, 1120),
    ],
)
def test_emulator_bills_a_gemini_3_image_by_resolution(
    emulator: Any, resolution: types.MediaResolution | None, tokens: int
) -> None:
    with client_for(emulator) as client:
        assert image_tokens_of(generate(client, GEMINI_3, media_resolution=resolution)) == tokens


def test_emulator_lets_a_parts_resolution_override_the_requests(emulator: Any) -> None:
    part = types.Part.from_bytes(
        data=photo(),
        mime_type="image/jpeg",
        media_resolution=types.MediaResolution.MEDIA_RESOLUTION_LOW,
    )
    with client_for(emulator) as client:
        response = client.models.generate_content(
            model=GEMINI_3,
            contents=[part, "what is it?"],
            config=types.GenerateContentConfig(
                media_resolution=types.MediaResolution.MEDIA_RESOLUTION_HIGH
            ),
        )
    assert image_tokens_of(response) == 280


def test_emulator_keeps_tiles_for_gemini_2(emulator: Any) -> None:
    with client_for(emulator) as client:
        assert image_tokens_of(generate(client, GEMINI_2)) == 258 * 6  # 2000x1500: 3x2 tiles


def thoughts(emulator: Any, model: str, level: str | None) -> int | None:
    thinking = types.ThinkingConfig(thinking_level=level) if level else None
    with client_for(emulator) as client:
        usage = generate(client, model, thinking_config=thinking).usage_metadata
    assert usage is not None
    if usage.thoughts_token_count:
        # Billed as output: the total holds the thoughts.
        assert usage.total_token_count == (
            (usage.prompt_token_count or 0)
            + (usage.candidates_token_count or 0)
            + usage.thoughts_token_count
        )
    return usage.thoughts_token_count


def test_emulator_thinks_more_at_higher_levels_and_high_by_default(emulator: Any) -> None:
    counts = {level: thoughts(emulator, GEMINI_3, level) for level in THINKING_TOKENS}
    for level, count in counts.items():
        assert count is not None
        assert 0.8 * THINKING_TOKENS[level] <= count <= 1.2 * THINKING_TOKENS[level]
    assert list(counts.values()) == sorted(counts.values())  # type: ignore[type-var]
    assert thoughts(emulator, GEMINI_3, None) == counts["high"]


def test_emulator_thoughts_are_seeded(emulator: Any) -> None:
    assert thoughts(emulator, GEMINI_3, "LOW") == thoughts(emulator, GEMINI_3, "LOW")


def test_emulator_gemini_2_has_no_thoughts(emulator: Any) -> None:
    assert not thoughts(emulator, GEMINI_2, None)


def test_recorded_output_includes_the_thoughts(photos: Path, db: Path, emulator: Any) -> None:
    settings = Settings(db_path=db, base_url=emulator.url, api_key="k", identify_thinking="high")
    assert snap([photos], settings, handle_signals=False).exit_code == 0
    _, identify_out, _ = call_totals(db)["identify"]
    assert identify_out > 4 * 0.8 * THINKING_TOKENS["high"]


# --- e. the estimate predicts the emulator's bill -------------------------------------------


@pytest.mark.parametrize("resolution", ["low", "medium", "high"])
@pytest.mark.parametrize("thinking", ["minimal", "low", "medium", "high"])
def test_estimate_is_within_5_percent_of_the_emulators_bill(
    tmp_path: Path, emulator: Any, resolution: str, thinking: str
) -> None:
    db = tmp_path / "run.db"
    settings = Settings(
        db_path=db, media_resolution=resolution, identify_thinking=thinking,
        price_thinking=thinking,
    )  # fmt: skip
    predicted = estimate([EXAMPLES], settings, group="folder")
    online = settings.with_(base_url=emulator.url, api_key="k")
    assert snap([EXAMPLES], online, group="folder", handle_signals=False).exit_code == 0
    billed = call_totals(db)
    assert predicted.cost_micro_usd is not None
    cost = sum(c for _, _, c in billed.values())
    assert abs(predicted.cost_micro_usd - cost) / cost < 0.05, (predicted.to_dict(), billed)
    for row in predicted.rows:
        recorded_in, recorded_out, _ = billed[row.stage]
        assert abs(row.input_tokens - recorded_in) / recorded_in < 0.05, (row, billed)
        assert abs(row.output_tokens - recorded_out) / recorded_out < 0.15, (row, billed)


# --- d. prices: never silently free ---------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["gemini-3.6-flash-001", "models/gemini-3.6-flash", "models/gemini-3.6-flash-002"]
)
def test_a_pinned_version_is_priced_as_its_model(model: str) -> None:
    prices = load_prices()
    assert call_cost_micros(prices, model, 1000, 100) == call_cost_micros(
        prices, GEMINI_3, 1000, 100
    )


@pytest.mark.parametrize("model", ["gemini-flash-latest", "gemini-3.6-flash-exp", "gemma-4"])
def test_an_alias_or_unknown_model_has_no_price_rather_than_zero(model: str) -> None:
    assert call_cost_micros(load_prices(), model, 1000, 100) is None


def test_a_price_file_may_price_a_version_of_its_own(tmp_path: Path) -> None:
    file = tmp_path / "prices.json"
    file.write_text('{"gemini-3.6-flash-001": {"input": 0, "output": 1}}')
    prices = load_prices(file)
    assert call_cost_micros(prices, "gemini-3.6-flash-001", 1000, 100) == 100
    assert call_cost_micros(prices, "gemini-3.6-flash-002", 1000, 100) == 1500 + 750


def test_max_cost_refuses_an_unpriced_model_by_name(photos: Path, env_with_key: Any) -> None:
    result = CliRunner().invoke(
        app,
        ["snap", str(photos), "--max-cost", "1", "--vision-model", "gemini-flash-latest"],
    )
    assert result.exit_code == 2, result.output
    assert "gemini-flash-latest" in result.output and "--prices" in result.output
    assert "gemini-3.5-flash-lite" not in result.output  # that one has a price


def test_estimate_names_the_model_whose_cost_is_unknown(photos: Path) -> None:
    result = CliRunner().invoke(app, ["estimate", str(photos), "--pricing-model", "gemma-4"])
    assert result.exit_code == 0, result.output
    assert "no price for gemma-4: cost unknown" in result.output
    assert "$0.0000" not in result.output


def test_stale_prices_are_said_once_by_estimate_and_snap(
    photos: Path, env_with_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(costs, "PRICES_CHECKED", date.today() - timedelta(days=91))
    for command in ("estimate", "snap"):
        result = CliRunner().invoke(app, [command, str(photos)])
        assert result.exit_code == 0, result.output
        assert result.output.count("days ago); check https://ai.google.dev") == 1


def test_fresh_prices_are_not_warned_about() -> None:
    assert costs.stale_prices_note(costs.PRICES_CHECKED + timedelta(days=90)) is None
    assert costs.stale_prices_note(costs.PRICES_CHECKED + timedelta(days=91)) is not None
