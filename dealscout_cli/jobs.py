"""The job lifecycle, written once for every engine.

An engine (local pool, Batch Mode, Celery fleet) decides only *where* an item's pipeline
runs. Everything else about a job lives here:

* `outcome_of(error, lease, policy)`: what a failed attempt means — retry later, fail,
  give the item back (release), or stop the run — from the error's kind and the lease's
  attempt number, by the one policy in `retry`.
* `JobLifecycle`: applies an outcome to the store (under the lease's fencing token),
  keeps the run's `RunSummary`, emits the events, records every paid call, asks the
  `--max-cost` budget before each claim, and keeps the `runs` row.
* `exit_code(summary)`: what cron sees.
* `StoreCheckpoints`: the pipeline's checkpoints (saved identification, photo facts,
  grounded sources) kept in the local store under a lease.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from dealscout_cli.errors import (
    ErrorKind,
    LeaseLost,
    ProviderError,
    StoreError,
    kind_of,
)
from dealscout_cli.events import Event, EventKind, OnEvent, ignore_events
from dealscout_cli.records import CallRecord, ItemRecord, Lease, Stage
from dealscout_cli.retry import FINAL_KINDS, STOPS_THE_RUN, RetryPolicy

if TYPE_CHECKING:
    from dealscout_cli.budget import Budget
    from dealscout_cli.models import Identification, PriceEstimate
    from dealscout_cli.store import Store

DONE_ITEMS_KEPT = 100  # enough for the summary table; `dealscout listings` has the rest


class StopKind(StrEnum):
    """Why a run stopped before the queue was empty: renderers branch on this, not on text."""

    SIGNAL = "signal"  # SIGINT/SIGTERM (or the grace period after one ran out)
    ACCOUNT = "account"  # daily quota, rejected key, unknown model: every call would fail
    BUDGET = "budget"  # --max-cost
    BROKER = "broker"  # distributed: Redis went away
    OUTAGE = "outage"  # no call has been answered for a while: the API, the network or a proxy
    STORE = "store"  # the database cannot be written (disk full, a lock held too long)


class Action(StrEnum):
    DONE = "done"
    RETRY = "retry"  # back in the queue after `delay`
    FAIL = "fail"
    RELEASE = "release"  # back in the queue now, attempt not counted as a failure
    STOP = "stop"  # release, and stop the run: every other item would fail the same way


@dataclass(frozen=True)
class Outcome:
    action: Action
    kind: ErrorKind | None = None
    message: str = ""
    retryable: bool = False
    delay: float = 0.0
    stop: StopKind | None = None  # with Action.STOP: why the run stops
    identification: Identification | None = None
    price: PriceEstimate | None = None


def done(identification: Identification, price: PriceEstimate) -> Outcome:
    return Outcome(Action.DONE, identification=identification, price=price)


def released(reason: str) -> Outcome:
    return Outcome(Action.RELEASE, message=reason)


def outcome_of(
    error: BaseException, lease: Lease, policy: RetryPolicy, *, stopping: bool = False
) -> Outcome:
    """What a failed attempt means for its item. `stopping`: the run is on its way out, so a
    retryable failure goes back to the queue now instead of waiting out a retry delay."""
    kind = kind_of(error)
    message = str(error)
    if kind in STOPS_THE_RUN:
        return Outcome(Action.STOP, kind, stop_reason(kind, message), stop=StopKind.ACCOUNT)
    retryable = bool(getattr(error, "retryable", False)) and kind not in FINAL_KINDS
    if retryable and stopping:
        return Outcome(Action.RELEASE, kind, message, retryable=True)
    if retryable and policy.may_retry_item(kind, lease.attempt):
        return Outcome(
            Action.RETRY, kind, message, retryable=True, delay=policy.item_delay(lease.attempt)
        )
    return Outcome(Action.FAIL, kind, message, retryable=retryable)


# An outage: calls of these kinds only, no answer at all in OUTAGE_SECONDS and at least
# OUTAGE_CALLS of them in a row. Then every item would fail the same way, one by one (200
# items took ~40 minutes to fail at the default timeout): the run stops instead, exit 3.
OUTAGE_KINDS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION_ERROR, ErrorKind.BAD_RESPONSE})
OUTAGE_CALLS = 10
OUTAGE_SECONDS = 30.0


class OutageWatch:
    """Counts calls in a row that got no answer from the API; any answer resets it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_a_row = 0
        self.last_answer = clock()  # the run's start counts as the last sign of life
        self.last_kind: str | None = None

    def saw(self, outcome: str) -> None:
        if outcome in OUTAGE_KINDS:
            self.in_a_row += 1
            self.last_kind = outcome
        elif outcome != ErrorKind.CANCELLED:
            self.in_a_row = 0
            self.last_answer = self.clock()

    def verdict(self) -> str | None:
        """None while the API may be there, else the one line a stop says."""
        silent = self.clock() - self.last_answer
        if self.in_a_row < OUTAGE_CALLS or silent < OUTAGE_SECONDS:
            return None
        return (
            f"no answer from the Gemini API for {silent:.0f} s ({self.in_a_row} calls in a row "
            f"ended {self.last_kind}); check the network, a proxy or --base-url, then resume: "
            "every item is back in the queue"
        )


