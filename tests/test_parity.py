"""One lifecycle, three engines: the same photos and flags give the same record.

The local pool, Gemini Batch Mode and the Celery fleet (a real redis-server, real
`dealscout worker` processes) each run the same items against one emulator with the
same flags. Listings, error kinds, the run summary and the attempts a call can get must
not depend on `--engine`; a flag an engine cannot honour is refused, never dropped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from conftest import FAKE_KEY
from fleet import Workers
from photo_factory import make_jpeg
from test_barcodes import barcode_image, photo_with
from test_distributed import start_coordinator
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.emulator import Emulator, EmulatorConfig
from dealscout_cli.errors import ErrorKind
from dealscout_cli.retry import RetryPolicy

pytestmark = pytest.mark.slow

FLAGS = (
    "--grounded-prices",
    "--no-barcodes",
    "--max-cost",
    "20",
    "--max-retries",
    "1",
    "--max-attempts",
    "1",
    "--media-resolution",  # Gemini 3 settings travel to every engine, the fleet's workers too
    "medium",
    "--thinking",
    "medium",
)
ONLINE_ONLY = ("--tpm", "2000000")  # Batch Mode has no per-minute quota: it refuses --tpm


def make_photos(folder: Path) -> Path:
    """Five items; one is a box with an EAN-13 on it (read unless --no-barcodes)."""
    for n, kind in enumerate(("mug", "book", "lamp", "sneaker")):
        make_jpeg(folder / f"item-{n}.jpg", size=(320, 240), kind=kind, seed=40 + n)
    photo_with(folder / "item-4.jpg", barcode_image("4006381333931", zxingcpp.BarcodeFormat.EAN13))
    return folder


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def run_local(folder: Path, db: Path, url: str, *extra: str) -> dict[str, Any]:
    env = {"GEMINI_API_KEY": FAKE_KEY, "GOOGLE_GEMINI_BASE_URL": url}
    result = CliRunner().invoke(
        app,
        ["snap", str(folder), "--db", str(db), "--json", "--quiet", *FLAGS, *ONLINE_ONLY, *extra],
        env=env,
        catch_exceptions=False,
    )
    return json.loads(result.stdout)


def run_batch(folder: Path, db: Path, url: str) -> dict[str, Any]:
    """`snap --batch` as cron runs it, until nothing is queued or waiting in a batch."""
    env = {"GEMINI_API_KEY": FAKE_KEY, "GOOGLE_GEMINI_BASE_URL": url}
    totals = {"done": 0, "failed": 0}
    for _ in range(8):
        result = CliRunner().invoke(
            app,
            ["snap", str(folder), "--db", str(db), "--json", "--quiet", "--batch", *FLAGS],
            env=env,
            catch_exceptions=False,
        )
        payload = json.loads(result.stdout)
        totals["done"] += payload["batch"]["done"]
        totals["failed"] += payload["batch"]["failed"]
        states = dict(query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        if (
            not payload["batch"]["pending"]
            and not states.get("queued")
            and not states.get("batched")
        ):
            return totals
        time.sleep(0.3)
    raise AssertionError("Batch Mode did not finish in 8 passes")


def run_fleet(folder: Path, db: Path, broker: str) -> dict[str, Any]:
    """`snap --engine celery` as a user runs it: no key here, the workers hold it."""
    proc = start_coordinator(folder, db, broker, extra=(*FLAGS, *ONLINE_ONLY))
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode in (0, 1), stderr
    return dict(json.loads(stdout)["run"])


def listings(db: Path) -> dict[str, tuple[Any, ...]]:
    rows = query(
        db,
        """SELECT items.key, listings.title, listings.condition, listings.price_suggested_cents
                        FROM listings JOIN items ON items.id = listings.item_id""",
    )
    return {key: tuple(rest) for key, *rest in rows}


def record(db: Path) -> dict[str, Any]:
    """What a run leaves that must not depend on the engine."""
    return {
        "listings": listings(db),
        "states": sorted(query(db, "SELECT state, error_kind FROM jobs")),
        "grounded": query(db, "SELECT COUNT(*) FROM stages WHERE stage = 'price'")[0][0],
        "barcodes read": query(db, "SELECT COUNT(*) FROM items WHERE barcodes != '[]'")[0][0],
        "calls per stage": max_calls_per_stage(db),
    }


def spend(db: Path) -> int:
    return int(query(db, "SELECT SUM(cost_micro_usd) FROM calls")[0][0] or 0)


def max_calls_per_stage(db: Path) -> int:
    rows = query(db, "SELECT COUNT(*) FROM calls GROUP BY item_id, stage")
    return max((count for (count,) in rows), default=0)


def every_stored_kind_is_known(db: Path) -> None:
    known = {kind.value for kind in ErrorKind} | {"ok"}
    kinds = {k for (k,) in query(db, "SELECT error_kind FROM jobs WHERE error_kind IS NOT NULL")}
    outcomes = {o for (o,) in query(db, "SELECT outcome FROM calls")}
    assert kinds | outcomes <= known


def test_three_engines_make_the_same_listings_with_the_same_flags(
    tmp_path: Path,
    redis_server: str,
    workers: Workers,
) -> None:
    folder = make_photos(tmp_path / "photos")
    with Emulator(EmulatorConfig(seed=5, batch_seconds=0.0)) as emu:
        workers(emu.url, 1, concurrency=2)
        local = run_local(folder, tmp_path / "local.db", emu.url)["run"]
        batch = run_batch(folder, tmp_path / "batch.db", emu.url)
        fleet = run_fleet(folder, tmp_path / "fleet.db", redis_server)
    records = {name: record(tmp_path / f"{name}.db") for name in ("local", "batch", "fleet")}
    assert len(records["local"]["listings"]) == 5
    assert records["local"]["grounded"] == 5  # --grounded-prices kept its sources everywhere
    assert records["local"]["barcodes read"] == 0  # --no-barcodes honoured everywhere
    assert records["batch"] == records["local"]
    assert records["fleet"] == records["local"]
    # The fleet prices its calls with the coordinator's table, grounding fees included.
    assert spend(tmp_path / "fleet.db") == spend(tmp_path / "local.db") > 0
    assert local["done"] == batch["done"] == fleet["done"] == 5
    assert local["failed"] == batch["failed"] == fleet["failed"] == 0


@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        ({"error_rates": {500: 1.0}}, ErrorKind.SERVER_ERROR),
        ({"safety_rate": 1.0}, ErrorKind.BLOCKED),
    ],
)
def test_three_engines_fail_the_same_way_within_the_same_attempts(
    tmp_path: Path,
    redis_server: str,
    workers: Workers,
    faults: dict[str, Any],
    kind: ErrorKind,
) -> None:
    folder = make_photos(tmp_path / "photos")
    with Emulator(EmulatorConfig(seed=5, batch_seconds=0.0, **faults)) as emu:
        workers(emu.url, 1, concurrency=2)
        local = run_local(folder, tmp_path / "local.db", emu.url)["run"]
        batch = run_batch(folder, tmp_path / "batch.db", emu.url)
        fleet = run_fleet(folder, tmp_path / "fleet.db", redis_server)
    bound = RetryPolicy(call_retries=1, item_attempts=1).worst_case_calls
    for name in ("local", "batch", "fleet"):
        db = tmp_path / f"{name}.db"
        every_stored_kind_is_known(db)
        assert query(db, "SELECT DISTINCT state, error_kind FROM jobs") == [("failed", kind.value)]
        assert max_calls_per_stage(db) <= bound
    # Online, a retryable call gets exactly its retries; Batch Mode has no call level.
    online = max_calls_per_stage(tmp_path / "local.db")
    assert max_calls_per_stage(tmp_path / "fleet.db") == online
    assert online == (bound if kind == ErrorKind.SERVER_ERROR else 1)
    assert local["failed"] == batch["failed"] == fleet["failed"] == 5


def test_batch_mode_refuses_a_flag_it_cannot_honour(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["snap", str(make_photos(tmp_path / "p")), "--batch", "--tpm", "1000", "--offline"]
    )
    assert result.exit_code == 2
    assert "--batch cannot honour --tpm" in result.stderr
    assert not (tmp_path / "dealscout.db").exists()  # refused before anything was stored


def test_batch_and_the_fleet_together_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "snap",
            str(make_photos(tmp_path / "p")),
            "--batch",
            "--engine",
            "celery",
            "--broker",
            "redis://127.0.0.1:1/0",
            "--offline",
        ],
    )
    assert result.exit_code == 2
    assert "drop --engine celery" in result.stderr
