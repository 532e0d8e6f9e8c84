"""The one Celery task: identify and price one item from prepared image bytes.

A worker needs no database and no photo folder: the coordinator sends the prepared
(EXIF-stripped, downscaled) JPEG bytes, base64 in JSON, gzip-compressed on the wire.
The worker calls Gemini through `GeminiProvider` with the key and base URL from its
own environment (``GEMINI_API_KEY`` / ``GOOGLE_GEMINI_BASE_URL``), spacing its starts
with the fleet-wide Redis limiter, and returns the validated identification and price.

Every call attempt is appended to a Redis list keyed by the task id as it happens, so
calls made by a worker that is later killed are still recorded by the coordinator.
A finished identification is kept in Redis too (the pipeline's checkpoints, `RedisCheckpoints`),
so a task delivered again after a pricing failure does not pay for identification again.
Every failure comes back as data (``error``: its kind, message and whether retrying can help):
the task never retries itself. The coordinator applies the one item-level retry policy
(`jobs.outcome_of`), so a call gets the same worst case here as in a local run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from typing import Any

import anyio
import redis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from celery import signals

from dealscout_cli.config import (
    DEFAULT_IDENTIFY_THINKING,
    DEFAULT_MEDIA_RESOLUTION,
    DEFAULT_PRICE_THINKING,
    api_key_from_env,
    resolve,
)
from dealscout_cli.costs import prices_from
from dealscout_cli.distributed.app import RESULT_EXPIRES, TASK_NAME, app
from dealscout_cli.distributed.heartbeat import WorkerBeat, released
from dealscout_cli.distributed.ratelimit import RedisLimits
from dealscout_cli.errors import DealscoutError, ErrorKind, ProviderError
from dealscout_cli.images import PreparedImage
from dealscout_cli.models import Identification
from dealscout_cli.pipeline import Pipeline, PipelineConfig, PreparedItem
from dealscout_cli.records import CallRecord, ItemRecord
from dealscout_cli.retry import policy_for

CALLS_PREFIX = "dealscout:calls:"
STAGE_PREFIX = "dealscout:stage:"
# Set by the coordinator when it sends a lost worker's item again under a new id: the old
# message, handed out again after the visibility timeout, then makes no calls.
SUPERSEDED_PREFIX = "dealscout:superseded:"


class _ProcessResources:
    """What one pool process keeps between tasks: a Redis client, an event loop, providers.

    Building a google-genai client costs ~0.4 s (SSL context, pydantic models), more than
    a whole task against a fast server, so each process builds its provider once and runs
    every task on one event loop (an anyio portal thread). Made lazily after the fork:
    sockets and loops must not be shared between processes.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.redis = redis.Redis.from_url(app.conf.broker_url)
        self._portal_cm = start_blocking_portal()
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.providers: dict[float, Any] = {}

    def provider(self, timeout: float) -> Any:
        if timeout not in self.providers:
            from dealscout_cli.providers import open_provider

            settings = resolve(call_timeout=timeout)  # the key and base URL of this worker's env
            self.providers[timeout] = open_provider(settings, max_connections=8)
        return self.providers[timeout]

    def close(self) -> None:
        for provider in self.providers.values():
            self.portal.call(provider.aclose)
        self._portal_cm.__exit__(None, None, None)
        self.redis.close()


_resources: _ProcessResources | None = None


def resources() -> _ProcessResources:
    global _resources
    if _resources is None or _resources.pid != os.getpid():
        _resources = _ProcessResources()
    return _resources


@signals.worker_init.connect
def _preload(**_: Any) -> None:
    """Import the SDK (~1-4 s) once in the parent, so every forked pool process starts warm."""
    import google.genai  # noqa: F401

    import dealscout_cli.providers.gemini  # noqa: F401


_beat: WorkerBeat | None = None


@signals.worker_ready.connect
def _start_beat(sender: Any = None, **_: Any) -> None:
    """In the worker's main process (the one that takes messages): beat, so the coordinator
    sends this worker's items again within seconds if it is killed or frozen (issue #15)."""
    global _beat
    _beat = WorkerBeat(redis.Redis.from_url(app.conf.broker_url), sender.hostname)
    _beat.start()


@signals.task_received.connect
def _held(request: Any = None, **_: Any) -> None:
    if _beat is not None and request is not None:
        _beat.holds(request.id)


