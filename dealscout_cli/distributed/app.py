"""The Celery app for distributed mode, and every Celery setting dealscout relies on.

Workers run ``celery -A dealscout_cli.distributed.app worker`` (or ``dealscout
worker``); the coordinator builds its own app with `make_app(broker_url)` so it can
talk to any broker without touching this module's global one. The broker URL comes
from ``DEALSCOUT_BROKER`` (``dealscout worker`` refuses to start without it; only a bare
``celery -A`` falls back to ``redis://localhost:6379/0``); the result backend is the same
Redis unless ``DEALSCOUT_RESULT_BACKEND`` says otherwise. `prepare_worker` turns this app
into the worker program ``dealscout worker`` runs: the broker shown as `config.redact_url`
shows it, no root warning that is about pickle (see `quiet_root_warning`). The comments
below say why each setting has its value; the README's distributed-mode section says how
to run it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.apps.worker import Worker
from celery.exceptions import SecurityWarning

from dealscout_cli.config import redact_url
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


class RedactedBannerWorker(Worker):  # type: ignore[misc]  # Celery ships no types
    """Celery's worker program; its start-up banner shows the broker and the result backend
    as `redact_url` does. Celery's own `as_uri` masks a password that is not there
    (``redis://:**@host``), which reads as if a password were set."""

    def startup_info(self, artlines: bool = True) -> str:
        banner: str = super().startup_info(artlines)
        shown = {
            self.app.connection().as_uri(): self.app.conf.broker_url,
            self.app.backend.as_uri(): self.app.conf.result_backend,
        }
        for masked, url in shown.items():
            if masked and isinstance(url, str):
                banner = banner.replace(masked, redact_url(url))
        return banner


class _RedactedBrokerInLogs(logging.Filter):
    """Celery's consumer logs "Connected to %s" (and connection errors) with the same masked
    `as_uri`; this swaps it for `redact_url`'s form, as in the banner."""

    def __init__(self, masked: str, redacted: str) -> None:
        super().__init__()
        self.masked, self.redacted = masked, redacted

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self.masked in record.args:
            record.args = tuple(self.redacted if a == self.masked else a for a in record.args)
        return True


# The Celery loggers that name the broker connection (celery.worker.consumer.*).
BROKER_LOGGERS = ("celery.worker.consumer.connection", "celery.worker.consumer.consumer")


def prepare_worker(celery: Celery) -> None:
    """Make `celery.worker_main` run dealscout's worker program: the broker shown as
    `redact_url` shows it (banner and logs), and no root warning about pickle."""
    celery.Worker = celery.subclass_with_self(RedactedBannerWorker)
    redacted = _RedactedBrokerInLogs(
        celery.connection().as_uri(), redact_url(str(celery.conf.broker_url))
    )
    for name in BROKER_LOGGERS:
        logging.getLogger(name).addFilter(redacted)
    quiet_root_warning(celery)


def quiet_root_warning(celery: Celery) -> None:
    """Silence Celery's "running the worker with superuser privileges" SecurityWarning, and
    only that, when the app accepts JSON alone.

    Celery (`celery.platforms.check_privileges`) warns for any worker run as root or in the
    sudo/wheel group (the usual container), because a worker that accepts pickle runs code
    from whoever can write to the broker. With pickle accepted it refuses to start unless
    C_FORCE_ROOT is set, which is not a fix. Our app accepts only JSON (`celery_settings`),
    so a message cannot carry code; the warning has nothing to warn about. Were pickle ever
    added, this leaves the warning (and Celery's refusal) in place.
    """
    accepted = set(celery.conf.accept_content) | set(celery.conf.result_accept_content or [])
    if accepted != {"json"}:
        return
    for text in (
        "You're running the worker with superuser privileges",
        "An entry for the specified gid or egid was not found",
    ):
        warnings.filterwarnings("ignore", message=text, category=SecurityWarning)
