"""What a run tells its watcher while it works: one `Event` per step, never printed here.

Engines and the job lifecycle (`jobs`) emit them through an `on_event` callback; the CLI
renders them (progress bar, JSON log lines), tests collect them. Plain values only, so
`status`, cron and `--json` see clean output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    ITEM_STARTED = "item_started"
    ITEM_DONE = "item_done"
    ITEM_RETRY = "item_retry"
    ITEM_FAILED = "item_failed"
    ITEM_RELEASED = "item_released"
    CALL = "call"
    STOPPING = "stopping"
    WARNING = "warning"  # the run goes on, but something needs the user (no worker is taking tasks)
    # The scan, still going while the run works, queued more: fields remaining (queued or
    # running now), photos_read, scanning (False on the last one)
    QUEUED = "queued"
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    item_id: int | None = None
    label: str | None = None
    message: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


OnEvent = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The default watcher: nobody is listening."""
