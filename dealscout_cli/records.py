"""The plain values of the job record: states, stages, leases, items, calls.

They cross every layer (store, pipeline, engines, Celery workers), so they live apart from
the store: a worker that has no database imports these and never `store`. Plain dataclasses
and enums, no pydantic, so `dealscout status` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class Stage(StrEnum):
    IDENTIFY = "identify"
    PRICE = "price"
    GROUP = "group"  # --confirm-groups: boundary questions about a shoot, no one item's stage


def iso_now(now: float | None = None) -> str:
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sku_for(item_key: str) -> str:
    return "DS-" + item_key[:10].upper()


# Job state of an item whose request sits in a Gemini batch job (`snap --batch`). Outside the
# JobState enum on purpose: claim_next_job never takes it and the online runner's "others still
# busy" check ignores it, so a normal run neither steals nor waits on batched items.
BATCHED = "batched"


@dataclass(frozen=True)
class Lease:
    """A claimed job. Only the holder of the current token can finish it."""

    job_id: int
    item_id: int
    item_key: str
    token: int
    owner: str
    attempt: int
    expires_at: float


@dataclass(frozen=True)
class PhotoRecord:
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ItemRecord:
    id: int
    key: str
    label: str
    source: str
    notes: str | None
    photos: tuple[PhotoRecord, ...]


@dataclass(frozen=True)
class CallRecord:
    item_id: int | None
    stage: str
    model: str
    attempt: int
    started_epoch: float
    latency_ms: int
    outcome: str
    http_status: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_micro_usd: int | None = None
    error: str | None = None
    offline: bool = False


@dataclass(frozen=True)
class EnqueueReport:
    new: int
    already_done: int
    already_queued: int
    failed_before: int
    requeued: int
    redo_offline: int = 0  # offline placeholders queued again for a real run
