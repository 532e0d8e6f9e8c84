"""How a run shows itself: a Rich progress bar on a terminal, one plain line per
event for cron, or one JSON object per event for log collectors.

CLI layer only: the runner emits `Event`s and knows nothing of this module.
Everything here writes to stderr (or a log file); results go to stdout. Item labels (file
names) and messages (model and server text) are shown with control characters escaped, on
the bar and in plain lines alike; JSON events keep them exact (json.dumps escapes them).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from dealscout_cli.cli.options import plain, plural
from dealscout_cli.costs import format_usd
from dealscout_cli.events import Event, EventKind
from dealscout_cli.status import eta_seconds
from dealscout_cli.text import printable


class ScanCounter:
    """While `scan` reads and hashes photos: a spinner with the count, on a terminal only
    (cron gets the one "found N items" line after the scan). Call `close` when it is done,
    or when the run's own progress starts: it stays silent after that.

    The scan calls it from its own thread while the run goes on, hence the lock."""

    REFRESH = 0.1  # seconds between updates: hashing runs at thousands of photos a second

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal
        self._status: Any = None
        self._shown = 0.0
        self._lock = threading.Lock()

    def __call__(self, photos_read: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown < self.REFRESH:
            return
        self._shown = now
        text = f"scanning: {photos_read:,} photo{'' if photos_read == 1 else 's'} read"
        with self._lock:
            if not self.enabled:
                return
            if self._status is None:
                self._status = self.console.status(text)
                self._status.start()
            else:
                self._status.update(text)

    def close(self) -> None:
        with self._lock:
            self.enabled = False
            if self._status is not None:
                self._status.stop()
                self._status = None


def timestamp() -> str:
    """Local time with its UTC offset (`2026-12-02T07:15:03+01:00`), so log lines from
    machines in other zones, or either side of a clock change, sort and compare."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def stopping_line(event: Event) -> str:
    """A stop as one line; the first Ctrl-C (or SIGTERM) also says how to stop at once."""
    text = event.message or ""
    if event.fields.get("stop_kind") == "signal" and event.fields.get("how") == "graceful":
        text += "; in-flight items are finishing (press Ctrl-C again to cancel at once)"
    return text


class QuietReporter:
    """--quiet: nothing but errors, and warnings that say why nothing happens."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: Event) -> None:
        if event.kind == EventKind.WARNING:
            self.console.print(f"warning: {printable(event.message)}", markup=False)
        elif event.kind == EventKind.ITEM_FAILED:
            self.console.print(
                f"failed: item {event.item_id} ({printable(event.label)}): "
                f"{printable(event.message)}",
                markup=False,
            )

    def close(self) -> None:
        pass


class LineReporter:
    """Not a terminal (cron, pipes): one timestamped line per item event."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.done = 0
        self.failed = 0
        self.total = 0

    def _line(self, text: str) -> None:
        self.out.write(f"{timestamp()} {text}\n")
        self.out.flush()

    def __call__(self, event: Event) -> None:
        f = event.fields
        label = f"'{printable(event.label)}'"
        message = printable(event.message)
        if event.kind == EventKind.RUN_STARTED:
            self.total = f["queued"]
            self._line(f"run started: {plural(self.total, 'item')} queued")
        elif event.kind == EventKind.QUEUED:  # the scan, still going, queued more
            self.total = self.done + self.failed + f["remaining"]
        elif event.kind == EventKind.ITEM_DONE:
            self.done += 1
            self._line(
                f"done {self.done}/{self.total}: item {event.item_id} {label} -> "
                f"'{printable(f['title'])}' {f['price']:.2f} {printable(f['currency'])}"
            )
        elif event.kind == EventKind.ITEM_FAILED:
            self.failed += 1
            self._line(f"FAILED item {event.item_id} {label}: {message}")
        elif event.kind == EventKind.ITEM_RETRY:
            self._line(f"retry later ({f['delay']:g} s): item {event.item_id} {label}: {message}")
        elif event.kind == EventKind.ITEM_RELEASED:
            self._line(f"released item {event.item_id} {label}: {message}")
        elif event.kind == EventKind.STOPPING:
            self._line(f"stopping: {printable(stopping_line(event))}")
        elif event.kind == EventKind.WARNING:
            self._line(f"warning: {message}")

    def close(self) -> None:
        pass


