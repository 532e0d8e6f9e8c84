"""The `snap` job as a Python function: scan, queue, run, summarise.

`snap()` is what `dealscout snap` calls and what tests and scripts can call
directly. It owns the wiring (store, provider, offline emulator, limits,
pipeline, runner) and nothing else: each decision lives in its own module.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from dealscout_cli.budget import Budget
from dealscout_cli.config import NO_API_KEY, OFFLINE_API_KEY, Settings
from dealscout_cli.costs import BATCH_DISCOUNT, load_prices
from dealscout_cli.errors import UsageError
from dealscout_cli.limits import Limits, ModelLimit
from dealscout_cli.pipeline import Pipeline, PipelineConfig
from dealscout_cli.records import EnqueueReport
from dealscout_cli.runner import Event, Runner, RunOptions, RunSummary, exit_code, new_owner
from dealscout_cli.scan import ScanResult, scan
from dealscout_cli.store import Store

# Pillow and zxing release the GIL while they decode: one thread more than there are cores
# keeps every core busy while the event loop does its share (requests, JSON, SQLite).
IMAGE_THREADS = (os.cpu_count() or 2) + 1


@dataclass
class SnapResult:
    scan: ScanResult
    queued: EnqueueReport
    skipped_new: int
    summary: RunSummary | None
    failed_in_batch: list[dict[str, Any]] = field(default_factory=list)
    offline: bool = False
    batch: Any = None  # batch.BatchReport with --batch

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
    on_event: Callable[[Event], None] = lambda event: None,
    on_scanned: Callable[[ScanResult, EnqueueReport], None] = lambda scan, report: None,
    on_scanning: Callable[[int], None] | None = None,
    provider_factory: Callable[[Settings], Any] | None = None,
    handle_signals: bool = True,
    engine: str = "local",
    broker: str | None = None,
    max_cost_micro_usd: int | None = None,
    batch: bool = False,
    grounded_prices: bool = False,
) -> SnapResult:
    """Scan `paths`, queue what is new, process the queue. Never prints."""
    for path in paths:
        if not Path(path).exists():
            raise UsageError(
                f"{path} does not exist; pass a folder of photos or a manifest (.csv/.jsonl)"
            )
    found = scan([Path(p) for p in paths], group=group, on_photo=on_scanning)
    now = time.time()
    with Store.open(settings.db_path) as store:
        report = store.enqueue(found.items, now=now, force=force)
        skipped_new = sum(
            store.record_skipped(p.path, p.reason, source=_where(p), now=now)
            for p in found.problems
        )
        on_scanned(found, report)
        budget = None
        if batch and engine != "local":
            raise UsageError("--batch works with the local engine (Gemini runs the batch)")
        if max_cost_micro_usd is not None:
            budget = _budget(store, found, settings, max_cost_micro_usd, batch=batch)
        batch_keys = {item.key for item in found.items}
        summary = None
        batch_report = None
        if batch:  # always: open batches need polling even when nothing new is queued
            batch_report, summary = _run_batch(
                store, settings, provider_factory, grounded_prices, budget
            )
        elif store.counts()["queued"] or store.counts()["running"]:
            if engine == "celery":
                from dealscout_cli.distributed.coordinator import run_fleet

                summary = run_fleet(
                    store,
                    settings,
                    broker_url=broker,
                    on_event=on_event,
                    handle_signals=handle_signals,
                    budget=budget,
                )
            else:
                summary = _run(
                    store,
                    settings,
                    on_event,
                    provider_factory,
                    handle_signals,
                    budget,
                    grounded_prices,
                )
        failed = [
            f
            for f in store.failures()
            if f["state"] == "failed" and _in_batch(store, f, batch_keys)
        ]
        skipped = [
            f for f in store.failures() if f["state"] == "skipped" and _is_problem_of(f, found)
        ]
    return SnapResult(
        found, report, skipped_new, summary, failed + skipped, settings.offline, batch_report
    )


def _where(problem: Any) -> str:
    return f"{problem.path}:{problem.line}" if getattr(problem, "line", None) else str(problem.path)


def _in_batch(store: Store, failure: dict[str, Any], keys: set[str]) -> bool:
    return store.item(failure["item_id"]).key in keys


def _is_problem_of(failure: dict[str, Any], found: ScanResult) -> bool:
    return any(failure["source"] == _where(p) for p in found.problems)


def _run(
    store: Store,
    settings: Settings,
    on_event: Callable[[Event], None],
    provider_factory: Callable[[Settings], Any] | None,
    handle_signals: bool,
    budget: Budget | None = None,
    grounded_prices: bool = False,
) -> RunSummary:
    with model_endpoint(settings) as settings:
        return anyio.run(
            _run_async,
            store,
            settings,
            on_event,
            provider_factory,
            handle_signals,
            budget,
            grounded_prices,
        )


@contextlib.contextmanager
def model_endpoint(settings: Settings, **emulator_options: Any) -> Iterator[Settings]:
    """The settings a run calls the model with: with --offline, an in-process emulator's
    (stopped when the run ends); otherwise as given, which needs an API key."""
    if not settings.offline:
        if not settings.api_key:
            raise UsageError(NO_API_KEY)
        yield settings
        return
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    emulator = Emulator(EmulatorConfig(seed=1, **emulator_options))
    emulator.start()
    try:
        yield settings.with_(base_url=emulator.url, api_key=OFFLINE_API_KEY)
    finally:
        emulator.stop()


async def _run_async(
    store: Store,
    settings: Settings,
    on_event: Callable[[Event], None],
    provider_factory: Callable[[Settings], Any] | None,
    handle_signals: bool,
    budget: Budget | None,
    grounded_prices: bool = False,
) -> RunSummary:
    provider = _provider(settings, provider_factory)
    owner = new_owner()
    command = {**_command(settings), "grounded_prices": grounded_prices}
    run_id = store.start_run(owner, command, offline=settings.offline, now=time.time())
    status = "crashed"
    try:
        pipeline = Pipeline(
            provider,
            _pipeline_config(settings, grounded_prices),
            load_prices(settings.prices_file),
            record_call=_unset_recorder,
            limits=_limits(settings),
            image_limiter=anyio.CapacityLimiter(IMAGE_THREADS),
        )
        runner = Runner(
            store,
            pipeline,
            RunOptions(
                concurrency=settings.concurrency,
                lease_seconds=settings.lease_seconds,
                soft_time_limit=settings.soft_time_limit,
                max_attempts=settings.max_attempts,
                grace=settings.grace,
                offline=settings.offline,
                vision_model=settings.vision_model,
                pricing_model=settings.pricing_model,
                handle_signals=handle_signals,
            ),
            run_id=run_id,
            on_event=on_event,
            owner=owner,
            budget=budget,
        )
        if grounded_prices:

            async def save_sources(item_id: int, output: str) -> None:
                await runner.db(
                    store.save_grounded_price,
                    item_id,
                    output,
                    model=settings.pricing_model,
                    prompt_version=_prompt_version(),
                    offline=settings.offline,
                    now=time.time(),
                )

            pipeline.on_grounded_price = save_sources
        summary = await runner.run()
        status = (
            "interrupted"
            if summary.signal_number
            else ("stopped" if summary.stop_reason else "finished")
        )
        return summary
    finally:
        await provider.aclose()
        counts = store.counts()
        store.finish_run(run_id, status, counts, now=time.time())


def _provider(settings: Settings, provider_factory: Callable[[Settings], Any] | None) -> Any:
    if provider_factory is not None:
        return provider_factory(settings)
    from dealscout_cli.providers.gemini import GeminiProvider

    return GeminiProvider(
        settings.api_key or "",
        base_url=settings.base_url,
        timeout=settings.call_timeout,
        max_connections=max(8, settings.concurrency * 2),
    )


def _pipeline_config(settings: Settings, grounded_prices: bool) -> PipelineConfig:
    return PipelineConfig(
        vision_model=settings.vision_model,
        pricing_model=settings.pricing_model,
        max_side=settings.max_side,
        max_retries=settings.max_retries,
        offline=settings.offline,
        read_barcodes=settings.barcodes,
        grounded_prices=grounded_prices,
    )


# ---------------------------------------------------------------- --batch

OFFLINE_BATCH_WAIT = 60.0  # the built-in emulator dies with this process: wait for its batches
OFFLINE_BATCH_SECONDS = 0.2


def _run_batch(
    store: Store,
    settings: Settings,
    provider_factory: Callable[[Settings], Any] | None,
    grounded_prices: bool,
    budget: Budget | None = None,
) -> tuple[Any, RunSummary]:
    with model_endpoint(settings, batch_seconds=OFFLINE_BATCH_SECONDS) as settings:
        return anyio.run(
            _run_batch_async, store, settings, provider_factory, grounded_prices, budget
        )


async def _run_batch_async(
    store: Store,
    settings: Settings,
    provider_factory: Callable[[Settings], Any] | None,
    grounded_prices: bool,
    budget: Budget | None = None,
) -> tuple[Any, RunSummary]:
    from dealscout_cli.batch import BatchRun
    from dealscout_cli.prompts import PROMPT_VERSION

    provider = _provider(settings, provider_factory)
    owner = new_owner()
    command = {**_command(settings), "batch": True, "grounded_prices": grounded_prices}
    started = time.monotonic()
    run_id = store.start_run(owner, command, offline=settings.offline, now=time.time())
    status = "crashed"
    try:
        prices = load_prices(settings.prices_file)
        pipeline = Pipeline(
            provider,
            _pipeline_config(settings, grounded_prices),
            prices,
            record_call=_unset_recorder,
            image_limiter=anyio.CapacityLimiter(IMAGE_THREADS),
        )
        run = BatchRun(
            store,
            pipeline,
            provider,
            prices,
            owner=owner,
            run_id=run_id,
            offline=settings.offline,
            max_attempts=settings.max_attempts,
            prompt_version=PROMPT_VERSION,
            budget=budget,
        )
        report = await run.run(wait=OFFLINE_BATCH_WAIT if settings.offline else 0.0)
        status = "finished"
    finally:
        await provider.aclose()
        store.finish_run(run_id, status, store.counts(), now=time.time())
    summary = RunSummary(
        run_id=run_id,
        done=report.done,
        failed=report.failed,
        retried=report.requeued,
        calls=report.calls,
        cost_micro_usd=report.cost_micro_usd,
        elapsed=time.monotonic() - started,
        failed_items=report.failed_items,
        done_items=report.done_items,
        stop_reason=report.stop_reason,
    )
    return report, summary


def _prompt_version() -> str:
    from dealscout_cli.prompts import PROMPT_VERSION

    return PROMPT_VERSION


async def _unset_recorder(call: Any) -> None:  # replaced by the Runner
    raise RuntimeError("Pipeline.record_call used before the Runner set it")


def _budget(
    store: Store, found: ScanResult, settings: Settings, limit_micro_usd: int, *, batch: bool
) -> Budget:
    """--max-cost: the limit covers every real call the database has recorded, not just this
    run; with --batch an item is expected at the batch price."""
    from dealscout_cli.estimate import estimate_scan

    per_item = estimate_scan(found, settings).cost_per_item_micro_usd
    if per_item is not None and batch:
        per_item = math.ceil(per_item * BATCH_DISCOUNT)
    if per_item is None:
        raise UsageError(
            f"--max-cost needs a price for {settings.vision_model} and {settings.pricing_model}; "
            "pass --prices FILE with their USD per 1M tokens"
        )
    spent = store.call_totals(offline=False)["cost_micro_usd"]
    return Budget(limit_micro_usd, spent, per_item)


def _limits(settings: Settings) -> Limits:
    default = ModelLimit(rpm=settings.rpm, tpm=settings.tpm, max_concurrency=settings.concurrency)
    return Limits({}, default)


def _command(settings: Settings) -> dict[str, Any]:
    """The run's options as stored in `runs.command` (the API key is left out on purpose)."""
    return {
        "vision_model": settings.vision_model,
        "pricing_model": settings.pricing_model,
        "concurrency": settings.concurrency,
        "max_side": settings.max_side,
        "base_url": settings.base_url if not settings.offline else "offline",
        "rpm": settings.rpm,
        "tpm": settings.tpm,
    }
