"""Untrusted answers and hostile networks: nothing crashes, nothing is lost.

A model can answer anything its schema allows (the emulator's `odd_rate` serves such
answers: a title of spaces, an infinite price, escape codes); a captive portal answers
200 with an HTML page; a server can be down. Each must end as a defined failure of one
item or a clean stop of the run, and whatever was stored must read back.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_KEY
from photo_factory import make_jpeg
from typer.testing import CliRunner

from dealscout_cli import jobs
from dealscout_cli.cli import app
from dealscout_cli.emulator import Emulator, EmulatorConfig
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.store import Store

pytestmark = pytest.mark.slow
CONTROL = {chr(c) for c in range(32) if chr(c) not in "\n"} | {"\x7f", "\u202e"}


def make_photos(folder: Path, count: int) -> Path:
    kinds = ("mug", "book", "lamp", "sneaker", "handbag")
    for n in range(count):
        make_jpeg(folder / f"p{n:02d}.jpg", size=(240, 180), kind=kinds[n % 5], seed=100 + n)
    return folder


def snap(folder: Path, db: Path, url: str, *extra: str) -> Any:
    env = {"GEMINI_API_KEY": FAKE_KEY, "GOOGLE_GEMINI_BASE_URL": url}
    args = ["snap", str(folder), "--db", str(db), "--quiet", *extra]
    return CliRunner().invoke(app, args, env=env, catch_exceptions=False)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def every_stored_listing_reads_back(db: Path) -> None:
    """Whatever a fault test left stored reads back through the same models, every row."""
    rows = query(db, "SELECT identification, price FROM listings")
    for identification, price in rows:
        Identification.model_validate_json(identification)
        if price is not None:
            PriceEstimate.model_validate_json(price)
    with Store.open_read_only(db) as store:
        assert len(store.listings()) == len(rows)


def test_odd_but_schema_valid_answers_fail_their_item_and_never_the_record(
    tmp_path: Path,
) -> None:
    folder, db = make_photos(tmp_path / "photos", 24), tmp_path / "odd.db"
    with Emulator(EmulatorConfig(seed=11, odd_rate=1.0)) as emu:
        first = snap(folder, db, emu.url)
        again = snap(folder, db, emu.url)  # a rerun reloads what the first run saved
    assert first.exit_code in (0, 1) and again.exit_code in (0, 1), first.stderr + again.stderr
    states = dict(query(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state"))
    assert "running" not in states and "queued" not in states
    kinds = {k for (k,) in query(db, "SELECT error_kind FROM jobs WHERE state = 'failed'")}
    assert kinds == {"bad_output"}, kinds
    # Whatever is stored reads back through the same models, every row of it.
    rows = query(db, "SELECT identification, price FROM listings")
    assert rows, "some odd answers are fine once normalised (escape codes, a formula)"
    for identification, price in rows:
        title = Identification.model_validate_json(identification).title
        assert len(title) >= 3 and not CONTROL & set(title)
        assert PriceEstimate.model_validate_json(price).suggested < 1e7
    with Store.open(db) as store:
        assert len(store.listings()) == len(rows)
    for command in (["listings", "--json"], ["listings"], ["status"]):
        shown = CliRunner().invoke(app, [*command, "--db", str(db)], catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
    for fmt in ("csv", "jsonl", "ebay", "shopify"):
        out = tmp_path / f"out.{fmt}"
        written = CliRunner().invoke(
            app,
            ["export", "--db", str(db), "--format", fmt, "-o", str(out)],
            catch_exceptions=False,
        )
        assert written.exit_code == 0, written.output


class Portal(BaseHTTPRequestHandler):
    """What a hotel or airport network answers every request with."""

    def _login_page(self) -> None:
        body = b"<html><head><title>Sign in</title></head><body>Accept the terms</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _login_page

    def log_message(self, *args: Any) -> None:
        pass


class OtherApi(BaseHTTPRequestHandler):
    """A 200 with JSON of another shape: a proxy's health check, another vendor's API."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"status": "ok", "data": [1, 2, 3]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def captive_portal() -> Iterator[str]:
    yield from serve(Portal)


@pytest.fixture
def other_api() -> Iterator[str]:
    yield from serve(OtherApi)


@pytest.fixture
def quick_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """An outage is declared after 4 unanswered calls over 1 s (30 s and 10 by default)."""
    monkeypatch.setattr(jobs, "OUTAGE_CALLS", 4)
    monkeypatch.setattr(jobs, "OUTAGE_SECONDS", 1.0)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("where", "kind"),
    [("portal", "bad_response"), ("other api", "bad_response"), ("down", "connection_error")],
)
def test_an_api_that_never_answers_stops_the_run_with_every_item_back_in_the_queue(
    tmp_path: Path,
    captive_portal: str,
    other_api: str,
    quick_outage: None,
    where: str,
    kind: str,
) -> None:
    folder, db = make_photos(tmp_path / "photos", 12), tmp_path / "out.db"
    url = {"portal": captive_portal, "other api": other_api}.get(where) or closed_port()
    result = snap(folder, db, url, "--json")
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.output
    run = json.loads(result.stdout)["run"]
    assert "no answer from the Gemini API" in run["stop_reason"]
    assert run["failed"] == 0
    assert query(db, "SELECT DISTINCT state FROM jobs") == [("queued",)]
    assert {o for (o,) in query(db, "SELECT outcome FROM calls")} <= {kind, "cancelled"}
    every_stored_listing_reads_back(db)
    assert query(db, f"SELECT COUNT(*) FROM calls WHERE outcome = '{kind}'")[0][0]


