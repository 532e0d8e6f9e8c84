"""The seed's design, rebuilt as a baseline for `benchmarks/quota.py` scenario 3.

One Celery task per item makes the item's two Gemini calls (vision, then pricing)
with the google-genai client, as the seed did: `rate_limit='50/m'` per worker, run
with `--concurrency=4`, three workers, a Redis broker, and at most 3 retries with
exponential backoff (Celery's `retry_backoff`), each retry redoing the whole item.
It knows nothing of a shared quota: each worker spaces its own task starts.

Configured by environment, since Celery imports it by module name:
    SEED_BROKER    redis://127.0.0.1:PORT/0 (also the result backend)
    SEED_BASE_URL  the emulator's URL
    GEMINI_API_KEY any value the emulator accepts

    celery -A celery_seed worker --concurrency=4 -n w1@%h     (from benchmarks/)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

VISION_MODEL = "gemini-3.6-flash"
PRICING_MODEL = "gemini-3.5-flash-lite"
SEED_RATE_LIMIT = "50/m"  # per worker, per task type: Celery has no cluster-wide limit
SEED_MAX_RETRIES = 3

broker = os.environ.get("SEED_BROKER", "redis://127.0.0.1:6379/0")
app = Celery("celery_seed", broker=broker, backend=broker)
app.conf.update(
    task_acks_late=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)

_client: Any = None


def client() -> Any:
    """One google-genai client per worker process (prefork children each make their own)."""
    global _client
    if _client is None:
        from google import genai
        from google.genai import types

        _client = genai.Client(
            api_key=os.environ.get("GEMINI_API_KEY", "bench-key"),
            http_options=types.HttpOptions(base_url=os.environ["SEED_BASE_URL"], timeout=60_000),
        )
    return _client


def _api_error() -> type[Exception]:
    from google.genai import errors

    return errors.APIError


class _RetryOnApiError(Exception):
    """Raised for any google-genai APIError, so `autoretry_for` can name one class up front."""


@app.task(
    bind=True,
    rate_limit=SEED_RATE_LIMIT,
    autoretry_for=(_RetryOnApiError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=SEED_MAX_RETRIES,
)
def process_item(self: Any, photo: str) -> dict[str, Any]:
    from google.genai import types

    try:
        data = Path(photo).read_bytes()
        vision = client().models.generate_content(
            model=VISION_MODEL,
            contents=[
                types.Part.from_bytes(data=data, mime_type="image/jpeg"),
                "Identify this product for a marketplace listing. Answer JSON.",
            ],
            config=types.GenerateContentConfig(response_mime_type="application/json"),
        )
        price = client().models.generate_content(
            model=PRICING_MODEL,
            contents=[f"Suggest a used price in USD for: {vision.text[:500]}"],
            config=types.GenerateContentConfig(response_mime_type="application/json"),
        )
    except _api_error() as exc:
        raise _RetryOnApiError(f"{type(exc).__name__} {getattr(exc, 'code', '')}: {exc}") from None
    return {"photo": photo, "retries": self.request.retries, "price": price.text[:200]}
