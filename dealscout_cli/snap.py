"""The `snap` job as a Python function: scan, queue, run, summarise.

`snap()` is what `dealscout snap` calls and what tests and scripts can call
directly. It owns the wiring (store, scan feed, provider, offline emulator, limits,
pipeline, runner) and nothing else: each decision lives in its own module.

With the local engine the scan and the run overlap (`feed`): the run starts as soon as
the scan has queued a first item, and ends only once the scan is over. Batch Mode, the
Celery fleet and `--max-cost` scan everything first (a budget's estimate per item is the
mean over the whole scan).
"""

from __future__ import annotations

import importlib
import math
import os
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from dealscout_cli.budget import Budget
from dealscout_cli.config import ENV_BROKER, Settings, redact_url
from dealscout_cli.costs import BATCH_DISCOUNT
from dealscout_cli.engines import ENGINES, LocalEngine
from dealscout_cli.errors import UsageError
from dealscout_cli.events import OnEvent, ignore_events
from dealscout_cli.feed import FeedReport, KnownPhotoIndex, ScanFeed
from dealscout_cli.jobs import JobLifecycle, ListingStamp, RunSummary, StopKind, exit_code
from dealscout_cli.records import EnqueueReport
from dealscout_cli.retry import RetryPolicy, policy_for
from dealscout_cli.scan import GroupBy, ScanBatch, ScanResult, scan_batches
from dealscout_cli.store import Store


@dataclass
class SnapResult:
    scan: ScanResult
    queued: EnqueueReport
    skipped_new: int
    summary: RunSummary | None
    failed_in_batch: list[dict[str, Any]] = field(default_factory=list)
    offline: bool = False
    batch: Any = None  # engines.batch.BatchReport with --batch
    failed_earlier: int = 0  # items that failed in earlier runs (`dealscout status` has them)
    settings: Settings | None = None  # what the run was given: the hints repeat it
    # The run stopped before the scan of these paths was over: what it had not read yet is
    # not in the database, so the resume command names them again.
    unscanned_paths: list[Path] = field(default_factory=list)

    @property
    def scan_finished(self) -> bool:
        return not self.unscanned_paths

    @property
    def resume_command(self) -> str:
        """The command that goes on where this run stopped (the queue is in the database)."""
        return resume_command(self.settings or Settings(), self.unscanned_paths)

    def resume_command_with(self, *, max_cost_factor: int) -> str:
        """After a budget stop: the resume command with `--max-cost` raised that many times."""
        settings = self.settings or Settings()
        limit = settings.max_cost_micro_usd or 0
        return resume_command(
            settings.with_(max_cost_micro_usd=limit * max_cost_factor), self.unscanned_paths
        )

    @property
    def retry_command(self) -> str:
        return db_command(self.settings or Settings(), "retry")

    @property
    def status_command(self) -> str:
        return db_command(self.settings or Settings(), "status")

    @property
    def exit_code(self) -> int:
        """--batch: batches still pending are not a failure (0, cron-friendly); a batch that
        could not be sent or polled, or ended without results, is 3 like any early stop (run
        again); failed items 1."""
        if self.summary is not None and (self.summary.signal_number or self.summary.stop_reason):
            return exit_code(self.summary)
        if self.failed_in_batch or (self.summary is not None and self.summary.failed):
            return 1
        if self.batch is not None and self.batch.errors:
            return 3
        return 0


