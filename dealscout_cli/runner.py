"""The async worker pool: claim a job, run its pipeline, write the outcome.

`run_queue` starts `concurrency` tasks in one anyio task group. Each claims one
job at a time from the store (a lease), runs the item's pipeline under a soft
time limit, and finishes the job in one fenced transaction. A heartbeat task
keeps this process's leases alive; a killed process's leases simply expire and
another run (or a run already going) claims them again.

Stopping: the first SIGINT/SIGTERM stops claiming and gives in-flight items
`grace` seconds; whatever is still running then is cancelled and released back
to the queue. A second signal cancels at once. A per-day quota 429 stops the run
the same way.

The runner reports through `on_event(Event)` callbacks and never prints.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import anyio
from anyio.abc import TaskGroup

from dealscout_cli.budget import Budget
from dealscout_cli.errors import STOPS_THE_RUN, BadPhoto, LeaseLost, ProviderError, QuotaExhausted
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.pipeline import Pipeline
from dealscout_cli.prompts import PROMPT_VERSION
from dealscout_cli.records import CallRecord, JobState, Lease, Stage
from dealscout_cli.store import Store

RETRY_DELAY_BASE = 5.0  # seconds before a failed item's next attempt, doubled per attempt
RETRY_DELAY_CAP = 300.0
IDLE_POLL = 0.5  # seconds between claims while other runs still hold leases


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    ITEM_STARTED = "item_started"
    ITEM_DONE = "item_done"
    ITEM_RETRY = "item_retry"
    ITEM_FAILED = "item_failed"
    ITEM_RELEASED = "item_released"
    CALL = "call"
    STOPPING = "stopping"
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    item_id: int | None = None
    label: str | None = None
    message: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunOptions:
    concurrency: int
    lease_seconds: float
    soft_time_limit: float
    max_attempts: int
    grace: float
    offline: bool
    vision_model: str
    pricing_model: str
    handle_signals: bool = True


@dataclass
class RunSummary:
    run_id: int
    done: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    calls: int = 0
    cost_micro_usd: int = 0
    elapsed: float = 0.0
    stop_reason: str | None = (
        None  # "signal SIGTERM", "daily quota exhausted ...", None when drained
    )
    signal_number: int | None = None
    failed_items: list[dict[str, Any]] = field(default_factory=list)
    done_items: list[dict[str, Any]] = field(default_factory=list)  # the first DONE_ITEMS_KEPT


DONE_ITEMS_KEPT = 100  # enough for the summary table; `dealscout listings` has the rest


class _Stop(StrEnum):
    NONE = ""
    GRACEFUL = "graceful"
    NOW = "now"


class Runner:
    """One `snap` process's pool of workers over the store's queue."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        options: RunOptions,
        *,
        run_id: int,
        on_event: Callable[[Event], None] = lambda event: None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.budget = budget
        self._claimed = 0
        self.store = store
        self.pipeline = pipeline
        self.options = options
        self.run_id = run_id
        self.on_event = on_event
        self.clock = clock
        self.owner = owner or new_owner()
        self.summary = RunSummary(run_id=run_id)
        self._db_lock = anyio.CapacityLimiter(1)
        self._held: dict[int, tuple[Lease, anyio.CancelScope]] = {}
        self._stop = _Stop.NONE
        self._stop_claiming = anyio.Event()
        pipeline.record_call = self._record_call

    # ------------------------------------------------------------ plumbing

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Store calls run in a worker thread, one at a time, so the event loop never blocks on a lock."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._db_lock)

    async def _record_call(self, call: CallRecord) -> None:
        with anyio.CancelScope(shield=True):  # a paid call is recorded even while cancelling
            await self.db(self.store.record_call, self.run_id, call)
        self.summary.calls += 1
        self.summary.cost_micro_usd += call.cost_micro_usd or 0
        self.on_event(
            Event(
                EventKind.CALL,
                call.item_id,
                fields={
                    "stage": call.stage,
                    "model": call.model,
                    "outcome": call.outcome,
                    "attempt": call.attempt,
                    "latency_ms": call.latency_ms,
                    "input_tokens": call.input_tokens,
                    "output_tokens": call.output_tokens,
                    "cost_micro_usd": call.cost_micro_usd,
                },
            )
        )

    def request_stop(self, how: _Stop | str, reason: str) -> None:
        how = _Stop(how)
        if how == _Stop.NOW or self._stop == _Stop.NONE:
            self._stop = how
            self.summary.stop_reason = self.summary.stop_reason or reason
            self._stop_claiming.set()
            self.on_event(Event(EventKind.STOPPING, message=reason, fields={"how": how.value}))
        if how == _Stop.NOW:
            for _lease, scope in list(self._held.values()):
                scope.cancel()

    # ------------------------------------------------------------ the run

    async def run(self) -> RunSummary:
        started = time.monotonic()
        counts = await self.db(self.store.counts)
        self.on_event(
            Event(EventKind.RUN_STARTED, fields={"queued": counts["queued"], "counts": counts})
        )
        async with anyio.create_task_group() as tg:
            if self.options.handle_signals:
                tg.start_soon(self._watch_signals, tg)
            tg.start_soon(self._heartbeat)
            async with anyio.create_task_group() as workers:
                for _ in range(self.options.concurrency):
                    workers.start_soon(self._worker)
            tg.cancel_scope.cancel()
        self.summary.elapsed = time.monotonic() - started
        self.on_event(Event(EventKind.RUN_FINISHED, fields={"summary": self.summary}))
        return self.summary

    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stop == _Stop.NONE:
                    self.summary.signal_number = signum
                    self.request_stop(_Stop.GRACEFUL, f"{name} received")
                    tg.start_soon(self._grace_timer)
                else:
                    self.request_stop(_Stop.NOW, f"second {name}: cancelling in-flight items")

    async def _grace_timer(self) -> None:
        await anyio.sleep(self.options.grace)
        if self._held:
            self.request_stop(_Stop.NOW, f"grace period of {self.options.grace:g} s over")

    async def _heartbeat(self) -> None:
        interval = max(0.05, self.options.lease_seconds / 3)
        while True:
            await anyio.sleep(interval)
            await self._publish_limits()
            for job_id, (lease, scope) in list(self._held.items()):
                alive = await self.db(
                    self.store.heartbeat,
                    lease,
                    now=self.clock(),
                    lease_seconds=self.options.lease_seconds,
                )
                if not alive and job_id in self._held:
                    scope.cancel()  # someone else owns it now; stop paying for it

    async def _publish_limits(self) -> None:
        """Leave each model's limiter state in the runs table, for `dealscout status`."""
        limits = getattr(self.pipeline, "limits", None)
        if limits is None:
            return
        snapshot = [asdict(stats) for stats in limits.snapshot()]
        await self.db(self.store.update_run_limits, self.run_id, snapshot, now=self.clock())

    async def _worker(self) -> None:
        while not self._stop_claiming.is_set():
            if not self._budget_allows_next_item():
                return
            self._claimed += 1  # no await since the check: the next worker sees this reservation
            try:
                lease = await self.db(
                    self.store.claim_next_job,
                    self.owner,
                    now=self.clock(),
                    lease_seconds=self.options.lease_seconds,
                )
                if lease is not None:
                    await self._process(lease)
            finally:
                self._claimed -= 1
            if lease is None:
                if not await self._others_still_busy():
                    return
                with anyio.move_on_after(IDLE_POLL):
                    await self._stop_claiming.wait()

    def _budget_allows_next_item(self) -> bool:
        if self.budget is None:
            return True
        finished = self.summary.done + self.summary.failed + self.summary.retried
        reason = self.budget.refusal(
            self.summary.cost_micro_usd, in_flight=self._claimed, items_finished=finished
        )
        if reason is None:
            return True
        self.request_stop(_Stop.GRACEFUL, reason)
        return False

    async def _others_still_busy(self) -> bool:
        """True while some job may still become claimable: queued for later, or leased elsewhere."""
        counts = await self.db(self.store.counts)
        return counts[JobState.QUEUED] > 0 or counts[JobState.RUNNING] > len(self._held)

    # ------------------------------------------------------------ one item

    async def _process(self, lease: Lease) -> None:
        item = await self.db(self.store.item, lease.item_id)
        self.on_event(
            Event(EventKind.ITEM_STARTED, item.id, item.label, fields={"attempt": lease.attempt})
        )
        scope = anyio.CancelScope()
        self._held[lease.job_id] = (lease, scope)
        outcome: tuple[str, Any] = ("released", "cancelled")
        try:
            with scope:
                with anyio.move_on_after(self.options.soft_time_limit) as timer:
                    outcome = ("done", await self._run_pipeline(lease, item))
                if timer.cancelled_caught:
                    outcome = ("timeout", None)
        except (BadPhoto, ProviderError) as exc:
            outcome = ("error", exc)
        finally:
            self._held.pop(lease.job_id, None)
        with anyio.CancelScope(shield=True):
            try:
                await self._finish(lease, item, outcome)
            except LeaseLost as exc:
                self.on_event(Event(EventKind.ITEM_RELEASED, item.id, item.label, message=str(exc)))

    async def _run_pipeline(self, lease: Lease, item: Any) -> tuple[Identification, PriceEstimate]:
        saved = await self.db(self.store.saved_stage, item.id, Stage.IDENTIFY)
        if saved is not None:
            identification = Identification.model_validate(saved["output"])
        else:
            images, warnings = await self.pipeline.prepare(item)
            codes = await self.pipeline.barcodes(item)
            await self.db(
                self.store.set_item_facts, item.id, quality_warnings=warnings, barcodes=codes
            )
            identification, text = await self.pipeline.identify(
                item, images, attempt=lease.attempt, barcodes=codes
            )
            await self.db(
                self.store.save_stage,
                lease,
                Stage.IDENTIFY,
                identification.model_dump_json(),
                model=self.options.vision_model,
                prompt_version=PROMPT_VERSION,
                offline=self.options.offline,
                now=self.clock(),
            )
        price, _text = await self.pipeline.price(item, identification, attempt=lease.attempt)
        return identification, price

    async def _finish(self, lease: Lease, item: Any, outcome: tuple[str, Any]) -> None:
        kind, value = outcome
        now = self.clock()
        if kind == "done":
            identification, price = value
            await self.db(
                self.store.complete,
                lease,
                now=now,
                run_id=self.run_id,
                identification=identification,
                price=price,
                prompt_version=PROMPT_VERSION,
                vision_model=self.options.vision_model,
                pricing_model=self.options.pricing_model,
                offline=self.options.offline,
            )
            self.summary.done += 1
            if len(self.summary.done_items) < DONE_ITEMS_KEPT:
                self.summary.done_items.append(
                    {
                        "item_id": item.id,
                        "label": item.label,
                        "title": identification.title,
                        "condition": identification.condition.value,
                        "price": price.suggested,
                        "currency": price.currency,
                    }
                )
            self.on_event(
                Event(
                    EventKind.ITEM_DONE,
                    item.id,
                    item.label,
                    fields={
                        "title": identification.title,
                        "price": price.suggested,
                        "currency": price.currency,
                    },
                )
            )
            return
        if kind == "released":
            await self.db(self.store.release, lease, now=now, reason=self.summary.stop_reason)
            self.summary.released += 1
            self.on_event(
                Event(EventKind.ITEM_RELEASED, item.id, item.label, message="back in the queue")
            )
            return
        if kind == "timeout":
            error_kind, message, retryable = (
                "timeout",
                f"took longer than {self.options.soft_time_limit:g} s (soft time limit)",
                True,
            )
        elif isinstance(value, STOPS_THE_RUN):
            # Every other item would fail the same way: put this one back and stop cleanly.
            await self.db(self.store.release, lease, now=now, reason=str(value))
            self.summary.released += 1
            reason = (
                f"daily quota exhausted; resume after it resets ({value})"
                if isinstance(value, QuotaExhausted)
                else str(value)
            )
            self.request_stop(_Stop.GRACEFUL, reason)
            return
        elif isinstance(value, BadPhoto):
            error_kind, message, retryable = "bad_photo", str(value), False
        else:
            error_kind, message, retryable = value.kind, str(value), value.retryable
            if error_kind == "bad_output":
                retryable = False  # asked twice, answered badly twice
        await self._fail_or_retry(lease, item, error_kind, message, retryable, now)

    async def _fail_or_retry(
        self, lease: Lease, item: Any, kind: str, message: str, retryable: bool, now: float
    ) -> None:
        if retryable and lease.attempt < self.options.max_attempts and self._stop == _Stop.NONE:
            delay = min(RETRY_DELAY_CAP, RETRY_DELAY_BASE * 2 ** (lease.attempt - 1))
            await self.db(
                self.store.retry_later, lease, now=now, delay=delay, kind=kind, error=message
            )
            self.summary.retried += 1
            self.on_event(
                Event(
                    EventKind.ITEM_RETRY,
                    item.id,
                    item.label,
                    message=message,
                    fields={"kind": kind, "delay": delay, "attempt": lease.attempt},
                )
            )
            return
        if retryable and self._stop != _Stop.NONE:
            await self.db(self.store.release, lease, now=now, reason=message)
            self.summary.released += 1
            return
        await self.db(
            self.store.fail, lease, now=now, kind=kind, error=message, retryable=retryable
        )
        self.summary.failed += 1
        first_photo = item.photos[0].path if item.photos else None
        self.summary.failed_items.append(
            {
                "item_id": item.id,
                "label": item.label,
                "photo": first_photo,
                "kind": kind,
                "error": message,
            }
        )
        self.on_event(
            Event(
                EventKind.ITEM_FAILED,
                item.id,
                item.label,
                message=message,
                fields={"kind": kind, "retryable": retryable, "photo": first_photo},
            )
        )


def new_owner() -> str:
    """A lease owner name that says where the run lives: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def exit_code(summary: RunSummary) -> int:
    """0 all done, 1 some items failed, 3 stopped early (quota), 130/143 interrupted by a signal."""
    if summary.signal_number is not None:
        return 128 + summary.signal_number
    if summary.failed:
        return 1
    if summary.stop_reason:
        return 3
    return 0


__all__ = ["Event", "EventKind", "RunOptions", "RunSummary", "Runner", "exit_code", "new_owner"]
