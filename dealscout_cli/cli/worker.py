"""`dealscout worker`: a Celery worker with dealscout's app, as a plain Typer command.

Celery loads only when the command runs, so `dealscout --help` never pays for it.
"""

import os
import socket
from enum import StrEnum
from typing import Annotated

import typer

from dealscout_cli.cli.options import EXIT_USAGE, fail, guarded
from dealscout_cli.config import ENV_BROKER, NEEDS_BROKER, api_key_from_env
from dealscout_cli.distributed import INSTALL_HINT, QUEUE

PoolSizeOption = Annotated[
    int,
    typer.Option(
        "--concurrency",
        "-c",
        min=1,
        max=256,
        help="Pool processes: items this worker works on at once.",
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option("--name", "-n", help="Worker name, e.g. gpu1@%h (default: dealscout@HOST)."),
]
QueuesOption = Annotated[
    str, typer.Option("--queues", "-Q", help="Comma-separated queues to consume.")
]
BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        "-b",
        envvar=ENV_BROKER,
        help="Redis URL of the broker (and result backend), the one snap --engine celery uses.",
    ),
]


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Pool(StrEnum):
    PREFORK = "prefork"
    THREADS = "threads"
    SOLO = "solo"


LogLevelOption = Annotated[
    LogLevel, typer.Option("--loglevel", "-l", case_sensitive=False, help="Celery log level.")
]
PoolOption = Annotated[
    Pool,
    typer.Option(
        case_sensitive=False, help="Celery pool: prefork enforces time limits; threads, solo."
    ),
]


def worker(
    concurrency: PoolSizeOption = 4,
    name: NameOption = None,
    queues: QueuesOption = QUEUE,
    broker: BrokerOption = None,
    loglevel: LogLevelOption = LogLevel.INFO,
    pool: PoolOption = Pool.PREFORK,
) -> None:
    """Run a Celery worker that takes items from the broker and calls Gemini.

    Environment: GEMINI_API_KEY (or GOOGLE_API_KEY), the key its model calls use (the
    coordinator's key is not sent); GOOGLE_GEMINI_BASE_URL for a proxy or the emulator;
    DEALSCOUT_BROKER instead of --broker. It needs no database and no photos. It checks
    the broker once at start and stops if nothing answers there. Stop it with Ctrl-C: it
    finishes the tasks it holds (a second Ctrl-C abandons them: a running coordinator
    sends them again within seconds, as for a killed worker, since the worker beats in
    Redis every second; otherwise Redis hands them out after the visibility timeout).

    Example: dealscout worker --concurrency 8 -n box2@%h --broker redis://10.0.0.5:6379/0
    """
    if not broker:  # as snap --engine celery: no guessed localhost, retried for minutes
        fail(f"dealscout worker {NEEDS_BROKER}", EXIT_USAGE)
    if not api_key_from_env(os.environ):  # every task would fail: refuse to take any
        fail(
            "no Gemini API key for this worker: set GEMINI_API_KEY (or GOOGLE_API_KEY) "
            "in its environment; the coordinator's key is not sent to workers",
            EXIT_USAGE,
        )
    os.environ[ENV_BROKER] = broker  # read by app.py, here and in the pool processes
    try:
        from dealscout_cli.distributed.app import app, prepare_worker, settings_from_env
        from dealscout_cli.distributed.coordinator import check_broker
    except ImportError as exc:
        fail(f"{INSTALL_HINT} ({exc})", EXIT_USAGE)

    guarded(lambda: check_broker(broker))  # once, seconds: one line naming it, exit 1
    app.conf.update(settings_from_env())
    prepare_worker(app)  # the broker shown as config.redact_url shows it; no pickle warning
    import dealscout_cli.distributed.tasks  # noqa: F401  # register the task before the pool forks

    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={queues}",
        f"--loglevel={loglevel.value}",
        f"--hostname={name or 'dealscout@' + socket.gethostname()}",
        f"--pool={pool.value}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
