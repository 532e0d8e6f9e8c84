"""The async worker pool: claim a job, run its pipeline, write the outcome.

`Runner.run` starts `concurrency` tasks in one anyio task group. Each claims one
job at a time from the store (a lease), runs the item's pipeline under a soft
time limit, and finishes the job in one fenced transaction. A heartbeat task
keeps this process's leases alive; a killed process's leases simply expire and
another run (or a run already going) claims them again.

Stopping: the first SIGINT/SIGTERM stops claiming and gives items that are calling
the model `grace` seconds; whatever is still running then is cancelled and released
back to the queue. A second signal cancels at once. A per-day quota 429, the budget
and the broker stop the run the same way. Every stop reaches the items that have not
sent their request yet -- waiting for a permit, or sleeping in a 429 pause -- at once
(`Limits.wake_all`): they go back to the queue, released, not failed.

The soft time limit counts the item's own time: waiting for a permit does not count
(`limits.soft_time_limit`), so a slow quota never fails an item as "took too long".

What an attempt's result means and how it is written is `jobs.JobLifecycle`'s; the
runner reports through its events and never prints.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from dealscout_cli.errors import BadPhoto, ItemTimedOut, LeaseLost, ProviderError
from dealscout_cli.jobs import (
    Action,
    JobLifecycle,
    Outcome,
    RunSummary,
    StopKind,
    StoreCheckpoints,
    done,
    outcome_of,
    released,
)
from dealscout_cli.limits import Limits, Stopping, soft_time_limit
from dealscout_cli.records import CallRecord, ItemRecord, JobState, Lease

if TYPE_CHECKING:
    from dealscout_cli.config import Settings
    from dealscout_cli.pipeline import Pipeline
    from dealscout_cli.store import Store

IDLE_POLL = 0.5  # seconds between claims while other runs still hold leases


@dataclass(frozen=True)
class RunOptions:
    concurrency: int
    lease_seconds: float
    soft_time_limit: float
    grace: float
    handle_signals: bool = True


class _Stop(StrEnum):
    NONE = ""
    GRACEFUL = "graceful"
    NOW = "now"


class StoreThread:
    """Store calls run in a worker thread, one at a time, so the event loop never blocks
    on SQLite's lock; a paid call is recorded even while its item is being cancelled."""

    def __init__(self, lifecycle: JobLifecycle) -> None:
        self.lifecycle = lifecycle
        self._lock = anyio.CapacityLimiter(1)

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._lock)

    async def record_call(self, call: CallRecord) -> None:
        with anyio.CancelScope(shield=True):
            await self(self.lifecycle.store.record_call, self.lifecycle.run_id, call)
        self.lifecycle.note_call(call)