def snap(
    paths: Sequence[Path],
    settings: Settings,
    *,
    group: str = "photo",
    force: bool = False,
    on_event: OnEvent = ignore_events,
    on_scanned: Callable[[ScanResult, EnqueueReport], None] = lambda scan, report: None,
    on_scanning: Callable[[int], None] | None = None,
    handle_signals: bool = True,
    confirm_groups: bool = False,
) -> SnapResult:
    """Scan `paths`, queue what is new, process the queue with `settings.engine`. Never prints.

    Without paths nothing is scanned: the run processes what the database already has
    queued (how a stopped or interrupted run is resumed), and needs the database to exist.
    `group="auto"` splits a flat folder into products (`grouping`); `confirm_groups` lets
    the vision model decide its unsure boundaries first (one cheap, recorded call).
    """
    settings.validated()
    if confirm_groups and group != "auto":
        raise UsageError("--confirm-groups decides boundaries of --group auto; add --group auto")
    for path in paths:
        if not Path(path).exists():
            raise UsageError(
                f"{path} does not exist; pass a folder of photos or a manifest (.csv/.jsonl)"
            )
    if not paths and not settings.db_path.exists():
        raise UsageError(
            f"nothing queued: no database at {settings.db_path}; pass folders of photos, "
            f"e.g. `{resume_command(settings, ['./photos'])}`"
        )
    before_queue = None
    if confirm_groups:  # the model decides the unsure boundaries before their items are queued
        from dealscout_cli.grouping import confirm_groups as confirm

        def before_queue(store: Store, batch: ScanBatch) -> None:
            confirm(batch, store, settings)

    known = KnownPhotoIndex()
    batches = None
    if paths and streams(settings, scan_first=group == "auto"):
        _import_ahead(settings)
    if paths:
        grouped = None
        if group == "auto":  # numpy and imagehash: only for the grouping that uses them
            from dealscout_cli.grouping import known_photos_in

            grouped = known_photos_in(settings.db_path)
        batches = scan_batches(
            [Path(p) for p in paths],
            cast(GroupBy, group),
            on_photo=on_scanning,
            known=None if force else known,  # --force reads every photo again
            grouped=grouped,
        )  # a ScanError (a manifest that cannot be read) is raised here: nothing is stored
    with Store.open(settings.db_path) as store:
        feed = None
        if batches is not None:
            known.load(store)
            feed = ScanFeed(
                batches, settings.db_path, force=force, offline=settings.offline,
                on_scanned=on_scanned, before_queue=before_queue,
            )  # fmt: skip
        try:
            summary, details = _scan_and_run(
                store, feed, settings, on_event, handle_signals, scan_first=group == "auto"
            )
        finally:
            if feed is not None:
                feed.stop()  # a run that stopped early (or crashed) stops the scan too
                feed.join()
        report = FeedReport()
        if feed is not None:
            if feed.error is not None and not (summary and summary.stop_kind == StopKind.STORE):
                raise feed.error
            feed.finish()
            report = feed.report
        this_run, earlier = _failures(store, summary, report.new_problems)
    unscanned = [] if feed is None or feed.complete else [Path(p) for p in paths]
    return SnapResult(
        report.found,
        report.queued,
        len(report.new_problems),
        summary,
        this_run,
        settings.offline,
        details,
        failed_earlier=earlier,
        settings=settings,
        unscanned_paths=unscanned,
    )


# What the local engine's run imports before its first request (see `_import_ahead`).
AHEAD_OF_THE_RUN = (
    "google.genai",
    "google.genai.types",
    "dealscout_cli.providers.gemini",
    "dealscout_cli.pipeline",
    "dealscout_cli.engines.local",
)


def _import_ahead(settings: Settings) -> None:
    """Import what the run needs in a thread while the scan reads the first photos: google-genai
    alone takes ~1 s, and the first request waited for it after the first item was queued. Not
    a daemon: an interpreter that exits mid-import waits for it rather than dying in it."""

    names = AHEAD_OF_THE_RUN + (("dealscout_cli.emulator",) if settings.offline else ())

    def imports() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the run imports it again and reports the error
                return

    threading.Thread(target=imports, name="import-ahead").start()


