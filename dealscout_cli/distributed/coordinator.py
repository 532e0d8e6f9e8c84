"""`snap --engine celery`: the store stays here, the model calls go to Celery workers.

The coordinator claims jobs from the store with leases like the local pool,
prepares each item's images with `Pipeline.prepare` (so EXIF never leaves this
machine), and sends one task per item with a deterministic task id. It then polls the
result backend, writes each result to the store (calls recorded, `store.complete` under
the lease) and keeps its leases alive while tasks are out.

Resuming: the task id is derived from the item key, the prompt version, the models and
the job's queue generation (``jobs.queued_at``, which changes only when the item is
queued anew by ``--force`` or ``retry``). A rerun after the coordinator was killed
computes the same id, finds the finished result in Redis and records it without a new
model call; a task that is still out (its "sent" marker is in Redis) is waited for,
not sent twice.

Duplicates: a result is applied under the lease's fencing token, and calls are recorded
only when the same call (item, stage, model, attempt, start time) is not there yet, so a
result seen twice (redelivery, two coordinators) is recorded once.

Lost workers (issue #15): every worker beats in Redis and lists the task ids it holds
(`heartbeat`). When one stops beating for `heartbeat.BEAT_EXPIRES` s, its items here are
sent again at once under a new task id (`resent_task_id`: derived from the old one, so a
rerun finds it through the old id's "superseded" marker). The first answer for an item is
applied; any later one (a frozen worker that wakes up) is a straggler: its calls are
recorded, since they were paid for, and its result is dropped. The visibility timeout
(above the hard time limit) stays the fallback when no coordinator is watching.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis
from kombu.exceptions import OperationalError as KombuOperationalError

from dealscout_cli import prompts
from dealscout_cli.config import Settings, redact_url
from dealscout_cli.costs import load_prices, price_rows
from dealscout_cli.distributed import QUEUE
from dealscout_cli.distributed.app import (
    HARD_TIME_LIMIT,
    RESULT_EXPIRES,
    TASK_NAME,
    VISIBILITY_TIMEOUT,
    make_app,
)
from dealscout_cli.distributed.heartbeat import (
    BEAT_EVERY,
    held_by_alive_worker,
    lost_holders,
    mark_resent,
)
from dealscout_cli.distributed.tasks import (
    SUPERSEDED_PREFIX,
    calls_key,
    encode_images,
    stage_key,
)
from dealscout_cli.engines import pipeline_config
from dealscout_cli.errors import BadPhoto, BrokerError, ErrorKind, LeaseLost, RemoteFailure
from dealscout_cli.events import Event, EventKind
from dealscout_cli.jobs import Action, JobLifecycle, RunSummary, StopKind, done
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.pipeline import Pipeline
from dealscout_cli.records import CallRecord, ItemRecord, JobState, Lease, Stage

TASK_NAMESPACE = uuid.UUID("5b0c1f8e-8a53-4c8e-9a4c-6d1e2f0a7d11")
SENT_PREFIX = "dealscout:sent:"
POLL_INTERVAL = 0.2  # seconds between looks at the result backend
IDLE_POLL = 0.5
READY = ("SUCCESS", "FAILURE", "REVOKED")
# Tasks out and none started for this long: ask the fleet whether any worker is there, and
# say so once if none answers (a run with Redis up and no worker otherwise waits silently).
NO_WORKER_AFTER = 10.0
PING_TIMEOUT = 1.0  # seconds to wait for workers to answer the ping
# Kombu's Redis transport takes priority 0 first (its lists "gemini", "gemini\x06\x163", ...
# are read in that order). Items sent again for a lost worker go ahead of the queue: they
# have waited their turn once already.
FIRST_SEND = 6
RESEND = 0


@dataclass(frozen=True)
class FleetOptions:
    broker_url: str
    max_in_flight: int = 32  # tasks out at once; bounds the prepared images held in Redis
    collect_timeout: float = (
        HARD_TIME_LIMIT + VISIBILITY_TIMEOUT + 60
    )  # then the task counts as lost
    poll_interval: float = POLL_INTERVAL
    no_worker_after: float = NO_WORKER_AFTER


@dataclass
class _Out:
    lease: Lease
    item: ItemRecord
    deadline: float
    earlier: list[str] = field(default_factory=list)  # task ids sent before, to lost workers


@dataclass(frozen=True)
class _Straggler:
    """A task whose item was already answered by another copy: only its calls still count."""

    item_id: int
    deadline: float


def task_id_for(item_key: str, queued_at: str, settings: Settings) -> str:
    """The same item, prompts, models and queue generation always give the same task id."""
    name = "|".join(
        [
            item_key,
            prompts.PROMPT_VERSION,
            settings.vision_model,
            settings.pricing_model,
            str(settings.max_side),
            settings.media_resolution,
            settings.identify_thinking,
            settings.price_thinking,
            queued_at,
        ]
    )
    return str(uuid.uuid5(TASK_NAMESPACE, name))


def resent_task_id(task_id: str) -> str:
    """The id of the copy sent when `task_id`'s worker was lost (each resend a new one)."""
    return str(uuid.uuid5(TASK_NAMESPACE, f"{task_id}|resent"))