def stop_reason(kind: ErrorKind, message: str) -> str:
    """The one line a run that stopped on `kind` ends with, with the way out."""
    if kind == ErrorKind.QUOTA_EXHAUSTED:
        return f"daily quota exhausted; resume after it resets ({message})"
    return message


def call_outcome(error: ProviderError | None, *, answered: bool) -> str:
    """`calls.outcome` for one attempt: ok, an `ErrorKind`, or cancelled."""
    if error is not None:
        return error.kind.value
    return "ok" if answered else ErrorKind.CANCELLED.value


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
    stop_reason: str | None = None  # "SIGTERM received", a quota or budget stop, None when drained
    stop_kind: StopKind | None = None
    signal_number: int | None = None
    failed_items: list[dict[str, Any]] = field(default_factory=list)
    done_items: list[dict[str, Any]] = field(default_factory=list)  # the first DONE_ITEMS_KEPT

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.retried

    @property
    def status(self) -> str:
        """The `runs.status` of a run that ended with this summary."""
        if self.signal_number:
            return "interrupted"
        return "stopped" if self.stop_reason else "finished"


def exit_code(summary: RunSummary) -> int:
    """0 all done, 1 some items failed, 3 stopped early (quota, key, budget, broker),
    128+N interrupted by signal N."""
    if summary.signal_number is not None:
        return 128 + summary.signal_number
    if summary.failed:
        return 1
    if summary.stop_reason:
        return 3
    return 0


