"""Google-style quotas: requests and input tokens per minute, requests per day, per model.

Each limit is a true sliding window over the injected clock: a request is refused
while the last `window_seconds` already hold the limit, and the RetryInfo delay is
the time until the oldest counted request leaves the window, rounded up to seconds.
Refused requests are not counted, as Google does not charge quota for them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .config import EmulatorConfig

QUOTA_IDS = {
    "rpm": "GenerateRequestsPerMinutePerProjectPerModel",
    "tpm": "GenerateContentInputTokensPerModelPerMinute",
    "rpd": "GenerateRequestsPerDayPerProjectPerModel",
}
QUOTA_METRICS = {
    "rpm": "generativelanguage.googleapis.com/generate_content_requests",
    "tpm": "generativelanguage.googleapis.com/generate_content_input_token_count",
    "rpd": "generativelanguage.googleapis.com/generate_content_requests",
}


class SlidingWindow:
    """Weighted events in the last `seconds`; `room_after` says when `weight` more fits."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def total(self, now: float) -> int:
        self._expire(now)
        return self._total

    def add(self, now: float, weight: int = 1) -> int:
        self._expire(now)
        self._events.append((now, weight))
        self._total += weight
        return self._total

    def room_after(self, now: float, limit: int, weight: int = 1) -> float:
        """Seconds until `weight` more fits under `limit` (0 when it fits now)."""
        self._expire(now)
        excess = self._total + weight - limit
        if excess <= 0:
            return 0.0
        if weight > limit:
            return self.seconds  # never fits; tell the client to wait a whole window
        freed = 0
        for when, size in self._events:
            freed += size
            if freed >= excess:
                return when + self.seconds - now
        return self.seconds

    def _expire(self, now: float) -> None:
        horizon = now - self.seconds
        events = self._events
        while events and events[0][0] <= horizon:
            self._total -= events.popleft()[1]


@dataclass(frozen=True)
class Denial:
    """Why a request was refused: which quota, its limit, and how long to wait."""

    kind: str
    limit: int
    retry_after: int

    @property
    def quota_id(self) -> str:
        return QUOTA_IDS[self.kind]

    @property
    def quota_metric(self) -> str:
        return QUOTA_METRICS[self.kind]


class ModelQuota:
    """The three windows of one model."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.requests = SlidingWindow(config.window_seconds)
        self.tokens = SlidingWindow(config.window_seconds)
        self.daily = SlidingWindow(config.day_seconds)

    def check(self, config: EmulatorConfig, now: float, tokens: int) -> Denial | None:
        """The first limit this request would break, or None; admits (counts) it when none."""
        checks = (
            ("rpd", config.rpd, self.daily, 1),
            ("rpm", config.rpm, self.requests, 1),
            ("tpm", config.tpm, self.tokens, tokens),
        )
        for kind, limit, window, weight in checks:
            if limit is None:
                continue
            wait = window.room_after(now, limit, weight)
            if wait > 0:
                return Denial(kind, limit, max(1, math.ceil(wait)))
        if config.rpd is not None:
            self.daily.add(now)
        if config.rpm is not None:
            self.requests.add(now)
        if config.tpm is not None:
            self.tokens.add(now, tokens)
        return None
