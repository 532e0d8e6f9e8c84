"""Review without a browser: revisions, decisions and "ask again" in the store, and what
`listings`, `listings --item` and `export --approved` make of them."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.errors import UsageError
from dealscout_cli.models import Identification
from dealscout_cli.store import Store
from dealscout_cli.store.reviews import Decision, GridQuery

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def edit_title(db: Path, item_id: int, title: str) -> None:
    """What the review page's Save does: the current listing with a new title."""
    with Store.open(db) as store:
        listing = store.listings(item_id=item_id)[0]
        edited = listing.identification.model_copy(update={"title": title})
        store.save_seller_revision(
            item_id,
            Identification.model_validate(edited.model_dump()),
            listing.price,
            now=time.time(),
        )


def titles(db: Path) -> dict[int, str]:
    listings = json.loads(run("listings", "--json", "--db", str(db)).stdout)
    return {x["item_id"]: x["identification"]["title"] for x in listings}


def test_a_sellers_edit_is_the_listing_and_the_models_draft_is_kept(photos: Path, db: Path) -> None:
    run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    model_title = titles(db)[1]
    edit_title(db, 1, "Blue stoneware mug, 12 oz")
    assert titles(db)[1] == "Blue stoneware mug, 12 oz"
    shown = json.loads(run("listings", "--item", "1", "--json", "--db", str(db)).stdout)
    assert [(r["number"], r["author"]) for r in shown["revisions"]] == [(1, "model"), (2, "seller")]
    assert shown["revisions"][0]["fields"]["identification"]["title"] == model_title
    table = run("listings", "--item", "1", "--db", str(db)).stdout
    assert "revision 2" in table and "seller" in table
    assert f"title: {model_title} → Blue stoneware mug, 12 oz" in " ".join(table.split())


def test_saving_an_unchanged_listing_stores_no_revision(photos: Path, db: Path) -> None:
    run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    edit_title(db, 2, titles(db)[2])
    with Store.open(db) as store:
        assert len(store.revisions(2)) == 1


def test_export_approved_writes_exactly_the_approved_listings_as_edited(
    photos: Path, db: Path
) -> None:
    run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    edit_title(db, 1, '=cmd|" /C calc"!A0 mug')  # a seller's text is still no formula
    with Store.open(db) as store:
        store.decide(1, Decision.APPROVED, now=time.time())
        store.decide(3, Decision.APPROVED, now=time.time())
        store.decide(2, Decision.REJECTED, now=time.time())
    result = run("export", "--approved", "--db", str(db))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    with Store.open(db) as store:
        skus = {store.listings(item_id=i)[0].sku: i for i in (1, 3)}
    assert {row["sku"] for row in rows} == set(skus)
    assert '\'=cmd|" /C calc"!A0 mug' in [row["title"] for row in rows]
    everything = list(csv.DictReader(io.StringIO(run("export", "--db", str(db)).stdout)))
    assert len(everything) == 6  # six photos, grouped by time: six items


def test_a_rerun_never_overwrites_a_sellers_edit(
    photos: Path, db: Path, env_with_key: dict[str, str]
) -> None:
    assert run("snap", str(photos), "--group", "folder", "--quiet").exit_code == 0
    edit_title(db, 1, "Seller's own title")
    result = run("snap", str(photos), "--group", "folder", "--force", "--quiet")
    assert result.exit_code == 0, result.output
    assert titles(db)[1] == "Seller's own title"
    with Store.open(db) as store:
        assert [r.author.value for r in store.revisions(1)] == ["model", "seller"]
        assert [r.author.value for r in store.revisions(2)] == ["model", "model"]


def test_ask_again_sends_the_note_and_the_answer_is_a_new_model_revision(
    photos: Path, db: Path, emulator: Any, env_with_key: dict[str, str]
) -> None:
    assert run("snap", str(photos), "--group", "folder", "--quiet").exit_code == 0
    edit_title(db, 2, "Seller's first try")
    with sqlite3.connect(db) as conn:
        calls_before = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    emulator.app.stats.reset()
    with Store.open(db) as store:
        store.decide(2, Decision.APPROVED, now=time.time())
        store.ask_again(2, "it is a Le Creuset,\n not a Staub", now=time.time())
        assert store.grid(GridQuery(state="queued")).total == 1
    result = run("snap", "--quiet")  # no paths: the queue
    assert result.exit_code == 0, result.output
    prompts = emulator.stats().prompts
    assert any("it is a Le Creuset, not a Staub" in prompt for prompt in prompts)
    with sqlite3.connect(db) as conn:
        paid = conn.execute("SELECT item_id, stage FROM calls").fetchall()[calls_before:]
    assert sorted(paid) == [(2, "identify"), (2, "price")]  # only what was redone
    with Store.open(db) as store:
        history = store.revisions(2)
        assert [r.author.value for r in history] == ["model", "seller", "model"]
        assert history[1].fields["identification"]["title"] == "Seller's first try"
        review = store.review_of(2)
        assert review["asked_at"] is None and review["decision"] is None  # to be looked at again
    assert titles(db)[2] == history[2].fields["identification"]["title"]


@pytest.mark.parametrize("note", ["", "   \n ", "x" * 1001])
def test_ask_again_needs_a_note_of_sane_length(photos: Path, db: Path, note: str) -> None:
    run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    with Store.open(db) as store, pytest.raises(UsageError):
        store.ask_again(1, note, now=time.time())


def test_only_a_listing_can_be_approved(tmp_path: Path, db: Path) -> None:
    broken = tmp_path / "photos" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    run("snap", str(broken.parent), "--offline", "--quiet", "--db", str(db))
    with Store.open(db) as store, pytest.raises(UsageError, match="no listing"):
        store.decide(1, Decision.APPROVED, now=time.time())
