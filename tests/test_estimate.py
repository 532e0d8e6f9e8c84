"""`estimate` predicts what `snap` will spend: checked against the emulator's own token counts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from photo_factory import make_jpeg
from PIL import Image
from typer.testing import CliRunner

from dealscout_cli.cli.estimate import estimate_command
from dealscout_cli.config import Settings
from dealscout_cli.estimate import (
    IDENTIFY_OUTPUT_TOKENS,
    PRICE_OUTPUT_TOKENS,
    Estimate,
    ModelRow,
    estimate,
    fit_within,
    prepared_size,
)
from dealscout_cli.images import prepare_photo
from dealscout_cli.snap import snap
from dealscout_cli.tokens import image_tokens

SIZES = ((300, 200), (1024, 768), (4000, 3000))


@pytest.fixture(scope="module")
def three_sizes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One photo at each size, a sideways phone photo, and a three-photo item in its own folder."""
    folder = tmp_path_factory.mktemp("three_sizes")
    for (width, height), kind in zip(SIZES, ("mug", "book", "lamp"), strict=True):
        make_jpeg(folder / f"{kind}-{width}.jpg", (width, height), kind=kind, seed=width)
    make_jpeg(folder / "phone.jpg", (1600, 1200), kind="handbag", seed=9, orientation=6)
    for angle, size in (("front", (300, 200)), ("side", (1024, 768)), ("sole", (2000, 1500))):
        make_jpeg(folder / "sneaker" / f"{angle}.jpg", size, kind="sneaker", seed=len(angle))
    return folder


def recorded_input_tokens(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT stage, SUM(input_tokens) FROM calls WHERE outcome = 'ok' GROUP BY stage"
        )
        return dict(rows.fetchall())


def predicted_and_recorded(
    folder: Path, settings: Settings, group: str
) -> dict[str, tuple[int, int]]:
    """stage → (estimated input tokens, input tokens the emulator counted in an offline snap)."""
    predicted = estimate([folder], settings, group=group)  # type: ignore[arg-type]
    result = snap([folder], settings.with_(offline=True), group=group, handle_signals=False)
    assert result.exit_code == 0
    recorded = recorded_input_tokens(settings.db_path)
    return {row.stage: (row.input_tokens, recorded[row.stage]) for row in predicted.rows}


def relative_error(pair: tuple[int, int]) -> float:
    estimated, recorded = pair
    return abs(estimated - recorded) / recorded


@pytest.mark.parametrize("max_side", [768, 1600])
def test_estimate_is_within_5_percent_of_the_emulators_token_counts(
    three_sizes: Path, db: Path, max_side: int
) -> None:
    tokens = predicted_and_recorded(three_sizes, Settings(db_path=db, max_side=max_side), "photo")
    # Measured: identify 0.0 % (exact), price 0.8 % (768 px) and 1.2 % (1600 px).
    assert relative_error(tokens["identify"]) < 0.05, tokens
    assert relative_error(tokens["price"]) < 0.05, tokens


@pytest.mark.parametrize("max_side", [768, 1600])
def test_multi_photo_items_are_estimated_photo_by_photo(
    three_sizes: Path, db: Path, max_side: int
) -> None:
    tokens = predicted_and_recorded(three_sizes, Settings(db_path=db, max_side=max_side), "folder")
    assert relative_error(tokens["identify"]) < 0.05, tokens
    # Two pricing prompts are too few to average out the answers' lengths (0.7 % and 6 % off);
    # the run as a whole, dominated by the photos, stays well within 5 %.
    total = tuple(sum(pair[i] for pair in tokens.values()) for i in (0, 1))
    assert relative_error(total) < 0.05, tokens  # type: ignore[arg-type]


