"""Which worker holds which task, and which workers are gone (issue #15).

Redis hands an unacknowledged message to another worker only after the visibility
timeout (600 s, above the hard time limit so long tasks are not run twice). A worker
that is SIGKILLed, OOM-killed or loses its machine would hold its items that long. So
each worker says, in Redis, that it is alive and what it holds:

    dealscout:workers                 hash  hostname -> unix time of its last beat
    dealscout:worker:<hostname>       "1" with EX `BEAT_EXPIRES`, refreshed every `BEAT_EVERY` s
    dealscout:worker:<hostname>:tasks set   task ids it has received and not finished
    dealscout:worker:<hostname>:resent hash task id -> item, sent again when it was lost

The beat runs in the worker's main process (a thread), which also receives the messages,
so a frozen (SIGSTOP) or killed worker stops beating within `BEAT_EXPIRES` s. The
coordinator (`lost_holders`) then sends the lost worker's items again at once; the
visibility timeout stays the fallback when the coordinator itself is gone.
"""

from __future__ import annotations

import threading
import time

import redis

BEAT_EVERY = 1.0  # seconds between beats
BEAT_EXPIRES = 5  # seconds without a beat before the worker counts as lost
WORKERS = "dealscout:workers"
HOLDS_EXPIRES = 7 * 24 * 3600  # a lost worker's record stays this long, for status


def beat_key(hostname: str) -> str:
    return f"dealscout:worker:{hostname}"


def holds_key(hostname: str) -> str:
    return f"dealscout:worker:{hostname}:tasks"


def resent_key(hostname: str) -> str:
    return f"dealscout:worker:{hostname}:resent"


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WorkerBeat:
    """The worker side: a daemon thread that beats, and the set of task ids held."""

    def __init__(self, client: redis.Redis, hostname: str, every: float = BEAT_EVERY) -> None:
        self.client, self.hostname, self.every = client, hostname, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dealscout-beat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        with self.client.pipeline() as pipe:
            pipe.set(beat_key(self.hostname), "1", ex=BEAT_EXPIRES)
            pipe.hset(WORKERS, self.hostname, f"{time.time():.3f}")
            pipe.expire(holds_key(self.hostname), HOLDS_EXPIRES)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except redis.RedisError:
                continue  # Redis away: the worker's own connection will say so

    def holds(self, task_id: str) -> None:
        self.client.sadd(holds_key(self.hostname), task_id)

    def stop(self) -> None:
        """The worker is stopping: after a warm stop it holds nothing and is no longer
        listed; after a cold one (second Ctrl-C) what it still holds is sent again at once."""
        self._stop.set()
        self.client.delete(beat_key(self.hostname))
        if not self.client.scard(holds_key(self.hostname)):
            with self.client.pipeline() as pipe:
                pipe.delete(resent_key(self.hostname))
                pipe.hdel(WORKERS, self.hostname)
                pipe.execute()


def released(client: redis.Redis, hostname: str, task_id: str) -> None:
    """The task ended on `hostname` (called where it ran, after its result is stored)."""
    client.srem(holds_key(hostname), task_id)


def lost_holders(client: redis.Redis) -> dict[str, set[str]]:
    """Workers that stopped beating, each with the task ids it still holds."""
    names = [_decode(n) for n in client.hkeys(WORKERS)]
    if not names:
        return {}
    alive = client.mget([beat_key(n) for n in names])
    lost: dict[str, set[str]] = {}
    for name, beat in zip(names, alive, strict=True):
        if beat is None:
            lost[name] = {_decode(t) for t in client.smembers(holds_key(name))}
    return lost


def held_by_alive_worker(client: redis.Redis, task_id: str) -> bool:
    names = [_decode(n) for n in client.hkeys(WORKERS)]
    return any(is_alive(client, n) and client.sismember(holds_key(n), task_id) for n in names)


def is_alive(client: redis.Redis, hostname: str) -> bool:
    return bool(client.exists(beat_key(hostname)))


def mark_resent(client: redis.Redis, hostname: str, task_id: str, item: str) -> None:
    """The coordinator sent `task_id`'s item again. It stays in the worker's holdings until
    the worker ends it: a frozen worker that wakes up still finishes it, and its calls count."""
    with client.pipeline() as pipe:
        pipe.hset(resent_key(hostname), task_id, item)
        pipe.expire(resent_key(hostname), HOLDS_EXPIRES)
        pipe.execute()


def worker_beats(client: redis.Redis, now: float) -> list[dict[str, object]]:
    """For status: every worker that has beaten, its last beat, alive or lost, what it holds."""
    report: list[dict[str, object]] = []
    for name, last in sorted((_decode(n), float(v)) for n, v in client.hgetall(WORKERS).items()):
        report.append(
            {
                "name": name,
                "last_heartbeat_ago": round(max(0.0, now - last), 1),
                "lost": not is_alive(client, name),
                "holds": sorted(_decode(t) for t in client.smembers(holds_key(name))),
                "resent": sorted(_decode(i) for i in client.hvals(resent_key(name))),
            }
        )
    return report