def new_owner() -> str:
    """A lease owner name that says where the run lives: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ListingStamp:
    """What a saved stage or listing is stamped with: which prompts and models made it."""

    prompt_version: str
    vision_model: str
    pricing_model: str
    offline: bool


class JobLifecycle:
    """One run's bookkeeping over the store, shared by every engine.

    `write` touches only the store (engines on an event loop run it in a thread);
    `report` only the summary and the events; `apply` does both.
    """

    def __init__(
        self,
        store: Store,
        *,
        run_id: int,
        owner: str,
        policy: RetryPolicy,
        stamp: ListingStamp,
        on_event: OnEvent = ignore_events,
        budget: Budget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.policy = policy
        self.stamp = stamp
        self.on_event = on_event
        self.budget = budget
        self.clock = clock
        self.summary = RunSummary(run_id=run_id)
        self.outage = OutageWatch()
        self._started = False  # run_started is told once, whoever says it first

    @classmethod
    @contextmanager
    def started(
        cls, store: Store, command: dict[str, Any], **kwargs: Any
    ) -> Iterator[JobLifecycle]:
        """A run's record: its `runs` row from start to finish (`crashed` if it raises)."""
        owner = new_owner()
        stamp: ListingStamp = kwargs["stamp"]
        run_id = store.start_run(owner, command, offline=stamp.offline, now=time.time())
        lifecycle = cls(store, run_id=run_id, owner=owner, **kwargs)
        status = "crashed"
        started = time.monotonic()
        try:
            yield lifecycle
            status = lifecycle.summary.status
            lifecycle.settle_budget_reason()
        finally:
            lifecycle.summary.elapsed = time.monotonic() - started
            try:
                store.finish_run(run_id, status, store.counts(), now=time.time())
            except StoreError:
                # The run already stopped on this (StopKind.STORE) or is crashing: its own
                # error says more than this one would.
                if status != "crashed" and lifecycle.summary.stop_kind != StopKind.STORE:
                    raise

    # ------------------------------------------------------------ the run

    def run_started(self, counts: dict[str, int] | None = None) -> None:
        """Tell the watcher the run started: once (snap says it for every engine, and the
        local pool says it again when its workers start)."""
        if self._started:
            return
        self._started = True
        counts = self.store.counts() if counts is None else counts
        self.on_event(
            Event(EventKind.RUN_STARTED, fields={"queued": counts["queued"], "counts": counts})
        )

    def run_finished(self) -> None:
        self.on_event(Event(EventKind.RUN_FINISHED, fields={"summary": self.summary}))

    def stop(self, reason: str, kind: StopKind, **fields: Any) -> None:
        """Note why the run stops (the first reason wins) and tell the watcher."""
        if self.summary.stop_reason is None:
            self.summary.stop_reason = reason
            self.summary.stop_kind = kind
        self.on_event(
            Event(EventKind.STOPPING, message=reason, fields={"stop_kind": kind.value, **fields})
        )

    def settle_budget_reason(self) -> None:
        """A budget stop said what was spent when it refused; the items in flight then went
        on to finish, so say it again with what the run spent in the end."""
        if self.summary.stop_kind == StopKind.BUDGET and self.budget is not None:
            self.summary.stop_reason = self.budget.message(
                self.summary.cost_micro_usd, in_flight=0, items_finished=self.summary.finished
            )

    def budget_refusal(self, in_flight: int) -> str | None:
        """--max-cost: None while one more item fits the budget, else why not."""
        if self.budget is None:
            return None
        return self.budget.refusal(
            self.summary.cost_micro_usd, in_flight=in_flight, items_finished=self.summary.finished
        )

    def item_started(self, item: ItemRecord, lease: Lease) -> None:
        self.on_event(
            Event(EventKind.ITEM_STARTED, item.id, item.label, fields={"attempt": lease.attempt})
        )

    # ------------------------------------------------------------ calls

    def record_call(self, call: CallRecord, *, batch_id: int | None = None) -> None:
        self.store.record_call(self.run_id, call, batch_id=batch_id)
        self.note_call(call)

    def note_call(self, call: CallRecord) -> None:
        self.outage.saw(call.outcome)
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

    # ------------------------------------------------------------ outcomes

    def judge(self, error: BaseException, lease: Lease, *, stopping: bool = False) -> Outcome:
        """`outcome_of` for this run: an item whose failure is part of an outage goes back
        to the queue and stops the run, instead of being failed."""
        outcome = outcome_of(error, lease, self.policy, stopping=stopping)
        if outcome.kind in OUTAGE_KINDS and outcome.action in (Action.RETRY, Action.FAIL):
            verdict = self.outage.verdict()
            if verdict is not None:
                return Outcome(Action.STOP, outcome.kind, verdict, stop=StopKind.OUTAGE)
        return outcome

    def apply(self, lease: Lease, item: ItemRecord, outcome: Outcome) -> None:
        try:
            self.write(lease, outcome)
        except LeaseLost as exc:
            self.lease_lost(item, exc)
            return
        self.report(item, lease, outcome)

    def write(self, lease: Lease, outcome: Outcome) -> None:
        """The outcome in the store, fenced by the lease (raises LeaseLost)."""
        now = self.clock()
        if outcome.action == Action.DONE:
            assert outcome.identification is not None and outcome.price is not None
            self.store.complete(
                lease,
                now=now,
                run_id=self.run_id,
                identification=outcome.identification,
                price=outcome.price,
                prompt_version=self.stamp.prompt_version,
                vision_model=self.stamp.vision_model,
                pricing_model=self.stamp.pricing_model,
                offline=self.stamp.offline,
            )
        elif outcome.action == Action.RETRY:
            assert outcome.kind is not None
            self.store.retry_later(
                lease, now=now, delay=outcome.delay, kind=outcome.kind, error=outcome.message
            )
        elif outcome.action == Action.FAIL:
            assert outcome.kind is not None
            self.store.fail(
                lease,
                now=now,
                kind=outcome.kind,
                error=outcome.message,
                retryable=outcome.retryable,
            )
        else:
            self.store.release(lease, now=now, reason=outcome.message or self.summary.stop_reason)

    def report(self, item: ItemRecord, lease: Lease, outcome: Outcome) -> None:
        """The outcome in the summary and as an event. A STOP is the engine's to carry out:
        it alone knows how to reach what is still running."""
        handlers = {
            Action.DONE: self._report_done,
            Action.RETRY: self._report_retry,
            Action.FAIL: self._report_failed,
            Action.RELEASE: self._report_released,
            Action.STOP: self._report_released,
        }
        handlers[outcome.action](item, lease, outcome)

    def lease_lost(self, item: ItemRecord, error: LeaseLost) -> None:
        self.on_event(Event(EventKind.ITEM_RELEASED, item.id, item.label, message=str(error)))

    def _report_done(self, item: ItemRecord, lease: Lease, outcome: Outcome) -> None:
        identification, price = outcome.identification, outcome.price
        assert identification is not None and price is not None
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
        fields = {"title": identification.title, "price": price.suggested}
        fields["currency"] = price.currency
        self.on_event(Event(EventKind.ITEM_DONE, item.id, item.label, fields=fields))

    def _report_retry(self, item: ItemRecord, lease: Lease, outcome: Outcome) -> None:
        self.summary.retried += 1
        fields = {"kind": outcome.kind, "delay": outcome.delay, "attempt": lease.attempt}
        self.on_event(
            Event(EventKind.ITEM_RETRY, item.id, item.label, message=outcome.message, fields=fields)
        )

    def _report_failed(self, item: ItemRecord, lease: Lease, outcome: Outcome) -> None:
        self.summary.failed += 1
        first_photo = item.photos[0].path if item.photos else None
        self.summary.failed_items.append(
            {
                "item_id": item.id,
                "label": item.label,
                "photo": first_photo,
                "kind": outcome.kind,
                "error": outcome.message,
            }
        )
        fields = {"kind": outcome.kind, "retryable": outcome.retryable, "photo": first_photo}
        self.on_event(
            Event(
                EventKind.ITEM_FAILED, item.id, item.label, message=outcome.message, fields=fields
            )
        )

    def _report_released(self, item: ItemRecord, lease: Lease, outcome: Outcome) -> None:
        self.summary.released += 1
        self.on_event(
            Event(EventKind.ITEM_RELEASED, item.id, item.label, message="back in the queue")
        )