class JsonReporter:
    """--log-json: one JSON object per event (calls included)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        record: dict[str, Any] = {"ts": round(time.time(), 3), "event": event.kind.value}
        if event.item_id is not None:
            record["item_id"] = event.item_id
        if event.label is not None:
            record["label"] = event.label
        if event.message is not None:
            record["message"] = event.message
        for key, value in event.fields.items():
            is_record = is_dataclass(value) and not isinstance(value, type)
            record[key] = asdict(value) if is_record else value
        self.out.write(json.dumps(record, default=str) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class EtaColumn(ProgressColumn):
    """Time left at the run's pace so far, once a few items have finished (`status.eta_seconds`).
    Rich's own column guesses from the first completions alone: items finishing together
    early on read as an ETA of 0:00:01."""

    def render(self, task: Task) -> Text:
        seconds = eta_seconds(
            finished=int(task.completed),
            remaining=int(task.remaining or 0),
            elapsed=task.elapsed or 0.0,
        )
        if seconds is None:
            return Text("-:--:--", style="progress.remaining")
        minutes, secs = divmod(round(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{secs:02d}", style="progress.remaining")


class BarReporter:
    """A terminal: a live bar with done/failed/rate/ETA and the running cost."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]snap"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn("{task.fields[cost]}"),
            TimeElapsedColumn(),
            EtaColumn(),
            TextColumn("{task.fields[scanning]}"),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.started = time.monotonic()
        self.done = 0
        self.failed = 0
        self.cost = 0

    def __call__(self, event: Event) -> None:
        if event.kind == EventKind.RUN_STARTED and self.task is not None:
            # Said twice (the lifecycle, then the pool once it is up): one bar, the later count.
            self.progress.update(self.task, total=self.done + self.failed + event.fields["queued"])
            return
        if event.kind == EventKind.RUN_STARTED:
            self.progress.start()
            self.task = self.progress.add_task(
                "snap",
                total=event.fields["queued"],
                rate="",
                failed=0,
                cost=format_usd(0),
                scanning="",
            )
            return
        if self.task is None:
            return
        if event.kind == EventKind.CALL:
            self.cost += event.fields.get("cost_micro_usd") or 0
        elif event.kind == EventKind.ITEM_DONE:
            self.done += 1
        elif event.kind == EventKind.ITEM_FAILED:
            self.failed += 1
            self.progress.console.print(
                f"[red]failed[/] item {event.item_id} ({plain(event.label)}): "
                f"{plain(event.message)}",
                highlight=False,
            )
        elif event.kind == EventKind.STOPPING:
            self.progress.console.print(
                f"[yellow]stopping:[/] {plain(stopping_line(event))}", highlight=False
            )
        elif event.kind == EventKind.WARNING:
            self.progress.console.print(f"[yellow]warning:[/] {plain(event.message)}")
        elif event.kind == EventKind.QUEUED:  # the scan, still going, queued more
            read = event.fields["photos_read"]
            scanning = f"scanning: {read:,} photos read" if event.fields["scanning"] else ""
            total = self.done + self.failed + event.fields["remaining"]
            self.progress.update(self.task, total=total, scanning=scanning)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.progress.update(
            self.task,
            completed=self.done + self.failed,
            rate=f"{self.done / elapsed:.2f} items/s",
            failed=self.failed,
            cost=format_usd(self.cost),
        )

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def make_reporter(
    *, quiet: bool, log_json: bool, log_file: IO[str] | None, console: Console
) -> Any:
    if log_json:
        return JsonReporter(log_file or sys.stderr)
    if quiet:
        return QuietReporter(console)
    if log_file is not None:
        return LineReporter(log_file)
    if console.is_terminal:
        return BarReporter(console)
    return LineReporter(sys.stderr)
