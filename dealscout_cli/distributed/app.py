"""The Celery app for distributed mode, and every Celery setting dealscout relies on.

Workers run ``celery -A dealscout_cli.distributed.app worker`` (or ``dealscout
worker``); the coordinator builds its own app with `make_app(broker_url)` so it can
talk to any broker without touching this module's global one. The broker URL comes
from ``DEALSCOUT_BROKER`` (default ``redis://localhost:6379/0``); the result backend is
the same Redis unless ``DEALSCOUT_RESULT_BACKEND`` says otherwise. The comments below
say why each setting has its value; the README's distributed-mode section says how to run it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery

from dealscout_cli.distributed import QUEUE

ENV_BROKER = (
    "DEALSCOUT_BROKER"  # same name as config.ENV_BROKER; kept here so workers need no config
)
ENV_RESULT_BACKEND = "DEALSCOUT_RESULT_BACKEND"
ENV_VISIBILITY_TIMEOUT = "DEALSCOUT_VISIBILITY_TIMEOUT"
ENV_RESTORE_INTERVAL = "DEALSCOUT_RESTORE_INTERVAL"

DEFAULT_BROKER = "redis://localhost:6379/0"
TASK_NAME = "dealscout.process_item"

SOFT_TIME_LIMIT = 240  # seconds: the task is told to stop (SoftTimeLimitExceeded) ...
HARD_TIME_LIMIT = 300  # ... and killed here; the pool replaces the process
# Redis has no acks: a message taken but not acked within this many seconds is handed to
# another worker. It must exceed the hard time limit, or every task that runs long is run
# twice (and paid twice). Twice the hard limit leaves room for a slow ack.
VISIBILITY_TIMEOUT = 2 * HARD_TIME_LIMIT
RESTORE_INTERVAL = 10  # seconds between a worker's sweeps for unacked messages past the timeout
RESULT_EXPIRES = (
    7 * 24 * 3600
)  # finished results stay this long, so a killed coordinator can resume
MAX_TASKS_PER_CHILD = 200  # recycle pool processes: bounds leaks in Pillow / the SDK / httpx
# No task-level retries (no autoretry_for): a failed attempt comes back as data and the
# coordinator applies the item-level policy in `retry`, as every engine does.


def settings_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Celery configuration for `broker_url`, with test overrides read from `env`."""
    env = os.environ if env is None else env
    broker = env.get(ENV_BROKER) or DEFAULT_BROKER
    visibility = float(env.get(ENV_VISIBILITY_TIMEOUT) or VISIBILITY_TIMEOUT)
    restore = int(env.get(ENV_RESTORE_INTERVAL) or RESTORE_INTERVAL)
    return celery_settings(broker, env.get(ENV_RESULT_BACKEND) or broker, visibility, restore)


def celery_settings(
    broker: str,
    backend: str,
    visibility_timeout: float = VISIBILITY_TIMEOUT,
    restore_interval: int = RESTORE_INTERVAL,
) -> dict[str, Any]:
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": restore_interval,
            "unacked_restore_throttle": 1,  # sweep on every interval, not every 10th
        },
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_compression": "gzip",
        "result_compression": "gzip",
        "result_expires": RESULT_EXPIRES,
        "result_extended": True,  # keeps the task name and args' size with the result, for status
        "task_track_started": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_deduplicate_successful_tasks": True,  # a redelivered, already finished task is skipped
        "worker_prefetch_multiplier": 1,
        "task_time_limit": HARD_TIME_LIMIT,
        "task_soft_time_limit": SOFT_TIME_LIMIT,
        "worker_max_tasks_per_child": MAX_TASKS_PER_CHILD,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def make_app(broker: str | None = None, *, env: Mapping[str, str] | None = None) -> Celery:
    """A Celery app configured for dealscout; `broker` overrides ``DEALSCOUT_BROKER``."""
    env = dict(os.environ if env is None else env)
    if broker:
        env[ENV_BROKER] = broker
    celery = Celery("dealscout", set_as_current=False)
    celery.conf.update(settings_from_env(env))
    return celery


app = make_app()
app.set_current()
app.conf.imports = ("dealscout_cli.distributed.tasks",)