def hold_write_lock(db: Path, after_calls: int, seconds: float) -> None:
    """What a backup tool does: wait for the run to be under way, then hold the write lock."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if query(db, "SELECT COUNT(*) FROM calls")[0][0] >= after_calls:
                break
        except sqlite3.OperationalError:
            pass  # the file or its tables are not there yet
        time.sleep(0.02)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_a_write_lock_held_past_the_busy_timeout_stops_cleanly_and_loses_no_paid_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dealscout_cli.store import connection

    monkeypatch.setattr(connection, "BUSY_TIMEOUT_MS", 400)  # 15 s in production
    folder, db = make_photos(tmp_path / "photos", 16), tmp_path / "locked.db"
    with Emulator(EmulatorConfig(seed=3, latency=0.15)) as emu:
        locker = threading.Thread(target=hold_write_lock, args=(db, 4, 2.5))
        locker.start()
        stopped = snap(folder, db, emu.url, "--json", "--concurrency", "4")
        locker.join()
        resumed = snap(folder, db, emu.url, "--json")
        served = emu.stats().requests
    assert stopped.exit_code == 3, stopped.output
    assert "Traceback" not in stopped.output
    assert "locked" in json.loads(stopped.stdout)["run"]["stop_reason"]
    assert resumed.exit_code == 0, resumed.output
    assert query(db, "SELECT DISTINCT state FROM jobs") == [("done",)]
    # Every request the server answered is a recorded call, once.
    assert query(db, "SELECT COUNT(*) FROM calls")[0][0] == served
    assert not (tmp_path / "locked.db-unrecorded-calls.jsonl").exists()
    every_stored_listing_reads_back(db)


def test_batch_mode_behind_a_captive_portal_says_so_and_loses_nothing(
    tmp_path: Path, captive_portal: str
) -> None:
    folder, db = make_photos(tmp_path / "photos", 3), tmp_path / "batch.db"
    result = snap(folder, db, captive_portal, "--batch", "--json")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = json.loads(result.stdout)["batch"]["errors"]
    assert errors and "not the Gemini API's" in errors[0]
    assert query(db, "SELECT DISTINCT state FROM jobs") == [("queued",)]


def test_a_full_disk_mid_run_stops_cleanly_and_a_rerun_records_every_paid_call(
    tmp_path: Path,
) -> None:
    """A real write failure: the run's process may not grow any file past a cap (the kernel
    answers EFBIG, as a full disk answers ENOSPC), hit a few calls into the run."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    from dealscout_cli.scan import scan

    folder, db = make_photos(tmp_path / "photos", 40), tmp_path / "full.db"
    with Store.open(db) as store:  # queued beforehand, so the cap is met mid-run
        store.enqueue(scan([folder]).items, now=time.time())
    cap = max(p.stat().st_size for p in tmp_path.glob("full.db*")) + 120_000

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    command = [sys.executable, "-m", "dealscout_cli.cli", "snap", str(folder), "--db", str(db)]
    with Emulator(EmulatorConfig(seed=1, latency=0.05)) as emu:
        env = {**os.environ, "GEMINI_API_KEY": FAKE_KEY, "GOOGLE_GEMINI_BASE_URL": emu.url}
        full = subprocess.run(
            [*command, "--json", "--concurrency", "4"], env=env, preexec_fn=limited,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        served_before = emu.stats().requests
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        served = emu.stats().requests
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    assert "free some space" in json.loads(full.stdout)["run"]["stop_reason"]
    assert served_before > 0  # the run had paid for calls when the disk filled
    assert rerun.returncode == 0, rerun.stderr
    assert query(db, "SELECT DISTINCT state FROM jobs") == [("done",)]
    assert query(db, "SELECT COUNT(*) FROM calls")[0][0] == served  # each call, once
    every_stored_listing_reads_back(db)


def test_a_full_disk_while_the_scan_queues_is_a_stop_with_the_fix(tmp_path: Path) -> None:
    """The scan's own writes (the queue, in the feed's thread) fill the disk: exit 3 like any
    run the database stopped, with the fix in one line, not 1 and not a traceback."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    folder, db = make_photos(tmp_path / "photos", 400), tmp_path / "full.db"
    Store.open(db).close()  # the schema fits; the queue of 400 items does not
    cap = max(p.stat().st_size for p in tmp_path.glob("full.db*")) + 40_000

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    command = [sys.executable, "-m", "dealscout_cli.cli", "snap", str(folder), "--db", str(db)]
    full = subprocess.run(
        [*command, "--offline", "--quiet"], env=dict(os.environ), preexec_fn=limited,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    assert "free some space" in full.stderr