@signals.task_postrun.connect
def _finished(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """After the result is stored (so the coordinator never sees a gap), in the pool process."""
    hostname = getattr(getattr(task, "request", None), "hostname", None)
    if task_id and hostname:
        released(resources().redis, hostname, task_id)


@signals.worker_shutdown.connect
def _stop_beat(**_: Any) -> None:
    if _beat is not None:
        _beat.stop()


@signals.worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    if _resources is not None and _resources.pid == os.getpid():
        _resources.close()


def calls_key(task_id: str) -> str:
    return CALLS_PREFIX + task_id


def stage_key(task_id: str) -> str:
    return STAGE_PREFIX + task_id


def encode_images(images: list[PreparedImage]) -> list[dict[str, Any]]:
    return [
        {
            "data": base64.b64encode(i.data).decode("ascii"),
            "mime_type": i.mime_type,
            "width": i.width,
            "height": i.height,
            "sha256": i.source_sha256,
        }
        for i in images
    ]


def decode_images(encoded: list[dict[str, Any]]) -> list[PreparedImage]:
    return [
        PreparedImage(
            base64.b64decode(i["data"]),
            i["mime_type"],
            i["width"],
            i["height"],
            "",
            i.get("sha256", ""),
        )
        for i in encoded
    ]


class RedisCheckpoints:
    """The pipeline's checkpoints on a worker: the identification in Redis (by task id),
    photo facts already kept by the coordinator, grounded sources returned with the result."""

    def __init__(self, client: redis.Redis, task_id: str, identification: str | None) -> None:
        self.client = client
        self.task_id = task_id
        self.identification_json = identification or _saved_identification(client, task_id)
        self.grounded_price: str | None = None

    async def identification(self) -> Identification | None:
        if not self.identification_json:
            return None
        return Identification.model_validate_json(self.identification_json)

    async def save_identification(self, identification: Identification) -> None:
        self.identification_json = identification.model_dump_json()
        await anyio.to_thread.run_sync(
            lambda: self.client.set(
                stage_key(self.task_id), self.identification_json or "", ex=RESULT_EXPIRES
            )
        )

    async def save_facts(self, warnings: list[str], barcodes: list[str]) -> None:
        return None  # read by the coordinator, which has the photos

    async def save_grounded_price(self, output: str) -> None:
        self.grounded_price = output


@app.task(bind=True, name=TASK_NAME)
def process_item(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Identify (unless already done) and price one item; the result is plain JSON."""
    task_id = self.request.id
    earlier = self.backend.get_task_meta(task_id)
    if earlier.get("status") == "SUCCESS":  # a duplicate delivery of finished work: no new calls
        return dict(earlier["result"])
    if resources().redis.exists(SUPERSEDED_PREFIX + task_id):  # sent again, long ago
        message = "sent again under another task id when its worker was lost"
        return _failure(None, ErrorKind.LOST, message, retryable=True)
    if not api_key_from_env(os.environ):
        message = "this worker has no GEMINI_API_KEY"
        return _failure(None, ErrorKind.WORKER_CONFIG, message, retryable=True)
    process = resources()
    provider = process.provider(float(payload["call_timeout"]))
    future = process.portal.start_task_soon(
        _identify_and_price, payload, task_id, process.redis, provider
    )
    try:
        return future.result()
    except BaseException:
        future.cancel()  # soft time limit (raised here by a signal): stop the calls too
        raise


async def _identify_and_price(
    payload: dict[str, Any], task_id: str, client: redis.Redis, provider: Any
) -> dict[str, Any]:
    async def record_call(call: CallRecord) -> None:
        line = json.dumps(dataclasses.asdict(call))
        await anyio.to_thread.run_sync(_push_call, client, task_id, line)

    pipeline = Pipeline(
        provider,
        PipelineConfig(
            vision_model=payload["vision_model"],
            pricing_model=payload["pricing_model"],
            max_side=payload["max_side"],
            offline=payload.get("offline", False),
            read_barcodes=False,  # read by the coordinator, sent in the payload
            grounded_prices=payload.get("grounded_prices", False),
            media_resolution=payload.get("media_resolution", DEFAULT_MEDIA_RESOLUTION),
            identify_thinking=payload.get("identify_thinking", DEFAULT_IDENTIFY_THINKING),
            price_thinking=payload.get("price_thinking", DEFAULT_PRICE_THINKING),
        ),
        prices_from(payload.get("prices") or {}),  # the coordinator's table (its --prices)
        record_call,
        policy=policy_for(max_retries=payload["max_retries"], max_attempts=1),
        limits=RedisLimits(client, payload.get("rpm"), tpm=payload.get("tpm")),
    )
    item = ItemRecord(
        payload["item_id"], payload["item_key"], payload["label"], "", payload.get("notes"), ()
    )
    checkpoints = RedisCheckpoints(client, task_id, payload.get("identification"))
    prepared = PreparedItem(decode_images(payload["images"]), [], payload.get("barcodes", []))
    try:
        identification, price = await pipeline.process(
            item, checkpoints, attempt=int(payload.get("attempt", 1)), prepared=prepared
        )
    except ProviderError as exc:
        return _failure(
            checkpoints.identification_json, exc.kind, str(exc), retryable=exc.retryable
        )
    except DealscoutError as exc:
        message = str(exc)
        return _failure(
            checkpoints.identification_json, ErrorKind.WORKER_ERROR, message, retryable=False
        )
    return {
        "identification": identification.model_dump_json(),
        "price": price.model_dump_json(),
        "grounded_price": checkpoints.grounded_price,
        "error": None,
    }


def _push_call(client: redis.Redis, task_id: str, line: str) -> None:
    with client.pipeline() as pipe:
        pipe.rpush(calls_key(task_id), line)
        pipe.expire(calls_key(task_id), RESULT_EXPIRES)
        pipe.execute()


def _saved_identification(client: redis.Redis, task_id: str) -> str | None:
    saved = client.get(stage_key(task_id))
    if isinstance(saved, bytes):
        return saved.decode()
    return saved or None


def _failure(
    identification: str | None, kind: ErrorKind, message: str, *, retryable: bool
) -> dict[str, Any]:
    return {
        "identification": identification,
        "price": None,
        "error": {"kind": kind.value, "message": message[:500], "retryable": retryable},
    }