class Coordinator:
    """One coordinator process: leases from the store, tasks to the fleet, results back."""

    def __init__(
        self,
        lifecycle: JobLifecycle,
        settings: Settings,
        options: FleetOptions,
        *,
        handle_signals: bool = True,
    ) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.settings = settings
        self.claiming = True  # False once --max-cost says no more: what is out still comes back
        self.options = options
        self.owner = lifecycle.owner
        self.clock = lifecycle.clock
        self.handle_signals = handle_signals
        self.summary: RunSummary = lifecycle.summary
        self.prices = load_prices(settings.prices_file)
        self.out: dict[str, _Out] = {}  # by the item's latest task id
        self.stragglers: dict[str, _Straggler] = {}
        self.last_loss_check = 0.0
        self.stopping = False
        self.quiet_since = time.monotonic()  # when a task last moved (started or finished)
        self.said_no_worker = False
        self.celery = make_app(options.broker_url)
        self.redis = redis.Redis.from_url(options.broker_url)
        # Photos are prepared (and barcodes read) here, so EXIF never leaves this machine.
        self.preparer = Pipeline(
            None, pipeline_config(settings), self.prices, _no_calls, policy=lifecycle.policy
        )

    def close(self) -> None:
        self.redis.close()
        backend = self.celery.backend
        self.celery.close()
        client = getattr(backend, "client", None)
        if client is not None:
            client.connection_pool.disconnect()

    # ------------------------------------------------------------ the loop

    def run(self) -> RunSummary:
        restore = self._install_signals() if self.handle_signals else None
        try:
            self._loop()
        except BROKER_ERRORS as exc:  # Redis went away mid-run: stop, give the jobs back
            lost = f"lost the broker ({type(exc).__name__}: {exc}); resume once it is back"
            self.summary.stop_reason, self.summary.stop_kind = lost, StopKind.BROKER
        finally:
            if restore:
                restore()
            self._release_out()
        return self.summary

    def _loop(self) -> None:
        last_beat = time.monotonic()
        while True:
            self._fill()
            if not self.out:
                self.quiet_since = time.monotonic()
                if self.stopping or not self.claiming or not self._others_still_busy():
                    if not self._stragglers_still_running():
                        self._record_stragglers()
                        return
                    self._collect()
                time.sleep(IDLE_POLL)
                continue
            if self.stopping:
                self._record_stragglers()
                return
            self._resend_from_lost_workers()
            self._collect()
            self._watch_for_workers()
            if time.monotonic() - last_beat > self.settings.lease_seconds / 3:
                self._heartbeat()
                last_beat = time.monotonic()
            time.sleep(self.options.poll_interval)

    def _others_still_busy(self) -> bool:
        counts = self.store.counts()
        return counts[JobState.QUEUED] > 0 or counts[JobState.RUNNING] > len(self.out)

    # ------------------------------------------------------------ sending

    def _fill(self) -> None:
        while not self.stopping and len(self.out) < self.options.max_in_flight:
            if not self._budget_allows_next_item():
                return
            lease = self.store.claim_next_job(
                self.owner, now=self.clock(), lease_seconds=self.settings.lease_seconds
            )
            if lease is None:
                return
            try:
                self._dispatch(lease)
            except BaseException:
                if not any(out.lease.job_id == lease.job_id for out in self.out.values()):
                    self.store.release(lease, now=self.clock(), reason="not sent to the fleet")
                raise

    def _dispatch(self, lease: Lease) -> None:
        item = self.store.item(lease.item_id)
        self.lifecycle.item_started(item, lease)
        task_id = self._latest(task_id_for(item.key, self._queued_at(lease.job_id), self.settings))
        out = _Out(lease, item, time.monotonic() + self.options.collect_timeout)
        state = self.celery.AsyncResult(task_id).state
        if state in READY or self.redis.exists(SENT_PREFIX + task_id):
            self.out[task_id] = (
                out  # finished or still out from an earlier run: collect, do not pay again
            )
            return
        try:
            payload = self._payload(lease, item)
        except BadPhoto as exc:
            self.lifecycle.apply(lease, item, self.lifecycle.judge(exc, lease))
            return
        self.celery.send_task(
            TASK_NAME, args=[payload], task_id=task_id, queue=QUEUE, priority=FIRST_SEND
        )
        self.redis.set(SENT_PREFIX + task_id, self.owner, ex=int(self.options.collect_timeout))
        self.out[task_id] = out

    def _payload(self, lease: Lease, item: ItemRecord) -> dict[str, Any]:
        saved = self.store.saved_stage(item.id, Stage.IDENTIFY)
        images: list[dict[str, Any]] = []
        barcodes: list[str] = []
        if saved is None:
            prepared = anyio.run(self.preparer.prepare_item, item)
            self.store.set_item_facts(
                item.id, quality_warnings=prepared.warnings, barcodes=prepared.barcodes
            )
            images, barcodes = encode_images(prepared.images), prepared.barcodes
        s = self.settings
        return {
            "item_id": item.id,
            "item_key": item.key,
            "label": item.label,
            "notes": item.notes,
            "attempt": lease.attempt,
            "images": images,
            "barcodes": barcodes,
            "identification": json.dumps(saved["output"]) if saved else None,
            "vision_model": s.vision_model,
            "pricing_model": s.pricing_model,
            "max_side": s.max_side,
            "max_retries": s.max_retries,
            "call_timeout": s.call_timeout,
            "rpm": s.rpm,
            "tpm": s.tpm,
            "offline": s.offline,
            "grounded_prices": s.grounded_prices,
            "media_resolution": s.media_resolution,
            "identify_thinking": s.identify_thinking,
            "price_thinking": s.price_thinking,
            "prices": price_rows(self.prices, s.vision_model, s.pricing_model),
        }

    def _latest(self, task_id: str) -> str:
        """Follow "superseded" markers: the copy sent last when a worker was lost."""
        for _ in range(100):
            newer = self.redis.get(SUPERSEDED_PREFIX + task_id)
            if newer is None:
                break
            task_id = newer.decode() if isinstance(newer, bytes) else str(newer)
        return task_id

    def _queued_at(self, job_id: int) -> str:
        return self.store.job_queued_at(job_id)

    # ------------------------------------------------------------ collecting

    def _collect(self) -> None:
        # (task id, the item's latest task id); None for a straggler
        pairs: list[tuple[str, str | None]] = [
            (task_id, key) for key, out in self.out.items() for task_id in (key, *out.earlier)
        ]
        pairs += [(task_id, None) for task_id in self.stragglers]
        if not pairs:
            return
        backend = self.celery.backend
        raw = backend.mget([backend.get_key_for_task(task_id) for task_id, _ in pairs])
        now = time.monotonic()
        for (task_id, key), value in zip(pairs, raw, strict=True):
            meta = backend.decode_result(value) if value else {"status": "PENDING"}
            if key is None:
                self._straggler_moved(task_id, meta["status"], now)
                continue
            out = self.out.get(key)
            if out is None:
                continue
            if meta["status"] != "PENDING":  # a worker took it (STARTED is tracked) or it is done
                self.quiet_since = now
            if meta["status"] in READY:
                self.out.pop(key)
                for other in (key, *out.earlier):
                    if other != task_id:
                        self.stragglers[other] = _Straggler(out.item.id, out.deadline)
                self._apply(task_id, out, meta)
            elif task_id == key and now > out.deadline:
                self.out.pop(task_id)
                self._forget(task_id)
                lost = f"no result from the fleet in {self.options.collect_timeout:g} s"
                self._failed(out, RemoteFailure(ErrorKind.LOST, lost, retryable=True))

    def _straggler_moved(self, task_id: str, status: str, now: float) -> None:
        straggler = self.stragglers[task_id]
        if status in READY or now > straggler.deadline:
            self.stragglers.pop(task_id)
            self._record_calls(task_id, straggler.item_id)  # paid for, so recorded
            self._forget(task_id)

    def _stragglers_still_running(self) -> bool:
        """Copies whose item is answered but which a live worker still runs: their calls are
        worth waiting for (up to their deadline) before the run ends."""
        now = time.monotonic()
        return any(
            now < s.deadline and held_by_alive_worker(self.redis, task_id)
            for task_id, s in self.stragglers.items()
        )

    def _record_stragglers(self) -> None:
        """Ending: whatever calls the copies still out made so far go into the record."""
        for task_id, straggler in self.stragglers.items():
            self._record_calls(task_id, straggler.item_id)
        self.stragglers.clear()

    # ------------------------------------------------------------ lost workers

    def _resend_from_lost_workers(self) -> None:
        """Items held by a worker that stopped beating go out again now, not after the
        visibility timeout (issue #15)."""
        if time.monotonic() - self.last_loss_check < BEAT_EVERY:
            return
        self.last_loss_check = time.monotonic()
        for hostname, held in lost_holders(self.redis).items():
            for task_id in sorted(held):
                out = self.out.get(task_id)
                if out is None:  # another coordinator's, or already answered
                    continue
                if self.celery.AsyncResult(task_id).state in READY:
                    continue  # it answered before it went: collected as usual
                self._resend(task_id, out, hostname)

    def _resend(self, task_id: str, out: _Out, hostname: str) -> None:
        new_id = resent_task_id(task_id)
        payload = self._payload(out.lease, out.item)
        saved = self.redis.get(stage_key(task_id))  # identified before it went: not paid again
        if saved:
            payload["identification"] = saved.decode() if isinstance(saved, bytes) else saved
            payload["images"] = []
        self._record_calls(task_id, out.item.id)  # what the lost worker paid for so far
        self.redis.set(SUPERSEDED_PREFIX + task_id, new_id, ex=RESULT_EXPIRES)
        self.celery.send_task(
            TASK_NAME, args=[payload], task_id=new_id, queue=QUEUE, priority=RESEND
        )
        self.redis.set(SENT_PREFIX + new_id, self.owner, ex=int(self.options.collect_timeout))
        mark_resent(self.redis, hostname, task_id, out.item.label)
        self.out.pop(task_id)
        out.earlier.append(task_id)
        out.deadline = time.monotonic() + self.options.collect_timeout
        self.out[new_id] = out
        self.lifecycle.on_event(
            Event(
                EventKind.WARNING,
                out.item.id,
                out.item.label,
                message=f"worker {hostname} stopped answering; sent this item again",
                fields={"worker": hostname, "task_id": new_id},
            )
        )

    def _apply(self, task_id: str, out: _Out, meta: dict[str, Any]) -> None:
        lease, item = out.lease, out.item
        self._record_calls(task_id, item.id)
        try:
            if meta["status"] != "SUCCESS":
                exc = meta.get("result")
                kind = (
                    ErrorKind.TIMEOUT
                    if "TimeLimit" in type(exc).__name__
                    else ErrorKind.FLEET_ERROR
                )
                message = f"{type(exc).__name__}: {exc}"[:500]
                self._forget(task_id)
                self._failed(out, RemoteFailure(kind, message, retryable=True))
                return
            result = meta["result"]
            if result.get("error") is None:
                self._complete(lease, item, result)
                self.redis.delete(stage_key(task_id), SENT_PREFIX + task_id)
                return
            self._forget(task_id)  # a retry of this item must run again, not read this answer
            if result.get("identification"):
                self.store.save_stage(
                    lease,
                    Stage.IDENTIFY,
                    result["identification"],
                    model=self.settings.vision_model,
                    prompt_version=prompts.PROMPT_VERSION,
                    offline=self.settings.offline,
                    now=self.clock(),
                )
            error = result["error"]
            kind, message = ErrorKind(error["kind"]), error["message"]
            if kind in (ErrorKind.KEY_REJECTED, ErrorKind.MODEL_NOT_FOUND):
                message = f"on a worker: {message}"  # the coordinator's own key may be fine
            remote = RemoteFailure(kind, message, retryable=error["retryable"])
            self._failed(out, remote)
        except LeaseLost as exc:  # someone else holds the job now: this result is theirs to record
            self.lifecycle.lease_lost(item, exc)

    def _failed(self, out: _Out, error: RemoteFailure) -> None:
        """A failed attempt, by the one lifecycle: retried, failed, or the run stopped."""
        outcome = self.lifecycle.judge(error, out.lease, stopping=self.stopping)
        self.lifecycle.apply(out.lease, out.item, outcome)
        if outcome.action == Action.STOP:
            self._stop(outcome.message, outcome.stop or StopKind.ACCOUNT)

    def _complete(self, lease: Lease, item: ItemRecord, result: dict[str, Any]) -> None:
        identification = Identification.model_validate_json(result["identification"])
        price = PriceEstimate.model_validate_json(result["price"])
        if result.get("grounded_price"):
            self.store.save_grounded_price(
                item.id,
                result["grounded_price"],
                model=self.settings.pricing_model,
                prompt_version=prompts.PROMPT_VERSION,
                offline=self.settings.offline,
                now=self.clock(),
            )
        self.lifecycle.apply(lease, item, done(identification, price))

    def _record_calls(self, task_id: str, item_id: int) -> None:
        for line in self.redis.lrange(calls_key(task_id), 0, -1):
            fields = json.loads(line)
            fields["item_id"] = item_id  # the worker's id is this database's, but be sure
            fields["offline"] = self.settings.offline  # priced by the worker with our table
            call = CallRecord(**fields)
            if self.store.call_recorded(call):
                continue
            self.lifecycle.record_call(call)
        self.redis.delete(calls_key(task_id))

    def _forget(self, task_id: str) -> None:
        self.celery.AsyncResult(task_id).forget()
        self.redis.delete(SENT_PREFIX + task_id, calls_key(task_id))

    def _watch_for_workers(self) -> None:
        """Tasks out, none moving for `no_worker_after` s, and no worker answers a ping: say
        once, through the events, which command starts one. A worker that answers (busy with
        other work) restarts the wait."""
        if self.said_no_worker:
            return
        if time.monotonic() - self.quiet_since < self.options.no_worker_after:
            return
        if self.celery.control.ping(timeout=PING_TIMEOUT):
            self.quiet_since = time.monotonic()
            return
        self.said_no_worker = True
        broker = redact_url(self.options.broker_url)
        self.lifecycle.on_event(
            Event(
                EventKind.WARNING,
                message=f"no worker is taking tasks from {broker}; "
                f"start one with: dealscout worker --broker {broker}",
                fields={"tasks_waiting": len(self.out)},
            )
        )

    # ------------------------------------------------------------ outcomes, leases, stopping

    def _heartbeat(self) -> None:
        for task_id, out in list(self.out.items()):
            alive = self.store.heartbeat(
                out.lease, now=self.clock(), lease_seconds=self.settings.lease_seconds
            )
            if not alive:
                self.out.pop(task_id, None)  # taken over; the new holder collects the same task id

    def _release_out(self) -> None:
        """Stopping with tasks out: the jobs go back to the queue; their results wait in Redis."""
        for out in self.out.values():
            try:
                self.store.release(out.lease, now=self.clock(), reason=self.summary.stop_reason)
            except LeaseLost:
                continue
            self.summary.released += 1
            self.lifecycle.on_event(
                Event(
                    EventKind.ITEM_RELEASED,
                    out.item.id,
                    out.item.label,
                    message="back in the queue; the fleet's result is kept",
                )
            )
        self.out.clear()

    def _budget_allows_next_item(self) -> bool:
        """--max-cost, as in a local run: no new item once the recorded spend plus the items
        out (at full price) could pass the limit; the items out still finish."""
        if not self.claiming:
            return False
        reason = self.lifecycle.budget_refusal(in_flight=len(self.out))
        if reason is None:
            return True
        self.claiming = False
        self.lifecycle.stop(reason, StopKind.BUDGET, how="graceful")
        return False

    def _stop(self, reason: str, kind: StopKind) -> None:
        if not self.stopping:
            self.stopping = True
            self.lifecycle.stop(reason, kind, how="graceful")

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, _frame: Any) -> None:
            self.summary.signal_number = self.summary.signal_number or signum
            self._stop(f"{signal.Signals(signum).name} received", StopKind.SIGNAL)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore


# What losing Redis raises: redis-py directly (results, our keys), kombu when sending a task.
BROKER_ERRORS = (redis.RedisError, KombuOperationalError)


async def _no_calls(call: CallRecord) -> None:
    raise AssertionError("the coordinator makes no model calls")


def run_fleet(
    lifecycle: JobLifecycle,
    settings: Settings,
    *,
    handle_signals: bool = True,
    max_in_flight: int | None = None,
) -> RunSummary:
    """What `snap --engine celery` runs: the queue through the fleet, under `lifecycle`."""
    assert settings.broker, "config.validate requires a broker for --engine celery"
    options = FleetOptions(
        broker_url=settings.broker, max_in_flight=max_in_flight or settings.concurrency
    )
    coordinator = Coordinator(lifecycle, settings, options, handle_signals=handle_signals)
    try:
        return coordinator.run()
    finally:
        coordinator.close()


def check_broker(url: str) -> None:
    """Fail before any job is claimed when Redis is not there, with the fix in the message."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BrokerError(
            f"cannot reach the broker at {redact_url(url)} ({exc}); start redis-server there, "
            "or fix --broker / DEALSCOUT_BROKER"
        ) from None
    finally:
        client.close()
