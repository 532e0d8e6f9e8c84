"""The scan feeding the queue: each batch of items is queued as soon as the scan completes it.

`snap` starts a `ScanFeed` in a thread of its own and the local engine's workers claim the
first items while the rest are still being read and hashed (a run over 2,000 photos used
to wait for all of them before its first request). The feed writes through its own
SQLite connection, one short transaction per batch (`Store.enqueue`), so the run's claims
go on between them. The run must not end while the feed may still queue items: it asks
`done`, and `wait` wakes it when a batch is in.

Engines that need the whole queue before they start (Batch Mode, the Celery fleet) and a
`--max-cost` budget (its estimate per item is the mean over the whole scan) run the same
feed to its end first (`run_here`), as before.

Stopping: `stop` ends the scan after the batch being read; what is queued stays queued,
and the photos not read yet are found again by the next `snap` of the same paths (they
are not in the database, so the resume command names the paths).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from dealscout_cli.records import EnqueueReport
from dealscout_cli.scan import ScanBatch, ScanResult
from dealscout_cli.store import Store


class KnownPhotoIndex:
    """What `scan` asks to skip re-reading a photo (`scan.KnownPhotos`): the hash recorded for
    the file at this path, if its size and modification time are the ones recorded with it.
    Empty until `load`: the scan's arguments are checked before the database is opened."""

    def __init__(self) -> None:
        self.recorded: dict[bytes, tuple[int, int, str]] = {}

    def load(self, store: Store) -> None:
        self.recorded = store.known_photos()

    def __call__(self, path: Path, size: int, mtime_ns: int) -> str | None:
        seen = self.recorded.get(os.fsencode(path))
        if seen is None or seen[0] != size or seen[1] != mtime_ns:
            return None
        return seen[2]


@dataclass
class FeedReport:
    """What the feed did so far: the scan's findings and how their items were queued."""

    found: ScanResult = field(default_factory=ScanResult)
    queued: EnqueueReport = field(default_factory=lambda: EnqueueReport(0, 0, 0, 0, 0, 0))
    new_problems: set[str] = field(default_factory=set)  # skipped files new to the database

    @property
    def work_added(self) -> int:
        """Items this scan put in the queue (new, re-queued, offline placeholders redone)."""
        return self.queued.new + self.queued.requeued + self.queued.redo_offline

    def add(self, batch: ScanBatch, queued: EnqueueReport, new_problems: set[str]) -> None:
        self.found.add(batch)
        self.queued = EnqueueReport(
            **{
                f.name: getattr(self.queued, f.name) + getattr(queued, f.name)
                for f in fields(queued)
            }
        )
        self.new_problems |= new_problems


class ScanFeed:
    """Queue each batch of `batches` into the database at `db_path` as it comes."""

    def __init__(
        self,
        batches: Iterator[ScanBatch],
        db_path: Path,
        *,
        force: bool = False,
        offline: bool = False,
        on_scanned: Callable[[ScanResult, EnqueueReport], None] = lambda found, queued: None,
        before_queue: Callable[[Store, ScanBatch], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.batches = batches
        self.on_scanned = on_scanned
        self.before_queue = before_queue  # e.g. --confirm-groups: the model regroups a batch
        self._finished = False
        self.db_path = db_path
        self.force = force
        self.offline = offline
        self.clock = clock
        self.report = FeedReport()
        self.error: BaseException | None = None
        self.complete = False  # the scan ran to its end (not stopped, no error)
        self.photos_read = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._news = threading.Condition()
        self._batches_in = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ running it

    def start(self) -> ScanFeed:
        """Scan and queue in a thread; `done` once it has ended."""
        self._thread = threading.Thread(target=self._run_safely, name="scan-feed", daemon=True)
        self._thread.start()
        return self

    def run_here(self) -> None:
        """Scan and queue in this thread, to the end (or an error, raised here)."""
        self._run()

    def _run_safely(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the run's thread (`error`)
            self.error = exc

    def _run(self) -> None:
        try:
            with Store.open(self.db_path) as store:
                for batch in self.batches:
                    self._queue(store, batch)
                    if self._stop.is_set():
                        return
                self.complete = True
        finally:
            self.batches = iter(())  # the scan's generator and its open folders go now
            with self._news:
                self._done.set()
                self._news.notify_all()

    def _queue(self, store: Store, batch: ScanBatch) -> None:
        if self.before_queue is not None:
            self.before_queue(store, batch)
        now = self.clock()
        queued = store.enqueue(batch.items, now=now, force=self.force, offline=self.offline)
        if batch.groupings:  # --group auto: why each item starts where it does
            store.record_groups([(g.source, g.reasons) for g in batch.groupings], now=now)
        new_problems = {
            p.place
            for p in batch.problems
            if store.record_skipped(p.path, p.reason, source=p.place, now=now)
        }
        with self._news:
            self.report.add(batch, queued, new_problems)
            self.photos_read = batch.photos_read
            self._batches_in += 1
            self._news.notify_all()

    # ------------------------------------------------------------ watching it

    @property
    def done(self) -> bool:
        """True once the feed will queue nothing more (finished, stopped or failed)."""
        return self._done.is_set()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until a batch after the `seen`-th is queued, the feed is done, or `timeout`;
        returns how many batches are in."""
        with self._news:
            self._news.wait_for(lambda: self._batches_in > seen or self.done, timeout)
            return self._batches_in

    def wait_for_work(self) -> None:
        """Block until the feed has queued an item to work on, or is done. (In slices: a
        Ctrl-C in the main thread is heard at once.)"""
        while True:
            with self._news:
                if self._news.wait_for(lambda: self.report.work_added > 0 or self.done, 0.1):
                    return

    def stop(self) -> None:
        """Scan no further than the batch being read (what is queued stays)."""
        self._stop.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> None:
        """Once `done`, in the thread that reports (the run's): hand the scan's findings to
        `on_scanned`, once."""
        if self._finished or not self.done:
            return
        self._finished = True
        self.report.found.problems.sort(key=lambda p: (p.path, p.line or 0))
        self.on_scanned(self.report.found, self.report.queued)
