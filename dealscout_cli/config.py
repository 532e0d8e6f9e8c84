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
from typing import Any, NamedTuple

from dealscout_cli.errors import UsageError
from dealscout_cli.tokens import MEDIA_RESOLUTIONS, THINKING_LEVELS, rule_for

# Models. Gemini 3.6 Flash and 3.5 Flash-Lite were the current Flash and Flash-Lite
# models when this was written (2026-11); older 2.x models are being retired.
DEFAULT_VISION_MODEL = "gemini-3.6-flash"
DEFAULT_PRICING_MODEL = "gemini-3.5-flash-lite"

# Gemini 3 settings, sent explicitly so the bill does not follow a server default.
# Identify reads labels, rating plates and model numbers: HIGH (1,120 tokens a photo, about
# $0.0008 more than MEDIUM on 3.6 Flash) because a misread model number costs a sale.
# Thinking is billed as output: LOW lets the vision model check what it read; pricing from
# a finished identification needs little reasoning, so MINIMAL. See README "Cost".
DEFAULT_MEDIA_RESOLUTION = "high"
DEFAULT_IDENTIFY_THINKING = "low"
DEFAULT_PRICE_THINKING = "minimal"

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

DEFAULT_ITEM_RETRY_DELAY = 5.0  # a failed item's first retry; doubles up to 300 s (see retry.py)

# Where items run. "batch" is Gemini Batch Mode (`snap --batch`), "celery" the fleet.
DEFAULT_ENGINE = "local"
ENGINES = ("local", "batch", "celery")
# What each engine cannot honour, and why: such a setting is refused by name, never dropped.
ENGINE_REFUSES: dict[str, dict[str, str]] = {
    "local": {},
    "batch": {
        "rpm": "Batch Mode is not bound by the per-minute quota; drop --rpm",
        "tpm": "Batch Mode is not bound by the per-minute quota; drop --tpm",
    },
    "celery": {},
}

ENV_DB = "DEALSCOUT_DB"
ENV_API_KEYS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the SDK's own order: GOOGLE_API_KEY wins
ENV_BASE_URL = "GOOGLE_GEMINI_BASE_URL"
ENV_VISION_MODEL = "DEALSCOUT_VISION_MODEL"
ENV_PRICING_MODEL = "DEALSCOUT_PRICING_MODEL"
ENV_CONCURRENCY = "DEALSCOUT_CONCURRENCY"
ENV_PRICES = "DEALSCOUT_PRICES"  # a JSON file that overrides the price table
ENV_DEBUG = "DEALSCOUT_DEBUG"
ENV_BROKER = "DEALSCOUT_BROKER"
# Said by `snap --engine celery` and `dealscout worker` alike: neither guesses a broker.
NEEDS_BROKER = f"needs --broker redis://HOST:6379/0 (or {ENV_BROKER})"

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
    # read UPC/EAN/ISBN locally and hint the model: ~5 ms CPU a 12 MP photo, ~20-25 ms on one
    # with a barcode (benchmarks/barcodes.py)
    barcodes: bool = True
    prices_file: Path | None = None
    engine: str = DEFAULT_ENGINE  # where items run: one of ENGINES
    broker: str | None = field(default=None, repr=False)  # --engine celery; may hold a password
    grounded_prices: bool = False  # pricing searches the web (Google Search), billed per request
    max_cost_micro_usd: int | None = None  # --max-cost, for every run on the database
    item_retry_delay: float = DEFAULT_ITEM_RETRY_DELAY  # seconds; doubled per failed attempt
    media_resolution: str = DEFAULT_MEDIA_RESOLUTION  # photos to the vision model (Gemini 3)
    identify_thinking: str = DEFAULT_IDENTIFY_THINKING  # thinking_level of identify (Gemini 3)
    price_thinking: str = DEFAULT_PRICE_THINKING  # thinking_level of pricing (Gemini 3)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def checked_choices(self) -> Settings:
        """These settings, or a UsageError for a Gemini 3 choice out of range (what
        `estimate`, which needs no key, checks)."""
        validate_choices(self)
        return self

    def validated(self) -> Settings:
        """These settings, or a UsageError naming the first one that cannot work."""
        validate(self)
        return self


