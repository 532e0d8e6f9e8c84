"""Review without a browser: revisions, decisions and "ask again" in the store, and what
`listings`, `listings --item` and `export --approved` make of them."""

from __future__ import annotations

import csv
import io
import json
import re
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
from dealscout_cli.store.reviews import Decision, GridQuery, GridSort

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


def test_the_overview_view_shows_the_sellers_edit(photos: Path, db: Path) -> None:
    run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    edit_title(db, 1, "Seller's title")
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT title, edited_by FROM item_overview WHERE id = 1").fetchone()
    assert row == ("Seller's title", "seller")


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


# ------------------------------------------------------------------ the grid


def claim_and_complete(
    store: Store, photo: Path, title: str, *, confidence: float, prices: tuple[float, ...] | None
) -> int:
    """One item through the queue with the answer a model could give (the store's own
    claim and complete, as the pipeline calls them)."""
    from dealscout_cli.models import Condition, PriceEstimate
    from dealscout_cli.scan import scan

    store.enqueue(scan([photo]).items, now=time.time())
    lease = store.claim_next_job("test", now=time.time(), lease_seconds=60)
    assert lease is not None
    price = None
    if prices is not None:
        low, suggested, high = prices
        price = PriceEstimate(
            low=low, suggested=suggested, high=high, currency="USD", rationale="r"
        )
    store.complete(
        lease,
        now=time.time(),
        run_id=None,
        identification=Identification(
            title=title,
            description="d",
            category="c",
            condition=Condition.GOOD,
            confidence=confidence,
        ),
        price=price,
        prompt_version="test",
        vision_model="m",
        pricing_model="m" if price else None,
        offline=False,
    )
    return lease.item_id


@pytest.fixture
def grid_store(tmp_path: Path, db: Path) -> Any:
    from photo_factory import make_jpeg

    with Store.open(db) as store:
        ids = {}
        for n, (name, confidence, prices) in enumerate(
            [
                ("sure", 0.9, (10, 12, 14)),
                ("unsure", 0.3, (10, 12, 14)),
                ("wide", 0.9, (5, 10, 30)),
                ("blurred", 0.9, (10, 12, 14)),
                ("priceless 100% wool", 0.9, None),
                ("approved unsure", 0.2, (1, 2, 3)),
            ]
        ):
            photo = make_jpeg(tmp_path / "p" / f"{n}.jpg", kind="mug", seed=n)
            ids[name] = claim_and_complete(store, photo, name, confidence=confidence, prices=prices)
        store.set_item_facts(ids["blurred"], quality_warnings=["blurry: reshoot"])
        store.decide(ids["approved unsure"], Decision.APPROVED, now=time.time())
        failed = make_jpeg(tmp_path / "p" / "failed.jpg", kind="lamp", seed=50)
        from dealscout_cli.scan import scan

        store.enqueue(scan([failed]).items, now=time.time())
        lease = store.claim_next_job("test", now=time.time(), lease_seconds=60)
        assert lease is not None
        store.fail(lease, now=time.time(), kind="bad_output", error="no JSON", retryable=False)
        ids["failed"] = lease.item_id
        yield store, ids


def test_needs_attention_is_unsure_wide_badly_photographed_or_failed_and_undecided(
    grid_store: Any,
) -> None:
    store, ids = grid_store
    page = store.grid(GridQuery(attention=True))
    assert {row["item_id"] for row in page.rows} == {
        ids["unsure"],
        ids["wide"],
        ids["blurred"],
        ids["failed"],
    }
    assert all(row["attention"] for row in page.rows)
    assert store.grid(GridQuery(state="approved")).total == 1
    assert store.grid(GridQuery(state="failed")).rows[0]["error"] == "no JSON"


def test_the_grid_pages_sorts_and_finds_text_as_typed(grid_store: Any) -> None:
    store, ids = grid_store
    first = store.grid(GridQuery(page_size=4))
    second = store.grid(GridQuery(page_size=4, page=2))
    assert first.total == 7 and first.pages == 2
    assert len(first.rows) == 4 and len(second.rows) == 3
    by_price = store.grid(GridQuery(sort=GridSort.PRICE, descending=True))
    assert by_price.rows[-1]["price_suggested"] is None  # no price: last either way
    prices = [row["price_suggested"] for row in by_price.rows if row["price_suggested"] is not None]
    assert prices == sorted(prices, reverse=True)
    assert store.grid(GridQuery(sort=GridSort.PRICE)).rows[0]["item_id"] == ids["approved unsure"]
    assert [r["item_id"] for r in store.grid(GridQuery(text="100%")).rows] == [
        ids["priceless 100% wool"]
    ]
    assert store.grid(GridQuery(text="1_0%")).total == 0  # no LIKE wildcards
    assert store.grid(GridQuery(text="UNSURE")).total == 2


# ------------------------------------------------------------------ older files, start-up


def test_a_database_from_before_review_gets_its_drafts_as_first_revisions(
    photos: Path, db: Path
) -> None:
    run("snap", str(photos), "--offline", "--quiet", "--db", str(db))
    before = titles(db)
    with sqlite3.connect(db) as conn:  # as an older dealscout left it: no m005_review
        conn.execute("DROP TABLE revisions")
        conn.execute("DROP TABLE reviews")
        conn.execute("DELETE FROM _dealscout_migrations WHERE name = 'm005_review'")
    assert "older dealscout" in run("listings", "--db", str(db)).output  # readers never migrate
    with Store.open(db) as store:  # a writer (snap, review) does
        assert [r.author.value for r in store.revisions(1)] == ["model"]
        assert store.grid(GridQuery()).total == len(before)
    assert titles(db) == before


def test_the_review_app_never_imports_google_genai() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import dealscout_cli.review.app, dealscout_cli.review.forms, dealscout_cli.export\n"
        "import dealscout_cli.status, dealscout_cli.costs, dealscout_cli.cli.review\n"
        "print([m for m in sys.modules if m.startswith(('google', 'dealscout_cli.providers'))])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_grid_shows_a_price_to_the_cent_as_the_export_does(tmp_path: Path) -> None:
    from dealscout_cli.review.app import ReviewApp

    with Store.open(tmp_path / "dealscout.db") as store:
        usd = ReviewApp(store, port=8000).templates.globals["usd"]
        # 2.675 and 1.005 are a hair under in binary: f"{x:.2f}" says 2.67 and 1.00
        assert [usd(2.675, "USD"), usd(1.005, "EUR"), usd(1234.5, None), usd(None)] == [
            "2.68 USD", "1.01 EUR", "1,234.50", "–",
        ]  # fmt: skip


def test_the_export_page_offers_every_export_format(tmp_path: Path) -> None:
    from dealscout_cli.export import ExportFormat
    from dealscout_cli.review.app import EXPORT_FORMATS, ReviewApp

    with Store.open(tmp_path / "dealscout.db") as store:
        html = ReviewApp(store, port=8000).page("export.html", formats=EXPORT_FORMATS, approved=0)
    options = re.findall(r'<option value="([^"]*)">', html.body.decode())
    assert options == [fmt.value for fmt in ExportFormat]
