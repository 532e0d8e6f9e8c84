"""What the emulator should do: limits, latency and fault rates, as one frozen value.

Every knob can be set from Python (`EmulatorConfig(...)`) and from the command line
(`python -m dealscout_cli.emulator --help`, or `dealscout emulator`). Limits apply
per model, like Google's quotas; `model_overrides` changes any field for one model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LATENCY_DISTRIBUTIONS = ("fixed", "uniform", "lognormal")
INJECTABLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class EmulatorConfig:
    """Limits (None = unlimited, per model), latency, and the chance of each fault per request."""

    seed: int = 1
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    latency: float = 0.0
    latency_dist: str = "fixed"
    latency_sigma: float = 0.5
    error_rates: Mapping[int, float] = field(default_factory=dict)
    drop_rate: float = 0.0
    trickle_rate: float = 0.0
    trickle_seconds: float = 1.0
    malformed_rate: float = 0.0
    odd_rate: float = 0.0  # schema-valid but hostile answers (answers.ODDITIES), one per answer
    max_tokens_rate: float = 0.0
    safety_rate: float = 0.0
    api_key: str | None = None
    models: tuple[str, ...] | None = None  # when set, other model names get Google's 404
    window_seconds: float = 60.0
    day_seconds: float = 86_400.0
    injected_retry_delay: int = 1
    batch_seconds: float = 2.0  # a batch job reports SUCCEEDED this long after it was created
    # (start, end) in seconds after the emulator started (or was reset): every generateContent
    # in between is refused with a per-minute quota 429, as a shared capacity crunch does to a
    # healthy project. Its RetryInfo says when the storm ends.
    storm: tuple[float, float] | None = None
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Boundary questions (`--confirm-groups`) about a generated shoot are answered from its
    # truth: the sha256 of each photo's thumbnail as sent → the product it shows
    # (`catalogue.shoot_truth`). Photos it does not know are judged by their colours.
    group_truth: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.latency_dist not in LATENCY_DISTRIBUTIONS:
            raise ValueError(
                f"latency_dist must be one of {', '.join(LATENCY_DISTRIBUTIONS)}, "
                f"got {self.latency_dist!r}"
            )
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency}")
        for name in ("rpm", "tpm", "rpd"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value}")
        for name in (
            "drop_rate",
            "trickle_rate",
            "malformed_rate",
            "odd_rate",
            "max_tokens_rate",
            "safety_rate",
        ):
            _check_rate(name, getattr(self, name))
        _check_error_rates(self.error_rates)
        if self.malformed_rate + self.max_tokens_rate + self.safety_rate + self.odd_rate > 1:
            raise ValueError(
                "malformed_rate + max_tokens_rate + safety_rate + odd_rate must be <= 1"
            )
        if self.drop_rate + self.trickle_rate > 1:
            raise ValueError("drop_rate + trickle_rate must be <= 1")
        if self.batch_seconds < 0:
            raise ValueError(f"batch_seconds must be >= 0, got {self.batch_seconds}")
        if self.storm is not None:
            _check_storm(self.storm)
        if self.window_seconds <= 0 or self.day_seconds <= 0:
            raise ValueError("window_seconds and day_seconds must be > 0")
        known = {f.name for f in dataclasses.fields(self)} - {
            "model_overrides",
            "api_key",
            "seed",
            "group_truth",
        }
        for model, overrides in self.model_overrides.items():
            unknown = set(overrides) - known
            if unknown:
                raise ValueError(f"model_overrides[{model!r}]: unknown fields {sorted(unknown)}")

    def for_model(self, model: str) -> EmulatorConfig:
        """This config with `model_overrides[model]` applied (itself when there are none)."""
        overrides = self.model_overrides.get(model)
        if not overrides:
            return self
        return dataclasses.replace(self, model_overrides={}, **overrides)


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {rate}")


def _check_error_rates(rates: Mapping[int, float]) -> None:
    for status, rate in rates.items():
        if status not in INJECTABLE_STATUSES:
            raise ValueError(
                f"cannot inject HTTP {status}; choose from "
                f"{', '.join(str(s) for s in INJECTABLE_STATUSES)}"
            )
        _check_rate(f"error rate for {status}", rate)
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"error rates add up to {sum(rates.values()):.3f}, more than 1")


def _check_storm(storm: tuple[float, float]) -> None:
    start, end = storm
    if not 0 <= start < end:
        raise ValueError(f"storm must be (start, end) seconds with 0 <= start < end, got {storm}")


def parse_storm(text: str) -> tuple[float, float]:
    """Parse "10" (the first 10 s) or "30-40" (from 30 s to 40 s) into (start, end) seconds."""
    start_text, sep, end_text = text.strip().partition("-")
    try:
        storm = (float(start_text), float(end_text)) if sep else (0.0, float(start_text))
    except ValueError:
        raise ValueError(
            f"bad storm {text!r}: expected SECONDS or START-END, e.g. 10 or 30-40"
        ) from None
    _check_storm(storm)
    return storm


def parse_models(text: str) -> tuple[str, ...]:
    """Parse "gemini-a, gemini-b" into ("gemini-a", "gemini-b"); ValueError when it names none."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("--models needs at least one model name, e.g. gemini-3.6-flash")
    return names


def parse_error_rates(text: str) -> dict[int, float]:
    """Parse "429=0.1,503=0.02" into {429: 0.1, 503: 0.02}; raise ValueError on bad input."""
    rates: dict[int, float] = {}
    for chunk in text.split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        status_text, sep, rate_text = chunk.partition("=")
        if not sep:
            raise ValueError(f"bad error rate {chunk!r}: expected STATUS=RATE, e.g. 429=0.1")
        try:
            status = int(status_text.strip())
            rate = float(rate_text.strip())
        except ValueError:
            raise ValueError(
                f"bad error rate {chunk!r}: STATUS must be an integer and RATE a number, "
                "e.g. 503=0.02"
            ) from None
        if status in rates:
            raise ValueError(f"status {status} given twice in {text!r}")
        rates[status] = rate
    _check_error_rates(rates)
    return rates
