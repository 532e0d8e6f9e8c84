"""A reseller's first hour, the fleet and export parts: distributed mode agrees with itself,
a Meta feed links to real product pages, grounded price sources and barcodes are shown.

Real SQLite files, real photos (with a real EAN-13 drawn on one), the real SDK against the
emulator, a real redis-server and real `dealscout` processes where signals and exits matter.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from conftest import FAKE_KEY
from fleet import Workers, free_port, wait_until
from photo_factory import product_image, save_jpeg
from PIL import Image
from processes import spawn
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.errors import UsageError
from dealscout_cli.export import ExportFormat, ExportOptions, export_listings
from dealscout_cli.models import Condition, Identification, Listing, ListingPhoto, PriceEstimate

runner = CliRunner()
EAN_13 = "4006381333931"
BASE_URL = "https://photos.example.com/shop"


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


# --- 13. Meta's link is the item's page in the seller's shop, never a made-up URL --------------


def listing(sku: str = "DS-0007", item_id: int = 7) -> Listing:
    return Listing(
        item_id=item_id,
        item_key="k" * 16,
        sku=sku,
        identification=Identification(
            title="Pyrex measuring cup",
            description="Glass cup.",
            category="Kitchen",
            brand="Pyrex",
            model=None,
            condition=Condition.USED,
            defects=[],
            confidence=0.9,
        ),
        price=PriceEstimate(low=8, suggested=10, high=12, currency="USD", rationale="sold"),
        photos=[ListingPhoto(path="/photos/cup/front.jpg", sha256="s")],
        prompt_version="v1",
        vision_model="m",
        pricing_model="m",
        created_at="2025-01-01T00:00:00Z",
    )


def meta_rows(items: list[Listing], **options: Any) -> list[dict[str, str]]:
    out = io.StringIO(newline="")
    export_listings(items, ExportFormat.META, out, ExportOptions(**options))
    return list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))


def test_meta_feed_is_refused_without_a_product_url_and_writes_no_file(
    tmp_path: Path, db: Path, photos: Path
) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    target = tmp_path / "meta.csv"
    result = run(
        "export", "--format", "meta", "--include-offline", "--photo-base-url", BASE_URL,
        "-o", str(target),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--product-url" in result.stderr
    assert not target.exists()


def test_meta_link_is_the_product_page_pattern_filled_in(tmp_path: Path) -> None:
    pattern = "https://shop.example.com/item?sku={sku}&id={item_id}"
    items = [listing("DS-0007", 7), listing("DS 08/ü", 8)]  # odd but legal SKU text
    found = meta_rows(items, photo_base_url=BASE_URL, product_url=pattern)
    assert [row["link"] for row in found] == [
        "https://shop.example.com/item?sku=DS-0007&id=7",
        "https://shop.example.com/item?sku=DS%2008%2F%C3%BC&id=8",
    ]
    assert all(not row["link"].startswith(BASE_URL) for row in found)


def test_meta_link_from_the_cli_option(tmp_path: Path, db: Path, photos: Path) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    result = run(
        "export", "--format", "meta", "--include-offline", "--photo-base-url", BASE_URL,
        "--product-url", "https://shop.example.com/p/{{x}}/{item_id}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    links = [row["link"] for row in csv.DictReader(io.StringIO(result.stdout, newline=""))]
    assert links and all(
        link.startswith("https://shop.example.com/p/{x}/") and link.split("/")[-1].isdigit()
        for link in links
    )


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        ("https://shop.example.com/p/", "same link"),  # every item one page
        ("https://shop.example.com/p/{SKU}", "unknown placeholder {SKU}"),
        ("https://shop.example.com/p/{sku", "not a pattern"),
        ("https://shop.example.com/p/{0}", "unknown placeholder {0}"),
        ("shop.example.com/p/{sku}", "http:// or https://"),
        ("https://{sku}.example.com/", "http:// or https://"),
    ],
)
def test_product_url_that_gives_no_real_page_is_refused(pattern: str, said: str) -> None:
    with pytest.raises(UsageError, match=said.replace("{", r"\{").replace("}", r"\}")):
        ExportOptions(product_url=pattern)


# --- 15. grounded price sources and barcodes are shown, not only stored ------------------------


def photo_with_barcode(path: Path) -> Path:
    code = zxingcpp.create_barcode(EAN_13, zxingcpp.BarcodeFormat.EAN13).to_image(scale=3)
    photo = product_image("book", (1024, 768), seed=7)
    photo.paste(Image.fromarray(code).convert("RGB"), (100, 384))
    return save_jpeg(photo, path, quality=90)


@pytest.fixture
def grounded_db(tmp_path: Path, db: Path, env_with_key: dict[str, str]) -> Path:
    folder = tmp_path / "shelf"
    photo_with_barcode(folder / "boxed.jpg")
    result = run("snap", str(folder), "--grounded-prices", "--quiet")
    assert result.exit_code == 0, result.output
    return db


def test_listing_item_shows_price_sources_and_barcodes(grounded_db: Path) -> None:
    shown = run("listings", "--item", "1")
    assert shown.exit_code == 0, shown.output
    assert "price source" in shown.stdout and "https://example.com/" in shown.stdout
    assert "barcode" in shown.stdout and EAN_13 in shown.stdout
    as_json = json.loads(run("listings", "--item", "1", "--json").stdout)
    assert as_json["barcodes"] == [EAN_13]
    assert as_json["price_sources"] and all(
        url.startswith("https://example.com/") for url in as_json["price_sources"]
    )


def test_csv_and_jsonl_exports_carry_the_price_sources(grounded_db: Path) -> None:
    sources = json.loads(run("listings", "--item", "1", "--json").stdout)["price_sources"]
    [row] = csv.DictReader(io.StringIO(run("export", "--format", "csv").stdout, newline=""))
    assert row["price_sources"] == " ".join(sources)
    [record] = [json.loads(line) for line in run("export", "--format", "jsonl").stdout.splitlines()]
    assert record["price_sources"] == sources


def test_a_hostile_price_source_stays_text_in_csv() -> None:
    item = listing().model_copy(
        update={"price_sources": ['=HYPERLINK("https://evil")', "https://a.example/x y"]}
    )
    out = io.StringIO(newline="")
    export_listings([item], ExportFormat.CSV, out)
    [row] = csv.DictReader(io.StringIO(out.getvalue(), newline=""))
    # one cell, a spreadsheet sees text; a space inside a URL cannot split it in two
    assert row["price_sources"] == '\'=HYPERLINK("https://evil") https://a.example/x%20y'


def test_listings_without_grounding_have_no_price_sources(db: Path, photos: Path) -> None:
    assert run("snap", str(photos), "--offline", "--quiet").exit_code == 0
    found = json.loads(run("listings", "--json").stdout)
    assert found and all(item["price_sources"] == [] for item in found)


# --- 12. distributed mode agrees with itself -----------------------------------------------------


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DEALSCOUT_BROKER"}
    return {**env, "GEMINI_API_KEY": FAKE_KEY, **extra}


def dealscout(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dealscout_cli.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_worker_without_a_broker_refuses_as_snap_does(tmp_path: Path, photos: Path) -> None:
    done = dealscout("worker", env=worker_env())
    assert done.returncode == 2
    needs = "needs --broker redis://HOST:6379/0 (or DEALSCOUT_BROKER)"
    assert needs in done.stderr and "Traceback" not in done.stderr
    snap = dealscout("snap", str(photos), "--engine", "celery", "--db", str(tmp_path / "x.db"),
                     env=worker_env())  # fmt: skip
    assert snap.returncode == 2 and needs in snap.stderr  # the same words for the same option


@pytest.mark.parametrize("given", ["--broker", "DEALSCOUT_BROKER"])
def test_worker_with_nothing_listening_fails_fast_in_one_line(given: str) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    args, env = (("--broker", url), worker_env()) if given == "--broker" else ((), worker_env(
        DEALSCOUT_BROKER=url))  # fmt: skip
    started = time.monotonic()
    done = dealscout("worker", *args, env=env)
    assert time.monotonic() - started < 30  # not Celery's 100 retries
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot reach the broker at redis://:***@127.0.0.1:" in lines[0]
    assert "--broker / DEALSCOUT_BROKER" in lines[0]
    assert "secret" not in done.stderr + done.stdout


def test_worker_help_names_every_variable_it_reads() -> None:
    shown = run("worker", "--help").stdout
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "DEALSCOUT_BROKER"):
        assert name in shown, name


@pytest.mark.slow
def test_worker_banner_shows_the_broker_as_given_and_no_root_warning(
    redis_server: str, workers: Workers
) -> None:
    [worker] = workers("http://127.0.0.1:9", 1)  # never called: no task is sent
    log = worker.log_path.read_text()
    assert f"transport:   {redis_server}" in log and f"results:     {redis_server}" in log
    assert ":**@" not in log
    if os.geteuid() == 0:  # the containers this runs in; elsewhere Celery would not warn anyway
        assert "SecurityWarning" not in log and "superuser privileges" not in log


@pytest.mark.slow
def test_coordinator_with_no_worker_says_how_to_start_one_and_stops_cleanly(
    tmp_path: Path, photos: Path, redis_server: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    db, log = tmp_path / "nobody.db", tmp_path / "coordinator.err"
    with log.open("w") as stderr:
        proc = spawn(
            [sys.executable, "-m", "dealscout_cli.cli", "snap", str(photos), "--engine", "celery",
             "--broker", redis_server, "--db", str(db), "--json"],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        hint = f"no worker is taking tasks from {redis_server}; start one with: " + (
            f"dealscout worker --broker {redis_server}"
        )
        started = time.monotonic()
        wait_until(lambda: hint in log.read_text(), 20, "the no-worker hint")
        assert time.monotonic() - started < 16
        assert log.read_text().count(hint) == 1  # said once, not every poll
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, log.read_text()  # as any run stopped by SIGTERM (README)
    assert "Traceback" not in log.read_text()
    assert "SIGTERM" in json.loads(stdout)["run"]["stop_reason"]
    with sqlite3.connect(db) as conn:  # every job back in the queue for the next run
        assert conn.execute("SELECT DISTINCT state FROM jobs").fetchall() == [("queued",)]
