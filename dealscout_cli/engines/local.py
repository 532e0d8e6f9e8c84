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

While the scan is still queueing items (`Feed`, see `feed`), a worker that finds nothing
to claim waits for the next batch instead of ending the run; a stop of the run stops the
scan too. The scan's progress reaches the watcher as `QUEUED` events.

What an attempt's result means and how it is written is `jobs.JobLifecycle`'s; the
runner reports through its events and never prints.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskGroup

from dealscout_cli.errors import BadPhoto, ItemTimedOut, LeaseLost, ProviderError, StoreError
from dealscout_cli.events import Event, EventKind
from dealscout_cli.jobs import (
    Action,
    JobLifecycle,
    Outcome,
    RunSummary,
    StopKind,
    StoreCheckpoints,
    done,
    released,
)
from dealscout_cli.limits import Limits, Stopping, soft_time_limit
from dealscout_cli.records import CallRecord, ItemRecord, JobState, Lease

if TYPE_CHECKING:
    from dealscout_cli.config import Settings
    from dealscout_cli.pipeline import Pipeline
    from dealscout_cli.store import Store

IDLE_POLL = 0.5  # seconds between claims while other runs still hold leases
FEED_POLL = 0.25  # seconds between looks at a scan that queued nothing new
# Workers start this far apart (32 in 0.3 s). All at once, the first item's photos waited in
# the image threads' queue behind those of the 31 items claimed with it: the first request
# went out ~0.5 s later than it needs to.
WORKER_STAGGER = 0.01