def streams(settings: Settings, *, scan_first: bool = False) -> bool:
    """Whether the run starts while the scan goes on: the local engine can take items as they
    come; Batch Mode and the Celery fleet take the queue as it is when they start, and a
    `--max-cost` budget needs the whole scan's estimate per item first. `--group auto`
    (`scan_first`) shows its grouping before anything is spent, so its scan comes first."""
    return settings.engine == "local" and settings.max_cost_micro_usd is None and not scan_first


def _scan_and_run(
    store: Store,
    feed: ScanFeed | None,
    settings: Settings,
    on_event: OnEvent,
    handle_signals: bool,
    *,
    scan_first: bool = False,
) -> tuple[RunSummary | None, Any]:
    """The scan (whole first, or streaming into the run), then the run if there is work."""
    streaming = feed is not None and streams(settings, scan_first=scan_first)
    if feed is not None and not streaming:
        feed.run_here()
        feed.finish()
    elif feed is not None:
        feed.start()
        feed.wait_for_work()  # a run is worth starting once there is an item to work on
        feed.finish()  # when the scan is over already: its report comes before the run's
    budget = None
    if settings.max_cost_micro_usd is not None:
        found = feed.report.found if feed is not None else ScanResult()
        budget = _budget(store, found, settings, settings.max_cost_micro_usd)
    counts = store.counts()
    scanning = feed is not None and streaming and not feed.done
    # Batch Mode always runs: open batches need polling even when nothing new is queued.
    if settings.engine == "batch" or counts["queued"] or counts["running"] or scanning:
        return _run(store, settings, on_event, handle_signals, budget, feed if streaming else None)
    return None, None