def test_vision_tokens_count_every_photo_at_its_prepared_size(three_sizes: Path, db: Path) -> None:
    gemini_2 = Settings(db_path=db, vision_model="gemini-2.5-flash")
    one_tile = estimate([three_sizes / "mug-300.jpg"], gemini_2)
    big = estimate([three_sizes / "lamp-4000.jpg"], gemini_2.with_(max_side=1600))
    # 4000×3000 sent at 1600×1200: 3 × 2 tiles; the text is the same in both.
    small_vision, big_vision = (e.rows[0].input_tokens for e in (one_tile, big))
    assert big_vision - small_vision == 258 * 6 - 258


def test_items_already_done_cost_nothing(photos: Path, db: Path, emulator: Any) -> None:
    settings = Settings(db_path=db)
    before = estimate([photos], settings)
    real = settings.with_(base_url=emulator.url, api_key="any-key-works-here")
    snap([photos], real, handle_signals=False)
    after = estimate([photos], settings)
    assert (before.already_done, after.already_done) == (0, before.items)
    assert after.requests == 0
    assert after.cost_micro_usd == 0
    assert before.cost_micro_usd and before.cost_micro_usd > 0


def test_identified_items_are_only_priced(photos: Path, db: Path, emulator: Any) -> None:
    settings = Settings(db_path=db)
    real = settings.with_(base_url=emulator.url, api_key="any-key-works-here")
    snap([photos], real, handle_signals=False)
    with sqlite3.connect(db) as conn:  # as if pricing had failed after identification
        conn.execute("UPDATE jobs SET state = 'queued' WHERE item_id = 1")
        conn.execute("DELETE FROM listings WHERE item_id = 1")
    predicted = estimate([photos], settings)
    assert (predicted.to_identify, predicted.to_price) == (0, 1)
    assert [row.requests for row in predicted.rows] == [0, 1]


def test_cost_per_item_is_one_identify_and_one_price_call_at_the_high_end(
    photos: Path, db: Path
) -> None:
    predicted = estimate([photos], Settings(db_path=db))
    identify, price = predicted.rows
    assert identify.cost_micro_usd is not None and price.cost_micro_usd is not None
    mean = -(-identify.cost_micro_usd // identify.requests) - (-price.cost_micro_usd // 6)
    # A budget plans for long answers and the top of the thoughts' spread, not the mean.
    assert predicted.cost_per_item_micro_usd is not None
    assert mean < predicted.cost_per_item_micro_usd < mean * 1.5


def test_cost_per_item_is_typical_when_nothing_is_left_to_do(
    photos: Path, db: Path, emulator: Any
) -> None:
    settings = Settings(db_path=db)
    fresh = estimate([photos], settings)
    real = settings.with_(base_url=emulator.url, api_key="any-key-works-here")
    snap([photos], real, handle_signals=False)
    done = estimate([photos], settings)
    assert done.cost_micro_usd == 0
    # A budget still needs a price for the next item someone queued: a 12 MP photo's.
    assert done.cost_per_item_micro_usd == pytest.approx(fresh.cost_per_item_micro_usd, rel=0.05)


def test_answer_tokens_are_per_stage_constants(photos: Path, db: Path) -> None:
    predicted = estimate([photos], Settings(db_path=db))
    identify, price = predicted.rows
    assert identify.answer_tokens == identify.requests * IDENTIFY_OUTPUT_TOKENS
    assert price.answer_tokens == price.requests * PRICE_OUTPUT_TOKENS
    assert identify.output_tokens == identify.answer_tokens + identify.thinking_tokens


def test_estimate_does_not_create_a_database(photos: Path, db: Path) -> None:
    estimate([photos], Settings(db_path=db))
    assert not db.exists()


def test_unknown_model_has_no_cost_rather_than_a_wrong_one(photos: Path, db: Path) -> None:
    predicted = estimate([photos], Settings(db_path=db, pricing_model="gemini-99-ultra"))
    assert predicted.rows[0].cost_micro_usd is not None
    assert predicted.rows[1].cost_micro_usd is None
    assert predicted.cost_micro_usd is None


def test_unreadable_photo_is_listed_and_its_item_costs_nothing(tmp_path: Path, db: Path) -> None:
    folder = tmp_path / "photos"
    make_jpeg(folder / "mug.jpg", kind="mug")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "tiny.jpg").write_bytes(b"")  # empty: the scan skips it itself
    predicted = estimate([folder], Settings(db_path=db))
    assert predicted.to_identify == 1
    assert [photo.path.endswith("broken.jpg") for photo in predicted.unusable] == [True]
    assert predicted.scan_problems == 1


