"""Every default and environment variable dealscout reads, resolved in one place.

Precedence is always: command-line flag > environment variable > default.
Nothing here imports the SDK or touches the network, so `--help` and `status`
stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# Models. Gemini 3.6 Flash and 3.5 Flash-Lite were the current Flash and Flash-Lite
# models when this was written (2026-11); older 2.x models are being retired.
DEFAULT_VISION_MODEL = "gemini-3.6-flash"
DEFAULT_PRICING_MODEL = "gemini-3.5-flash-lite"

DEFAULT_DB = "dealscout.db"
DEFAULT_CONCURRENCY = 32  # an upper bound: each model's limiter keeps only as many calls in flight
# as its rate and latency need (Little's law), so the default follows the quota rather than the
# seed's fixed 4 (which left a 600 RPM quota at a fifth of its speed)
DEFAULT_MAX_RETRIES = 3  # the seed's retry count, per call
DEFAULT_CALL_TIMEOUT = 60.0  # seconds per model call; the SDK's own default is "forever"
DEFAULT_MAX_SIDE = 768  # px; one 768x768 tile = 258 input tokens
DEFAULT_LEASE_SECONDS = 30.0  # a killed run's items are claimable again after this
DEFAULT_SOFT_TIME_LIMIT = 240.0  # seconds per item, as the seed's Celery task
# No hard limit locally: cancellation reaches every wait, so the soft limit cannot hang (the
# Celery workers' hard limit, which kills a process, is distributed.app.HARD_TIME_LIMIT).
DEFAULT_MAX_ATTEMPTS = 3  # per item, across runs, for retryable failures
DEFAULT_GRACE = 30.0  # seconds in-flight items get to finish after the first SIGINT/SIGTERM

ENV_DB = "DEALSCOUT_DB"
ENV_API_KEYS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's own order: GOOGLE_API_KEY wins
ENV_BASE_URL = "GOOGLE_GEMINI_BASE_URL"
ENV_VISION_MODEL = "DEALSCOUT_VISION_MODEL"
ENV_PRICING_MODEL = "DEALSCOUT_PRICING_MODEL"
ENV_CONCURRENCY = "DEALSCOUT_CONCURRENCY"
ENV_PRICES = "DEALSCOUT_PRICES"  # a JSON file that overrides the price table
ENV_DEBUG = "DEALSCOUT_DEBUG"
ENV_BROKER = "DEALSCOUT_BROKER"

OFFLINE_API_KEY = "offline-emulator-key"  # what --offline sends to the in-process emulator


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once. Frozen: pass `replace()`d copies."""

    db_path: Path = Path(DEFAULT_DB)
    api_key: str | None = field(default=None, repr=False)  # never printed, never stored
    base_url: str | None = None
    offline: bool = False
    vision_model: str = DEFAULT_VISION_MODEL
    pricing_model: str = DEFAULT_PRICING_MODEL
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    max_side: int = DEFAULT_MAX_SIDE
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    soft_time_limit: float = DEFAULT_SOFT_TIME_LIMIT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    grace: float = DEFAULT_GRACE
    rpm: float | None = None
    tpm: float | None = None
    barcodes: bool = True  # read UPC/EAN/ISBN locally (~30 ms a 12 MP photo) and hint the model
    prices_file: Path | None = None

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)


NO_API_KEY = (
    "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), "
    "or pass --offline to run against the built-in emulator"
)


def api_key_from_env(env: Mapping[str, str]) -> str | None:
    for name in ENV_API_KEYS:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def resolve(env: Mapping[str, str] | None = None, **flags: object) -> Settings:
    """Build Settings from flags (None means "not given") over environment over defaults."""
    env = os.environ if env is None else env
    from_env: dict[str, object] = {
        "db_path": Path(env[ENV_DB]) if env.get(ENV_DB) else None,
        "api_key": api_key_from_env(env),
        "base_url": env.get(ENV_BASE_URL) or None,
        "vision_model": env.get(ENV_VISION_MODEL) or None,
        "pricing_model": env.get(ENV_PRICING_MODEL) or None,
        "concurrency": int(env[ENV_CONCURRENCY]) if env.get(ENV_CONCURRENCY) else None,
        "prices_file": Path(env[ENV_PRICES]) if env.get(ENV_PRICES) else None,
    }
    chosen: dict[str, object] = {}
    for name in Settings.__dataclass_fields__:
        flag = flags.get(name)
        if flag is not None:
            chosen[name] = Path(flag) if name in ("db_path", "prices_file") else flag
        elif from_env.get(name) is not None:
            chosen[name] = from_env[name]
    unknown = set(flags) - set(Settings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return Settings(**chosen)
