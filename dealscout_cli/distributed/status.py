"""What the fleet is doing: workers seen, tasks in flight, messages waiting in the broker.

Each worker also shows its last heartbeat and the task ids it holds (`heartbeat`); one
that stopped beating is shown as lost, with the items the coordinator sent again.

`fleet_status(broker_url)` is what `dealscout status` shows when an engine is
configured; a plain dict, ready for ``--json``. An unreachable broker is reported
(``reachable: False`` with the reason), never raised, so status always answers.
"""

from __future__ import annotations

import time
from typing import Any

from dealscout_cli.distributed import QUEUE
from dealscout_cli.distributed.app import make_app
from dealscout_cli.distributed.heartbeat import worker_beats

INSPECT_TIMEOUT = 1.0  # seconds to wait for workers to answer the broadcast
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport keeps priorities 3/6/9 in "<queue>\x06\x16<n>"


def fleet_status(broker_url: str, *, timeout: float = INSPECT_TIMEOUT) -> dict[str, Any]:
    """Workers that answered a ping, their active/reserved tasks, and the queue depth."""
    import redis

    from dealscout_cli.config import redact_url as _redact

    report: dict[str, Any] = {
        "broker": _redact(broker_url),
        "queue": QUEUE,
        "reachable": False,
        "error": None,
        "workers": [],
        "tasks_in_flight": 0,
        "tasks_reserved": 0,
        "queue_depth": 0,
    }
    client = redis.Redis.from_url(
        broker_url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        keys = [QUEUE] + [f"{QUEUE}{PRIORITY_SEP}{n}" for n in (3, 6, 9)]
        report["queue_depth"] = sum(int(client.llen(key)) for key in keys)
        beats = {str(b["name"]): b for b in worker_beats(client, time.time())}
        report["reachable"] = True
    except redis.RedisError as exc:
        report["error"] = f"cannot reach the broker: {exc}"
        return report
    finally:
        client.close()
    celery = make_app(broker_url)
    try:
        inspect = celery.control.inspect(timeout=timeout)
        active = inspect.active() or {}
        reserved = inspect.reserved() or {}
        names = sorted(set(active) | set(reserved) | set(beats))
        report["workers"] = [
            {
                "name": name,
                "active": len(active.get(name) or []),
                "reserved": len(reserved.get(name) or []),
                **_beat_fields(beats.get(name)),
            }
            for name in names
        ]
        report["tasks_in_flight"] = sum(w["active"] for w in report["workers"])
        report["tasks_reserved"] = sum(w["reserved"] for w in report["workers"])
    finally:
        celery.close()
    return report


def _beat_fields(beat: dict[str, Any] | None) -> dict[str, Any]:
    """A worker that never beat (an older dealscout) has no heartbeat, and is not lost."""
    if beat is None:
        return {"last_heartbeat_ago": None, "lost": False, "holds": [], "resent": []}
    return {k: beat[k] for k in ("last_heartbeat_ago", "lost", "holds", "resent")}
