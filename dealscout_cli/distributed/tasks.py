"""The one Celery task: identify and price one item from prepared image bytes.

A worker needs no database and no photo folder: the coordinator sends the prepared
(EXIF-stripped, downscaled) JPEG bytes, base64 in JSON, gzip-compressed on the wire.
The worker calls Gemini through `GeminiProvider` with the key and base URL from its
own environment (``GEMINI_API_KEY`` / ``GOOGLE_GEMINI_BASE_URL``), spacing its starts
with the fleet-wide Redis limiter, and returns the validated identification and price.

Every call attempt is appended to a Redis list keyed by the task id as it happens, so
calls made by a worker that is later killed are still recorded by the coordinator.
A finished identification is kept in Redis too, so a task retried after a pricing
failure does not pay for identification again. Item-level failures that retrying cannot
fix come back as data (``error``); retryable ones raise, and Celery retries the task
with exponential backoff and jitter (``autoretry_for``).
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

from dealscout_cli.config import api_key_from_env
from dealscout_cli.costs import load_prices
from dealscout_cli.distributed.app import (
    RESULT_EXPIRES,
    RETRY_BACKOFF_MAX,
    TASK_MAX_RETRIES,
    TASK_NAME,
    app,
)
from dealscout_cli.distributed.ratelimit import RedisLimits
from dealscout_cli.errors import BadModelOutput, DealscoutError, ProviderError
from dealscout_cli.images import PreparedImage
from dealscout_cli.models import Identification
from dealscout_cli.pipeline import Pipeline, PipelineConfig
from dealscout_cli.records import CallRecord, ItemRecord

ENV_BASE_URL = "GOOGLE_GEMINI_BASE_URL"
CALLS_PREFIX = "dealscout:calls:"
STAGE_PREFIX = "dealscout:stage:"



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
            from dealscout_cli.providers.gemini import GeminiProvider

            api_key = api_key_from_env(os.environ) or ""
            self.providers[timeout] = GeminiProvider(  # raises UsageError without a key
                api_key, base_url=os.environ.get(ENV_BASE_URL) or None, timeout=timeout, max_connections=8,
            )
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


def scratch_redis() -> redis.Redis:
    return resources().redis


@signals.worker_init.connect
def _preload(**_: Any) -> None:
    """Import the SDK (~1-4 s) once in the parent, so every forked pool process starts warm."""
    import google.genai  # noqa: F401

    import dealscout_cli.providers.gemini  # noqa: F401


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
        {"data": base64.b64encode(i.data).decode("ascii"), "mime_type": i.mime_type,
         "width": i.width, "height": i.height, "sha256": i.source_sha256}
        for i in images
    ]


def decode_images(encoded: list[dict[str, Any]]) -> list[PreparedImage]:
    return [
        PreparedImage(base64.b64decode(i["data"]), i["mime_type"], i["width"], i["height"],
                      "", i.get("sha256", ""))
        for i in encoded
    ]


@app.task(
    bind=True,
    name=TASK_NAME,
    autoretry_for=(ProviderError,),  # only retryable ones get out of `run_item`
    max_retries=TASK_MAX_RETRIES,
    retry_backoff=5,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    retry_jitter=True,
)
def process_item(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Identify (unless already done) and price one item; the result is plain JSON."""
    task_id = self.request.id
    earlier = self.backend.get_task_meta(task_id)
    if earlier.get("status") == "SUCCESS":  # a duplicate delivery of finished work: no new calls
        return earlier["result"]
    if not api_key_from_env(os.environ):
        return _failure(None, "worker_config", "this worker has no GEMINI_API_KEY", retryable=True)
    process = resources()
    provider = process.provider(float(payload["call_timeout"]))
    future = process.portal.start_task_soon(_identify_and_price, payload, task_id, process.redis, provider)
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
            vision_model=payload["vision_model"], pricing_model=payload["pricing_model"],
            max_side=payload["max_side"], max_retries=payload["max_retries"],
            offline=payload.get("offline", False),
        ),
        load_prices(None),  # the coordinator prices calls with its own table
        record_call,
        limits=RedisLimits(client, payload.get("rpm")),
    )
    item = ItemRecord(payload["item_id"], payload["item_key"], payload["label"], "", payload.get("notes"), ())
    attempt = int(payload.get("attempt", 1))
    identification_json = payload.get("identification") or _saved_identification(client, task_id)
    try:
        if identification_json:
            identification = Identification.model_validate_json(identification_json)
        else:
            images = decode_images(payload["images"])
            identification, _text = await pipeline.identify(item, images, attempt=attempt)
            identification_json = identification.model_dump_json()
            client.set(stage_key(task_id), identification_json, ex=RESULT_EXPIRES)
        price, _text = await pipeline.price(item, identification, attempt=attempt)
    except ProviderError as exc:
        if exc.retryable and not isinstance(exc, BadModelOutput):
            raise  # Celery retries the task later (autoretry_for, with backoff and jitter)
        return _failure(identification_json, exc.kind, str(exc), retryable=False)
    except DealscoutError as exc:
        return _failure(identification_json, "worker_error", str(exc), retryable=False)
    return {"identification": identification_json, "price": price.model_dump_json(), "error": None}


def _push_call(client: redis.Redis, task_id: str, line: str) -> None:
    with client.pipeline() as pipe:
        pipe.rpush(calls_key(task_id), line)
        pipe.expire(calls_key(task_id), RESULT_EXPIRES)
        pipe.execute()


def _saved_identification(client: redis.Redis, task_id: str) -> str | None:
    saved = client.get(stage_key(task_id))
    return saved.decode() if saved else None


def _failure(
    identification: str | None, kind: str, message: str, *, retryable: bool
) -> dict[str, Any]:
    return {
        "identification": identification, "price": None,
        "error": {"kind": kind, "message": message[:500], "retryable": retryable},
    }