class Feed(Protocol):
    """The scan queueing items while the run goes on (`feed.ScanFeed`)."""

    photos_read: int
    error: BaseException | None

    @property
    def done(self) -> bool:
        """Nothing more will be queued (the scan is over, was stopped, or failed)."""
        ...

    def wait(self, seen: int, timeout: float) -> int:
        """Block until more than `seen` batches are queued, `done`, or `timeout`; the count."""
        ...

    def stop(self) -> None: ...

    def finish(self) -> None:
        """Once done: report the scan's findings (called in the run's thread)."""
        ...


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
    on SQLite's lock.

    A paid call is never unrecorded: it is recorded even while its item is being cancelled,
    and one the database will not take (disk full, a lock held past the busy timeout) is kept
    in `unrecorded` — the StoreError still stops the run — until a later write succeeds, or
    `settle` sets it aside beside the database for the next run to record."""

    def __init__(self, lifecycle: JobLifecycle) -> None:
        self.lifecycle = lifecycle
        self.unrecorded: list[CallRecord] = []
        self._lock = anyio.CapacityLimiter(1)
        self._flushing = anyio.Lock()  # one flusher: two would write the same call twice

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._lock)

    async def record_call(self, call: CallRecord) -> None:
        self.lifecycle.note_call(call)
        self.unrecorded.append(call)
        with anyio.CancelScope(shield=True):
            await self.flush()

    async def flush(self) -> None:
        """Record the calls kept so far, oldest first; raises StoreError while it cannot."""
        async with self._flushing:
            while self.unrecorded:
                call = self.unrecorded[0]
                await self(self.lifecycle.store.record_call, self.lifecycle.run_id, call)
                self.unrecorded.pop(0)

    async def settle(self) -> None:
        """At the end of a run: one more try, then the last resort beside the database."""
        if not self.unrecorded:
            return
        try:
            await self.flush()
        except StoreError:
            store, calls = self.lifecycle.store, list(self.unrecorded)
            try:
                await self(store.keep_unrecorded, self.lifecycle.run_id, calls)
            except OSError as exc:
                raise StoreError(
                    f"{len(calls)} paid calls could not be recorded in {store.path} nor beside "
                    f"it ({exc}); free some space before the next run"
                ) from None
            self.unrecorded.clear()


class Runner:
    """One `snap` process's pool of workers over the store's queue."""

    def __init__(
        self,
        lifecycle: JobLifecycle,
        pipeline: Pipeline,
        options: RunOptions,
        db: StoreThread,
        feed: Feed | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.feed = feed
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
        self._news = anyio.Event()  # set (and replaced) when the scan queued more, or a stop

    def request_stop(self, how: _Stop | str, reason: str, kind: StopKind) -> None:
        how = _Stop(how)
        if how == _Stop.NOW or self._stop == _Stop.NONE:
            self._stop = how
            self._stop_claiming.set()
            self._wake_workers()
            if self.feed is not None:
                self.feed.stop()  # what is queued stays; the rest is found by the next snap
            self.lifecycle.stop(reason, kind, how=how.value)
        # Waiters give the item back at once, except on a budget stop: the items already
        # claimed fit the budget (it counted them), so they go on to finish.
        if isinstance(self.pipeline.limits, Limits) and kind != StopKind.BUDGET:
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
            if self.feed is not None:
                tg.start_soon(self._follow_feed, self.feed)
            async with anyio.create_task_group() as workers:
                for n in range(self.options.concurrency):
                    workers.start_soon(self._worker, n * WORKER_STAGGER)
            tg.cancel_scope.cancel()
        return self.summary

    async def _follow_feed(self, feed: Feed) -> None:
        """Wake idle workers whenever the scan queued a batch; when it is done, report it."""
        seen = 0
        while not feed.done:
            batches = await anyio.to_thread.run_sync(
                feed.wait, seen, FEED_POLL, abandon_on_cancel=True
            )
            if batches == seen and not feed.done:
                continue
            seen = batches
            self._wake_workers()
            try:
                counts = await self.db(self.store.counts)
            except StoreError as exc:
                self._store_failed(exc)
                return
            remaining = counts[JobState.QUEUED] + counts[JobState.RUNNING]
            fields = {"remaining": remaining, "photos_read": feed.photos_read}
            self.lifecycle.on_event(
                Event(EventKind.QUEUED, fields={**fields, "scanning": not feed.done})
            )
        if isinstance(feed.error, StoreError):
            self._store_failed(feed.error)  # the queue cannot be written: a clean stop, exit 3
        elif feed.error is not None:
            raise feed.error
        feed.finish()

    def _wake_workers(self) -> None:
        news, self._news = self._news, anyio.Event()
        news.set()

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

    def _store_failed(self, error: StoreError) -> None:
        """The database cannot be written: stop now, cleanly (exit 3). Leases that were not
        given back expire, the paid calls are kept (`StoreThread`), a rerun carries on."""
        self.request_stop(_Stop.NOW, str(error), StopKind.STORE)

    async def _heartbeat(self) -> None:
        interval = max(0.05, self.options.lease_seconds / 3)
        while True:
            await anyio.sleep(interval)
            try:
                await self._beat()
            except StoreError as exc:
                self._store_failed(exc)
                return

    async def _beat(self) -> None:
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

    async def _worker(self, delay: float = 0.0) -> None:
        with anyio.move_on_after(delay):
            await self._stop_claiming.wait()
        while not self._stop_claiming.is_set():
            news = self._news  # before the claim: a batch queued after it still wakes us
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
            except StoreError as exc:
                self._store_failed(exc)
                return
            finally:
                self._claimed -= 1
            if lease is None and self.feed is not None and not self.feed.done:
                with anyio.move_on_after(IDLE_POLL):
                    await news.wait()  # the scan is still going: more may come
                continue
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
        except StoreError as exc:  # a checkpoint or a call could not be written
            self._store_failed(exc)
            return
        finally:
            self._held.pop(lease.job_id, None)
        with anyio.CancelScope(shield=True):
            try:
                await self.db(self.lifecycle.write, lease, outcome)
            except LeaseLost as exc:
                self.lifecycle.lease_lost(item, exc)
                return
            except StoreError as exc:
                self._store_failed(exc)
                return
            self.lifecycle.report(item, lease, outcome)
        if outcome.action == Action.STOP:
            # An outage cuts what is in flight (nothing is answering); an account stop lets
            # calls already accepted finish.
            how = _Stop.NOW if outcome.stop == StopKind.OUTAGE else _Stop.GRACEFUL
            self.request_stop(how, outcome.message, outcome.stop or StopKind.ACCOUNT)

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
        return self.lifecycle.judge(error, lease, stopping=self._stop != _Stop.NONE)


__all__ = ["Feed", "RunOptions", "Runner", "StoreThread"]


async def run_local(
    lifecycle: JobLifecycle, settings: Settings, handle_signals: bool, feed: Feed | None = None
) -> None:
    """The local pool over the queue, with its provider, limits and pipeline; with a `feed`,
    also over what the scan queues while the pool runs."""
    from dealscout_cli.costs import load_prices
    from dealscout_cli.engines import IMAGE_THREADS, pipeline_config
    from dealscout_cli.limits import Limits, ModelLimit
    from dealscout_cli.pipeline import Pipeline
    from dealscout_cli.providers import open_provider

    provider = open_provider(settings)
    db = StoreThread(lifecycle)
    try:
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
        await Runner(lifecycle, pipeline, options, db, feed).run()
    finally:
        with anyio.CancelScope(shield=True):
            await db.settle()
            await provider.aclose()