class Runner:
    """One `snap` process's pool of workers over the store's queue."""

    def __init__(
        self,
        lifecycle: JobLifecycle,
        pipeline: Pipeline,
        options: RunOptions,
        db: StoreThread,
    ) -> None:
        self.lifecycle = lifecycle
        self.store: Store = lifecycle.store
        self.pipeline = pipeline
        self.options = options
        self.db = db
        self.clock = lifecycle.clock
        self.owner = lifecycle.owner
        self.summary: RunSummary = lifecycle.summary
        self._claimed = 0
        self._held: dict[int, tuple[Lease, anyio.CancelScope]] = {}
        self._stop = _Stop.NONE
        self._stop_claiming = anyio.Event()

    def request_stop(self, how: _Stop | str, reason: str, kind: StopKind) -> None:
        how = _Stop(how)
        if how == _Stop.NOW or self._stop == _Stop.NONE:
            self._stop = how
            self._stop_claiming.set()
            self.lifecycle.stop(reason, kind, how=how.value)
        if isinstance(self.pipeline.limits, Limits):
            self.pipeline.limits.wake_all(reason)
        if how == _Stop.NOW:
            for _lease, scope in list(self._held.values()):
                scope.cancel()

    # ------------------------------------------------------------ the run

    async def run(self) -> RunSummary:
        self.lifecycle.run_started(await self.db(self.store.counts))
        async with anyio.create_task_group() as tg:
            if self.options.handle_signals:
                tg.start_soon(self._watch_signals, tg)
            tg.start_soon(self._heartbeat)
            async with anyio.create_task_group() as workers:
                for _ in range(self.options.concurrency):
                    workers.start_soon(self._worker)
            tg.cancel_scope.cancel()
        return self.summary

    async def _watch_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stop == _Stop.NONE:
                    self.summary.signal_number = signum
                    self.request_stop(_Stop.GRACEFUL, f"{name} received", StopKind.SIGNAL)
                    tg.start_soon(self._grace_timer)
                else:
                    self.request_stop(
                        _Stop.NOW, f"second {name}: cancelling in-flight items", StopKind.SIGNAL
                    )

    async def _grace_timer(self) -> None:
        await anyio.sleep(self.options.grace)
        if self._held:
            self.request_stop(
                _Stop.NOW, f"grace period of {self.options.grace:g} s over", StopKind.SIGNAL
            )

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
        if not isinstance(self.pipeline.limits, Limits):
            return
        snapshot = [asdict(stats) for stats in self.pipeline.limits.snapshot()]
        await self.db(
            self.store.update_run_limits, self.lifecycle.run_id, snapshot, now=self.clock()
        )

    async def _worker(self) -> None:
        while not self._stop_claiming.is_set():
            refusal = self.lifecycle.budget_refusal(in_flight=self._claimed)
            if refusal is not None:
                self.request_stop(_Stop.GRACEFUL, refusal, StopKind.BUDGET)
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

    async def _others_still_busy(self) -> bool:
        """True while some job may still become claimable: queued for later, or leased elsewhere."""
        counts = await self.db(self.store.counts)
        return bool(counts[JobState.QUEUED] > 0 or counts[JobState.RUNNING] > len(self._held))

    # ------------------------------------------------------------ one item

    async def _process(self, lease: Lease) -> None:
        item: ItemRecord = await self.db(self.store.item, lease.item_id)
        self.lifecycle.item_started(item, lease)
        scope = anyio.CancelScope()
        self._held[lease.job_id] = (lease, scope)
        outcome = released("cancelled")
        try:
            with scope:
                outcome = await self._attempt(lease, item)
        finally:
            self._held.pop(lease.job_id, None)
        with anyio.CancelScope(shield=True):
            try:
                await self.db(self.lifecycle.write, lease, outcome)
            except LeaseLost as exc:
                self.lifecycle.lease_lost(item, exc)
                return
            self.lifecycle.report(item, lease, outcome)
        if outcome.action == Action.STOP:
            self.request_stop(_Stop.GRACEFUL, outcome.message, StopKind.ACCOUNT)

    async def _attempt(self, lease: Lease, item: ItemRecord) -> Outcome:
        checkpoints = StoreCheckpoints(
            self.store, lease, self.lifecycle.stamp, self.db, clock=self.clock
        )
        limit = self.options.soft_time_limit
        try:
            with soft_time_limit(limit) as timer:
                identification, price = await self.pipeline.process(
                    item, checkpoints, attempt=lease.attempt
                )
                return done(identification, price)
            error: BaseException = ItemTimedOut(f"took longer than {limit:g} s (soft time limit)")
            assert timer.scope.cancelled_caught
        except Stopping as stop:
            return released(f"the run is stopping ({stop})")  # before sending: no attempt used
        except (BadPhoto, ProviderError) as exc:
            error = exc
        return outcome_of(error, lease, self.lifecycle.policy, stopping=self._stop != _Stop.NONE)


__all__ = ["RunOptions", "Runner", "StoreThread"]


async def run_local(lifecycle: JobLifecycle, settings: Settings, handle_signals: bool) -> None:
    """The local pool over the queue, with its provider, limits and pipeline."""
    from dealscout_cli.costs import load_prices
    from dealscout_cli.engines import IMAGE_THREADS, pipeline_config
    from dealscout_cli.limits import Limits, ModelLimit
    from dealscout_cli.pipeline import Pipeline
    from dealscout_cli.providers import open_provider

    provider = open_provider(settings)
    try:
        db = StoreThread(lifecycle)
        default = ModelLimit(
            rpm=settings.rpm, tpm=settings.tpm, max_concurrency=settings.concurrency
        )
        pipeline = Pipeline(
            provider,
            pipeline_config(settings),
            load_prices(settings.prices_file),
            db.record_call,
            policy=lifecycle.policy,
            limits=Limits({}, default),
            image_limiter=anyio.CapacityLimiter(IMAGE_THREADS),
        )
        options = RunOptions(
            concurrency=settings.concurrency,
            lease_seconds=settings.lease_seconds,
            soft_time_limit=settings.soft_time_limit,
            grace=settings.grace,
            handle_signals=handle_signals,
        )
        await Runner(lifecycle, pipeline, options, db).run()
    finally:
        await provider.aclose()