@pytest.mark.parametrize(
    ("size", "orientation"),
    [
        ((4000, 3000), None),
        ((3000, 4000), None),
        ((1600, 1200), 6),
        ((1001, 333), 8),
        ((777, 769), None),
        ((500, 400), 5),
        ((2049, 1537), None),
    ],
)
def test_prepared_size_matches_prepare_photo(
    tmp_path: Path, size: tuple[int, int], orientation: int | None
) -> None:
    path = make_jpeg(tmp_path / "p.jpg", size, orientation=orientation)
    prepared = prepare_photo(path)
    assert prepared_size(path, 768) == (prepared.width, prepared.height)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=64, max_value=2048),
)
def test_fit_within_is_pillows_thumbnail_size(width: int, height: int, max_side: int) -> None:
    image = Image.new("1", (width, height))
    image.thumbnail((max_side, max_side))
    assert fit_within((width, height), max_side) == image.size


def test_png_is_sized_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "shot.png"
    Image.new("RGB", (2000, 1000), "white").save(path)
    assert prepared_size(path, 768) == (768, 384)
    assert image_tokens(768, 384) == 258


# ---------------------------------------------------------------- the command


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("estimate")(estimate_command)
    app.command("other")(lambda: None)  # two commands, so `estimate` is a subcommand as in cli.py
    return app


def test_command_json(cli: typer.Typer, photos: Path, db: Path) -> None:
    result = CliRunner().invoke(cli, ["estimate", str(photos), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["items"] == 6
    assert payload["to_identify"] == 6
    assert [m["stage"] for m in payload["models"]] == ["identify", "price"]
    assert payload["cost_micro_usd"] == sum(m["cost_micro_usd"] for m in payload["models"])


def test_command_table(cli: typer.Typer, photos: Path, db: Path) -> None:
    result = CliRunner().invoke(cli, ["estimate", str(photos), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "gemini-3.6-flash" in result.stdout
    assert "6 items, 6 to process" in result.stdout
    assert "total" in result.stdout


def test_command_refuses_a_missing_folder(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["estimate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_command_help_ends_with_an_example(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["estimate", "--help"])
    assert "Example: dealscout estimate ./photos" in result.stdout


def test_table_keeps_big_numbers_whole_at_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dealscout_cli.cli.options import out
    from dealscout_cli.cli.render import render_estimate

    monkeypatch.setattr(out.console, "width", 80)  # a cron mail or a default terminal
    rows = [
        ModelRow(
            "gemini-3.6-flash",
            "identify",
            10_000,
            4_710_000,
            5_700_000,
            25_820_000,
            thinking_tokens=3_200_000,
            answer_tokens=2_500_000,
        ),
        ModelRow(
            "gemini-3.5-flash-lite",
            "price",
            10_000,
            2_060_000,
            1_200_000,
            2_620_000,
            thinking_tokens=400_000,
            answer_tokens=800_000,
        ),
    ]
    render_estimate(Estimate(items=10_000, to_identify=10_000, photos=10_000, rows=rows))
    table = capsys.readouterr().out
    assert "…" not in table
    for number in ("4,710,000", "~2,500,000", "~3,300,000", "~3,600,000", "20,000", "$28.44"):
        assert number in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_offline_placeholders_are_still_to_pay_for(photos: Path, db: Path) -> None:
    settings = Settings(db_path=db)
    before = estimate([photos], settings)
    snap([photos], settings.with_(offline=True), handle_signals=False)
    after = estimate([photos], settings)
    assert after.already_done == 0 and after.cost_micro_usd == before.cost_micro_usd
