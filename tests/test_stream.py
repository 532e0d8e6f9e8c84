"""The scan and the run overlap: the first items are sent while the rest are still being read.

Real photos (Pillow), a real SQLite file, the real google-genai client against the emulator.
The scan is held on its last photo (its `on_scanning` callback, called from the scan's own
thread) until the emulator has seen a request, or a timeout: a run that only starts after
the scan never gets one in that window.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from photo_factory import make_jpeg

from dealscout_cli.config import resolve
from dealscout_cli.emulator import Emulator, EmulatorConfig
from dealscout_cli.scan import scan, scan_batches
from dealscout_cli.snap import SnapResult, snap

HOLD = 15.0  # seconds the scan waits at its last photo for a request to arrive


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def shoot(folder: Path, count: int) -> Path:
    for n in range(count):
        make_jpeg(folder / f"item-{n:03d}.jpg", kind=("mug", "book", "lamp")[n % 3], seed=n)
    return folder


def run_snap(paths: list[Path], db: Path, url: str, **kwargs: Any) -> SnapResult:
    settings = resolve(db_path=db, base_url=url, api_key="test-key", concurrency=4)
    return snap(paths, settings, handle_signals=kwargs.pop("handle_signals", False), **kwargs)


class HeldScan:
    """An `on_scanning` callback that holds the scan at photo `hold_at` until the emulator
    has seen a request (then runs `then`), and notes the moment the scan went on."""

    def __init__(
        self, emulator: Emulator, hold_at: int, then: Callable[[], None] = lambda: None
    ) -> None:
        self.emulator = emulator
        self.hold_at = hold_at
        self.then = then
        self.request_seen_while_scanning = False
        self.released_at: float | None = None

    def __call__(self, photos_read: int) -> None:
        if photos_read != self.hold_at:
            return
        deadline = time.monotonic() + HOLD
        while time.monotonic() < deadline and self.emulator.stats().requests == 0:
            time.sleep(0.01)
        self.request_seen_while_scanning = self.emulator.stats().requests > 0
        self.released_at = time.time()
        if self.request_seen_while_scanning:
            self.then()


def test_the_first_item_is_sent_before_the_scan_ends(tmp_path: Path) -> None:
    folder = shoot(tmp_path / "photos", 12)
    db = tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=1)) as emu:
        held = HeldScan(emu, hold_at=12)
        result = run_snap([folder], db, emu.url, on_scanning=held)
    assert held.request_seen_while_scanning  # before: no request until every photo was read
    assert held.released_at is not None
    first_call = rows(db, "SELECT MIN(started_epoch) FROM calls")[0][0]
    assert first_call < held.released_at
    # ... and nothing was lost by starting early: every photo is an item, done once.
    assert result.exit_code == 0 and len(result.scan.items) == 12 and result.scan_finished
    assert rows(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", 12)]
    assert rows(db, "SELECT COUNT(*) FROM calls WHERE stage = 'identify'") == [(12,)]


def test_a_duplicate_in_a_later_batch_is_counted_once(tmp_path: Path) -> None:
    folder = shoot(tmp_path / "photos", 20)
    # The same bytes as the first photo, under a name read last: a batch of its own, later.
    (folder / "zz-copy.jpg").write_bytes((folder / "item-000.jpg").read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "again.jpg").write_bytes((folder / "item-005.jpg").read_bytes())
    batches = list(scan_batches([folder]))
    assert len([b for b in batches if b.items]) > 2  # it did stream
    first_with_item_000 = next(
        i for i, b in enumerate(batches) if any(it.label == "item-000" for it in b.items)
    )
    copy_in = next(i for i, b in enumerate(batches) if b.duplicates)
    assert copy_in > first_with_item_000  # the copy came in a later batch than its original
    found = scan([folder])
    assert len(found.items) == 20
    assert sorted(found.duplicates) == sorted(
        [
            (str(folder / "sub" / "again.jpg"), str(folder / "item-005.jpg")),
            (str(folder / "zz-copy.jpg"), str(folder / "item-000.jpg")),
        ]
    )
    db = tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=1)) as emu:
        result = run_snap([folder], db, emu.url)
        images = emu.stats().images_seen
    assert result.exit_code == 0 and result.queued.new == 20
    assert rows(db, "SELECT COUNT(*) FROM items") == [(20,)]
    assert sorted(images.values()) == [1] * 20  # each photo sent once, copies never


def test_group_folder_streams_whole_folders_and_finds_a_copied_folder(tmp_path: Path) -> None:
    root = tmp_path / "shoot"
    for n in range(6):
        for side in range(2):
            make_jpeg(root / f"p{n}" / f"{side}.jpg", kind="lamp", seed=10 * n + side)
    copy = root / "zz-p0-again"
    copy.mkdir()
    for side in range(2):
        (copy / f"{side}.jpg").write_bytes((root / "p0" / f"{side}.jpg").read_bytes())
    batches = list(scan_batches([root], "folder"))
    items = [item for batch in batches if batch.items for item in batch.items]
    assert [len(item.photos) for item in items] == [2] * 6  # each folder whole, never split
    assert len([b for b in batches if b.items]) > 1
    assert len(scan([root], "folder").duplicates) == 2


def test_ctrl_c_while_the_scan_goes_on_then_resume_loses_nothing(tmp_path: Path) -> None:
    folder = shoot(tmp_path / "photos", 30)
    db = tmp_path / "d.db"

    def ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the run's own handler takes it: a graceful stop
        time.sleep(0.5)

    with Emulator(EmulatorConfig(seed=1, latency=0.3)) as emu:
        held = HeldScan(emu, hold_at=10, then=ctrl_c)
        stopped = run_snap([folder], db, emu.url, on_scanning=held, handle_signals=True)
        assert held.request_seen_while_scanning
        assert stopped.summary is not None and stopped.summary.signal_number == signal.SIGINT
        # The photos after the 10th were never read: they are not in the database, so the
        # way to go on names the folder again.
        assert not stopped.scan_finished
        assert str(folder) in stopped.resume_command
        assert rows(db, "SELECT COUNT(*) FROM items")[0][0] < 30
        resumed = run_snap([folder], db, emu.url)
        images = emu.stats().images_seen
    assert resumed.exit_code == 0 and resumed.scan_finished
    assert rows(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("done", 30)]
    assert rows(db, "SELECT COUNT(DISTINCT item_id) FROM listings") == [(30,)]
    assert len(images) == 30  # every photo sent; none lost, none new twice over
    assert str(folder) not in resumed.resume_command


def test_a_rerun_trusts_a_known_photo_whose_size_and_time_are_unchanged(tmp_path: Path) -> None:
    folder = shoot(tmp_path / "photos", 5)
    db = tmp_path / "d.db"
    with Emulator(EmulatorConfig(seed=1)) as emu:
        assert run_snap([folder], db, emu.url).exit_code == 0
        # Other bytes, same size, modification time put back: a rerun does not read it (as
        # `make` and `rsync` judge a file), which is what keeps a rerun over 20,000 fast.
        same = folder / "item-001.jpg"
        info = same.stat()
        same.write_bytes(bytes(info.st_size))
        os.utime(same, ns=(info.st_atime_ns, info.st_mtime_ns))
        make_jpeg(folder / "item-002.jpg", kind="book", seed=99)  # changed: read again
        reads: list[int] = []
        again = run_snap([folder], db, emu.url, on_scanning=reads.append)
        assert reads == [1, 2, 3, 4, 5]  # every photo still looked at and counted
        assert (again.queued.already_done, again.queued.new) == (4, 1)
        forced = run_snap([folder], db, emu.url, force=True)  # --force reads every photo
    assert forced.queued.new == 1  # the zeroed file: new content, a new item


def test_a_manifest_item_is_handed_out_whole_once_its_last_line_is_read(tmp_path: Path) -> None:
    for n in range(6):
        make_jpeg(tmp_path / "photos" / f"p{n}.jpg", kind="book", seed=n)
    manifest = tmp_path / "items.csv"
    lines = ["p0.jpg,A", "p1.jpg,B", "p2.jpg,A", "p3.jpg,", "p4.jpg,C", "p5.jpg,C"]
    manifest.write_text("path,item\n" + "".join(f"photos/{line}\n" for line in lines))
    seen: list[tuple[str, int]] = []
    for batch in scan_batches([manifest]):
        seen += [(item.label, len(item.photos)) for item in batch.items]
    # A's two lines are apart: it comes out whole, once, and still first (B waits for it).
    assert seen == [("A", 2), ("B", 1), ("p3", 1), ("C", 2)]


def test_the_progress_bar_is_one_bar_whose_total_grows_as_the_scan_queues() -> None:
    import io

    from rich.console import Console

    from dealscout_cli.cli.progress import BarReporter
    from dealscout_cli.events import Event, EventKind

    bar = BarReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    bar(Event(EventKind.RUN_STARTED, fields={"queued": 1}))
    bar(Event(EventKind.RUN_STARTED, fields={"queued": 7}))  # the pool says it again, later
    bar(Event(EventKind.QUEUED, fields={"remaining": 40, "photos_read": 45, "scanning": True}))
    bar.close()
    [task] = bar.progress.tasks  # before: a second bar, the first stuck at 0/1
    assert task.total == 40 and task.fields["scanning"] == "scanning: 45 photos read"