NO_API_KEY = (
    "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), "
    "or pass --offline to run against the built-in emulator "
    "(a local emulator at --base-url http://127.0.0.1:PORT needs no key)"
)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_local(base_url: str | None) -> bool:
    """True for a base URL on this machine: `dealscout emulator`, which takes any key."""
    if not base_url:
        return False
    from urllib.parse import urlsplit

    host = urlsplit(base_url).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def key_for(settings: Settings) -> str | None:
    """The key a run sends: the user's, or for a local emulator a stand-in when none is set."""
    if settings.api_key:
        return settings.api_key
    return OFFLINE_API_KEY if settings.offline or is_local(settings.base_url) else None


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
    chosen: dict[str, Any] = {}
    for name in Settings.__dataclass_fields__:
        flag = flags.get(name)
        if flag is not None:
            chosen[name] = Path(str(flag)) if name in ("db_path", "prices_file") else flag
        elif from_env.get(name) is not None:
            chosen[name] = from_env[name]
    for name in ("media_resolution", "identify_thinking", "price_thinking"):
        if isinstance(chosen.get(name), str):  # `--thinking HIGH` means high
            chosen[name] = chosen[name].strip().lower()
    unknown = set(flags) - set(Settings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return Settings(**chosen)


POSITIVE = ("concurrency", "max_side", "call_timeout", "lease_seconds", "soft_time_limit")
AT_LEAST_ONE = ("max_attempts",)
NOT_NEGATIVE = ("max_retries", "grace", "item_retry_delay")


def validate(settings: Settings) -> None:
    """Every rule about a combination of settings, checked once, before any work starts."""
    if settings.engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, not {settings.engine!r}")
    if settings.engine == "celery" and not settings.broker:
        raise UsageError(f"--engine celery {NEEDS_BROKER}")
    for name, why in ENGINE_REFUSES[settings.engine].items():
        if getattr(settings, name) not in (None, False):
            raise UsageError(f"{_engine_name(settings.engine)} cannot honour {_flag(name)}: {why}")
    for name in POSITIVE:
        if not getattr(settings, name) > 0:
            raise UsageError(f"{_flag(name)} must be more than 0, not {getattr(settings, name)}")
    for name in AT_LEAST_ONE:
        if getattr(settings, name) < 1:
            raise UsageError(f"{_flag(name)} must be at least 1, not {getattr(settings, name)}")
    for name in NOT_NEGATIVE:
        if getattr(settings, name) < 0:
            raise UsageError(f"{_flag(name)} cannot be negative ({getattr(settings, name)})")
    for name in ("rpm", "tpm"):
        value = getattr(settings, name)
        if value is not None and not value > 0:
            raise UsageError(f"{_flag(name)} must be more than 0, not {value}")
    validate_choices(settings)
    if settings.max_cost_micro_usd is not None and settings.max_cost_micro_usd < 0:
        raise UsageError("--max-cost must be a positive amount in USD")
    if settings.engine != "celery" and not key_for(settings):
        raise UsageError(NO_API_KEY)
    if settings.prices_file is not None or settings.max_cost_micro_usd is not None:
        # Read now: a bad price must not wait for the first call, and a budget cannot be kept
        # in a currency it cannot count (an unpriced model would look free).
        from dealscout_cli.costs import load_prices, unpriced

        prices = load_prices(settings.prices_file)
        missing = unpriced(prices, settings.vision_model, settings.pricing_model)
        if settings.max_cost_micro_usd is not None and missing and not settings.offline:
            raise UsageError(
                f"--max-cost cannot count the cost of {' or '.join(missing)}: no price known; "
                'pass --prices FILE with {"' + missing[0] + '": {"input": USD_per_1M, '
                '"output": USD_per_1M}}'
            )


class StageOptions(NamedTuple):
    """What a stage's requests say about the model's Gemini 3 settings (None: not sent)."""

    media_resolution: str | None
    thinking_level: str | None


def stage_options(model: str, media_resolution: str | None, thinking_level: str) -> StageOptions:
    """The `media_resolution` and `thinking_level` a request to `model` carries: set
    explicitly for Gemini 3 models, so the bill never follows a server default; None (not
    sent) for other families, whose requests stay as they were (Gemini 2.x takes no
    thinking_level). Pricing sends no image, so it passes no media resolution."""
    if not rule_for(model).takes_settings:
        return StageOptions(None, None)
    return StageOptions(media_resolution, thinking_level)


def validate_choices(settings: Settings) -> None:
    """The Gemini 3 settings are among the values Google takes."""
    if settings.media_resolution not in MEDIA_RESOLUTIONS:
        raise UsageError(
            f"--media-resolution must be one of {', '.join(MEDIA_RESOLUTIONS)}, "
            f"not {settings.media_resolution!r}"
        )
    for name in ("identify_thinking", "price_thinking"):
        if getattr(settings, name) not in THINKING_LEVELS:
            raise UsageError(
                f"--thinking must be one of {', '.join(THINKING_LEVELS)}, "
                f"not {getattr(settings, name)!r}"
            )


def engine_for(engine: str, *, batch: bool) -> str:
    """`--engine` and `--batch` as one engine name (Batch Mode is an engine of its own)."""
    if batch and engine not in ("local", "batch"):
        raise UsageError(
            f"--batch runs the queue through Gemini Batch Mode; drop --engine {engine}"
        )
    return "batch" if batch else engine


def _engine_name(engine: str) -> str:
    return "--batch" if engine == "batch" else f"--engine {engine}"


def _flag(name: str) -> str:
    flags = {"call_timeout": "--timeout", "lease_seconds": "--lease"}
    return flags.get(name, "--" + name.replace("_", "-"))


def redact_url(url: str) -> str:
    """A URL without its password (`redis://:***@host`), for the runs table and status."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