class StoreCheckpoints:
    """The pipeline's checkpoints in the local store, under the item's lease.

    `call` runs a store method (the local pool passes one that runs it in a worker thread;
    synchronous engines call it directly)."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        stamp: ListingStamp,
        call: Callable[..., Awaitable[Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lease = lease
        self.stamp = stamp
        self.call = call
        self.clock = clock

    async def identification(self) -> Identification | None:
        from dealscout_cli.models import Identification

        saved = await self.call(self.store.saved_stage, self.lease.item_id, Stage.IDENTIFY)
        if saved is None:
            return None
        try:
            return Identification.model_validate(saved["output"])
        except ValueError:
            return None  # saved by an older version under other rules: identify again

    async def save_identification(self, identification: Identification) -> None:
        await self.call(
            self.store.save_stage,
            self.lease,
            Stage.IDENTIFY,
            identification.model_dump_json(),
            model=self.stamp.vision_model,
            prompt_version=self.stamp.prompt_version,
            offline=self.stamp.offline,
            now=self.clock(),
        )

    async def save_facts(self, warnings: list[str], barcodes: list[str]) -> None:
        await self.call(
            self.store.set_item_facts,
            self.lease.item_id,
            quality_warnings=warnings,
            barcodes=barcodes,
        )

    async def save_grounded_price(self, output: str) -> None:
        await self.call(
            self.store.save_grounded_price,
            self.lease.item_id,
            output,
            model=self.stamp.pricing_model,
            prompt_version=self.stamp.prompt_version,
            offline=self.stamp.offline,
            now=self.clock(),
        )