def _failures(
    store: Store, summary: RunSummary | None, new_problems: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """What failed or was skipped in this run, and how many items failed in earlier ones.
    The exit code describes this run: what it tried and how that went. Failures of earlier
    runs are `status`'s to show (a bad file must not fail every cron run after)."""
    failed_now = {f["item_id"] for f in summary.failed_items} if summary else set()
    this_run = [
        f
        for f in store.failures()
        if (f["state"] == "failed" and f["item_id"] in failed_now)
        or (f["state"] == "skipped" and f["source"] in new_problems)
    ]
    return this_run, max(0, store.counts().get("failed", 0) - len(failed_now))


def _run(
    store: Store,
    settings: Settings,
    on_event: OnEvent,
    handle_signals: bool,
    budget: Budget | None,
    feed: ScanFeed | None = None,
) -> tuple[RunSummary, Any]:
    """One run of the chosen engine under the one job lifecycle; with a `feed`, the local
    engine's, taking items as the scan queues them."""
    engine = ENGINES[settings.engine]()
    engine.check(settings)
    with JobLifecycle.started(
        store,
        run_command(settings),
        policy=retry_policy(settings),
        stamp=listing_stamp(settings),
        on_event=on_event,
        budget=budget,
    ) as lifecycle:
        lifecycle.run_started()
        if feed is not None:
            assert isinstance(engine, LocalEngine), "only the local engine streams"
            engine.run(lifecycle, settings, handle_signals=handle_signals, feed=feed)
            details = None
        else:
            details = engine.run(lifecycle, settings, handle_signals=handle_signals)
    lifecycle.run_finished()
    return lifecycle.summary, details


def retry_policy(settings: Settings) -> RetryPolicy:
    return policy_for(
        max_retries=settings.max_retries,
        max_attempts=settings.max_attempts,
        item_delay_base=settings.item_retry_delay,
    )


def listing_stamp(settings: Settings) -> ListingStamp:
    from dealscout_cli.prompts import PROMPT_VERSION

    return ListingStamp(
        PROMPT_VERSION, settings.vision_model, settings.pricing_model, settings.offline
    )


def _budget(store: Store, found: ScanResult, settings: Settings, limit_micro_usd: int) -> Budget:
    """--max-cost: the limit covers every real call the database has recorded, not just this
    run; with --batch an item is expected at the batch price."""
    from dealscout_cli.estimate import estimate_scan

    if settings.offline:
        return Budget(limit_micro_usd, 0, 0)  # emulator calls cost nothing: any budget fits
    per_item = estimate_scan(found, settings).cost_per_item_micro_usd
    if per_item is not None and settings.engine == "batch":
        per_item = math.ceil(per_item * BATCH_DISCOUNT)
    if per_item is None:
        raise UsageError(
            f"--max-cost needs a price for {settings.vision_model} and {settings.pricing_model}; "
            "pass --prices FILE with their USD per 1M tokens"
        )
    spent = store.call_totals(offline=False)["cost_micro_usd"]
    return Budget(limit_micro_usd, spent, per_item)


def run_command(settings: Settings) -> dict[str, Any]:
    """The run's options as stored in `runs.command` (the API key is left out on purpose,
    and a broker's password)."""
    command: dict[str, Any] = {
        "engine": settings.engine,
        "vision_model": settings.vision_model,
        "pricing_model": settings.pricing_model,
        "concurrency": settings.concurrency,
        "max_side": settings.max_side,
        "base_url": settings.base_url if not settings.offline else "offline",
        "rpm": settings.rpm,
        "tpm": settings.tpm,
        "grounded_prices": settings.grounded_prices,
        "barcodes": settings.barcodes,
    }
    if settings.engine == "batch":
        command["batch"] = True
    if settings.broker:
        command["broker"] = redact_url(settings.broker)
    return command


# The flags a resumed run must repeat, when a setting differs from its default: the ones
# that say where the queue is and how it is processed. Keys and passwords are never printed.
_RESUME_FLAGS: dict[str, str] = {
    "db_path": "--db",
    "base_url": "--base-url",
    "vision_model": "--vision-model",
    "pricing_model": "--pricing-model",
    "concurrency": "--concurrency",
    "rpm": "--rpm",
    "tpm": "--tpm",
    "max_side": "--max-side",
    "prices_file": "--prices",
}


def db_command(settings: Settings, *words: str) -> str:
    """`dealscout WORDS` on the same database, quoted for a shell: a hint that works pasted."""
    args = ["dealscout", *words]
    if settings.db_path != Settings().db_path:
        args += ["--db", str(settings.db_path)]
    return shlex.join(args)


def resume_command(settings: Settings, paths: Sequence[Path | str] = ()) -> str:
    """`dealscout snap` with the flags that make it go on with this run's queue, as the
    user gave them (--db, --offline, --batch, the engine, the models, the quota...)."""
    args = ["dealscout", "snap", *(str(p) for p in paths)]
    defaults = Settings()
    for name, flag in _RESUME_FLAGS.items():
        value = getattr(settings, name)
        if value is None or value == getattr(defaults, name):
            continue
        if name == "base_url" and settings.offline:
            continue
        args += [flag, str(value)]
    if settings.offline:
        args.append("--offline")
    if settings.engine == "batch":
        args.append("--batch")
    elif settings.engine != defaults.engine:
        args += ["--engine", settings.engine]
    if settings.broker:
        # A password stays out of the terminal: the variable the user set carries it.
        from_env = os.environ.get(ENV_BROKER) == settings.broker
        shown = redact_url(settings.broker)
        if from_env and shown != settings.broker:
            args += ["--broker", "$" + ENV_BROKER]
        elif not from_env:
            args += ["--broker", shown]
    if not settings.barcodes:
        args.append("--no-barcodes")
    if settings.grounded_prices:
        args.append("--grounded-prices")
    if settings.max_cost_micro_usd is not None:
        args += ["--max-cost", _usd(settings.max_cost_micro_usd)]
    return " ".join(
        a if a == "$" + ENV_BROKER else shlex.quote(a) for a in args
    )  # "$VAR" unquoted: the shell fills it in


def _usd(micros: int) -> str:
    from decimal import Decimal

    return format(Decimal(micros) / Decimal(1_000_000), "f").rstrip("0").rstrip(".") or "0"
