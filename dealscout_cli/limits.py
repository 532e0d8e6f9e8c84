"""Rate limits per model, concurrency that follows the work, and the retry policy.

Gemini's quotas are per project and per model: requests per minute (RPM), input tokens
per minute (TPM) and requests per day. `Limits` holds one `ModelLimiter` per model, so
the vision model's quota never holds up the pricing model's and the other way round.

How a request gets to go (`ModelLimiter.acquire`):

1. **A concurrency slot.** The cap follows Little's law: in flight ~= rate x latency, so
   the cap is ``ceil(rate/s x p50 latency x 1.2) + 1``, bounded by ``max_concurrency``
   (which is also the cap while no rate or latency is known yet).
2. **The gate**, one acquirer at a time in arrival order. The one at the gate works out
   the earliest start the quota allows, sleeps until then, re-checks (a pause or a token
   correction may have arrived meanwhile), and commits its start. Nothing is reserved
   before the commit, so a cancelled acquire gives back its slot and leaves no hole;
   and a pause that arrives while others wait re-spaces them after it, where starts
   reserved ahead of time would all fall due at once when the pause ends.
   - Requests: GCRA (a leaky bucket in "theoretical arrival time" form). Each start
     pushes ``tat`` by ``60/rpm``; the next may start at ``tat - tolerance``. With the
     default ``burst=1`` the tolerance is 0: starts are exactly ``60/rpm`` apart, no
     burst at second 0, and no 60-second window ever holds more than ``rpm`` starts,
     while the sustained rate is exactly ``rpm``. ``burst=b`` lets ``b`` go back to back
     after an idle spell, at the price of up to ``b - 1`` extra starts in a window.
   - Tokens: the same arithmetic with a cost, "pay after": a request may start once the
     tokens sent before it have drained at ``tpm/60`` per second, then adds its own
     estimate. A request larger than the whole minute still goes (alone), so nothing
     deadlocks; a 60-second window holds at most ``tpm`` plus the last request. When the
     answer's ``usageMetadata`` gives the real count, `record` charges or refunds the
     difference.
   - A shared pause: when the server answers 429 with ``RetryInfo.retryDelay``, every
     acquirer of that model waits it out, not just the request that got it.

Adaptive mode (no ``rpm`` given) is AIMD on the *allowed request rate*, not on the
concurrency cap. A rate, unlike a cap, keeps starts evenly spaced, so after the first
429 dealscout stops arriving in bursts, and the cap then follows from the rate like in
the configured case. Until the first 429 the rate is unbounded (only the cap applies);
the first 429 that is part of a pattern (``CUT_SHARE`` of recent answers) sets the rate to
what the server accepted over the last minute, and each later one cuts it by
``DECREASE_FACTOR``. Only requests started after the last cut can cause another cut, so
a burst of 429s from one overload cuts once (TCP's "one cut per window"). Each clean
answer adds ``ADDITIVE_INCREASE x ceiling / rate`` requests per minute, where ceiling is
the rate just before the last cut: a straight-line climb of 10% of the ceiling per
minute, past it if the server allows more, until the next 429.

The arithmetic (GCRA, Little's law, AIMD) lives in small pure functions so that the
Redis-wide limiter can run the same steps in a Lua script.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio

Clock = Callable[[], float]
"""Monotonic seconds, injected so tests run on fake time."""

Sleep = Callable[[float], Awaitable[None]]
Outcome = Literal["ok", "rate_limited", "error"]

WINDOW = 60.0  # quotas are per minute
LATENCY_HEADROOM = 1.2
LATENCY_SAMPLES = 50
TOKEN_SAMPLES = 50
DECREASE_FACTOR = 0.9  # later cuts are gentle: the first one already found the quota
ADDITIVE_INCREASE = 0.1  # of the pre-cut rate, per minute of clean answers
MIN_ADAPTIVE_RPM = 1.0
# A 429 only cuts the rate when 429s are a real share of recent answers. Servers also
# send the odd 429 that says nothing about our rate (shared capacity, injected faults);
# halving on each of those walked a chaos run down to 1 RPM.
RECENT_OUTCOMES = 20
CUT_SHARE = 0.1
# A 429 whose RetryInfo says "try again in a second or two" is a blip, not a full window:
# the pause is honoured, the rate is kept. A full per-minute window says tens of seconds.
SHORT_RETRY = 5.0


# -- pure arithmetic (shared with the Redis limiter) -------------------------------------


def emission_interval(per_minute: float) -> float:
    """Seconds of quota one unit uses when `per_minute` units are allowed per minute."""
    return WINDOW / per_minute


def gcra_ready_at(tat: float, tolerance: float = 0.0) -> float:
    """Earliest start GCRA allows, given the theoretical arrival time `tat`."""
    return tat - tolerance


def gcra_charge(tat: float, start: float, cost: float) -> float:
    """The new theoretical arrival time after a start at `start` that uses `cost` seconds."""
    return max(tat, start) + cost


def littles_law_concurrency(
    rate_per_second: float,
    latency: float,
    max_concurrency: int,
    headroom: float = LATENCY_HEADROOM,
) -> int:
    """Slots needed to keep `rate_per_second` going when each call takes `latency` seconds."""
    needed = math.ceil(rate_per_second * latency * headroom) + 1
    return max(1, min(max_concurrency, needed))


def aimd_decrease(rate: float, factor: float = DECREASE_FACTOR) -> float:
    return max(MIN_ADAPTIVE_RPM, rate * factor)


def aimd_increase(rate: float, ceiling: float, step: float = ADDITIVE_INCREASE) -> float:
    """One clean answer's share of a climb of ``step x ceiling`` requests per minute."""
    return rate + step * ceiling / rate


# -- values -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLimit:
    """One model's quota. ``rpm=None`` means adapt to the server's 429s."""

    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int = 32
    burst: int = 1

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, not {value}")
        if self.max_concurrency < 1 or self.burst < 1:
            raise ValueError("max_concurrency and burst must be at least 1")


@dataclass(frozen=True)
class LimiterStats:
    """What `dealscout status` shows for one model."""

    model: str
    rpm_limit: float | None  # configured, or the adaptive allowed rate (None = not yet cut)
    tpm_limit: float | None
    requests_last_minute: int
    rate_limited_total: int
    concurrency_cap: int
    in_flight: int
    paused_until: float  # seconds from now, 0 when not paused
    adaptive: bool = False
    tokens_last_minute: int = 0
    latency_p50: float | None = None


@dataclass(eq=False)
class Permit:
    """Leave to send one request; give it back with `ModelLimiter.record`."""

    limiter: ModelLimiter = field(repr=False)
    estimated_tokens: int
    started_at: float
    actual_tokens: int | None = None
    released: bool = False

    @property
    def model(self) -> str:
        return self.limiter.model


# -- one model --------------------------------------------------------------------------


class ModelLimiter:
    """Requests/minute, tokens/minute, concurrency and shared pauses for one model."""

    def __init__(
        self,
        model: str,
        limit: ModelLimit,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.model = model
        self.limit = limit
        self.clock = clock
        self._sleep = sleep
        self._gate = anyio.Lock()
        self._slot_waiters: deque[anyio.Event] = deque()
        self._in_flight = 0
        self._request_tat = -math.inf
        self._token_tat = -math.inf
        self._paused_until = -math.inf
        self._allowed_rpm = limit.rpm  # adaptive mode: None until the first 429
        self._ceiling_rpm = 0.0
        self._last_cut_at = -math.inf
        self._starts: deque[tuple[float, int]] = deque()  # (start, estimated tokens)
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._token_sizes: deque[int] = deque(maxlen=TOKEN_SAMPLES)
        self._rate_limited_total = 0
        self._recent_429s: deque[bool] = deque(maxlen=RECENT_OUTCOMES)
        self._refused_starts: deque[float] = deque()  # start times of requests answered 429

    @property
    def adaptive(self) -> bool:
        return self.limit.rpm is None

    @property
    def allowed_rpm(self) -> float | None:
        """The request rate in force: configured, adaptive, or None for unbounded."""
        return self._allowed_rpm

    # -- acquiring --------------------------------------------------------------------

    async def acquire(self, estimated_tokens: int) -> Permit:
        """Wait for a slot, the request spacing, token room and any pause; then go."""
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must be >= 0, not {estimated_tokens}")
        await self._take_slot()
        try:
            started_at = await self._pass_gate(estimated_tokens)
        except BaseException:
            self._release_slot()
            raise
        return Permit(self, estimated_tokens, started_at)

    async def _take_slot(self) -> None:
        if not self._slot_waiters and self._in_flight < self.concurrency_cap():
            self._in_flight += 1
            return
        granted = anyio.Event()
        self._slot_waiters.append(granted)
        self._grant_slots()  # in case the cap has grown since the last release
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # the slot was handed over as we were cancelled
                self._release_slot()
            else:
                self._slot_waiters.remove(granted)
            raise

    def _release_slot(self) -> None:
        self._in_flight -= 1
        self._grant_slots()

    def _grant_slots(self) -> None:
        cap = self.concurrency_cap()
        while self._slot_waiters and self._in_flight < cap:
            self._in_flight += 1  # on behalf of the waiter, before it wakes
            self._slot_waiters.popleft().set()

    async def _pass_gate(self, tokens: int) -> float:
        async with self._gate:
            slept_until: float | None = None
            while True:
                now = self.clock()
                ready = self._ready_at(tokens)
                if ready <= now:
                    # Charge from the time we slept for, not the time we woke: late
                    # wake-ups must not add up to a slower rate.
                    scheduled = now if slept_until is None else max(ready, slept_until)
                    self._commit(scheduled, now, tokens)
                    return now
                slept_until = ready
                await self._sleep(ready - now)

    def _ready_at(self, tokens: int) -> float:
        """Earliest start the quotas and pauses allow (may be in the past)."""
        ready = self._paused_until
        if self._allowed_rpm is not None:
            interval = emission_interval(self._allowed_rpm)
            tolerance = (self.limit.burst - 1) * interval
            ready = max(ready, gcra_ready_at(self._request_tat, tolerance))
        if self.limit.tpm is not None and tokens > 0:
            ready = max(ready, gcra_ready_at(self._token_tat))
        return ready

    def _commit(self, scheduled: float, now: float, tokens: int) -> None:
        if self._allowed_rpm is not None:
            interval = emission_interval(self._allowed_rpm)
            self._request_tat = gcra_charge(self._request_tat, scheduled, interval)
        if self.limit.tpm is not None:
            cost = tokens * emission_interval(self.limit.tpm)
            self._token_tat = gcra_charge(self._token_tat, scheduled, cost)
        self._starts.append((now, tokens))

    # -- giving back ------------------------------------------------------------------

    def record(
        self,
        permit: Permit,
        *,
        actual_tokens: int | None,
        outcome: Outcome,
        latency: float,
        retry_after: float | None = None,
    ) -> None:
        """Release the slot, correct the token charge, learn from the outcome."""
        if permit.released:
            raise RuntimeError(f"permit for {self.model} was already recorded")
        if permit.limiter is not self:
            raise ValueError(f"permit belongs to {permit.model}, not {self.model}")
        permit.released = True
        permit.actual_tokens = actual_tokens
        if actual_tokens is not None:
            self._correct_tokens(permit.estimated_tokens, actual_tokens)
        if outcome in ("ok", "rate_limited"):
            self._recent_429s.append(outcome == "rate_limited")
        if outcome == "ok":
            self._latencies.append(latency)
            if self._allowed_rpm is not None and self._after_last_cut(permit):
                self._allowed_rpm = aimd_increase(self._allowed_rpm, self._ceiling_rpm)
        elif outcome == "rate_limited":
            self._rate_limited_total += 1
            self._refused_starts.append(permit.started_at)
            window_full = retry_after is None or retry_after >= SHORT_RETRY
            if window_full and self._after_last_cut(permit) and self._429s_are_a_pattern():
                self._cut_rate()
        if retry_after is not None and retry_after > 0:
            self.pause(retry_after)
        self._release_slot()

    def _after_last_cut(self, permit: Permit) -> bool:
        """Adaptive mode only learns from requests sent at the rate now in force."""
        return self.adaptive and permit.started_at >= self._last_cut_at

    def _429s_are_a_pattern(self) -> bool:
        recent = self._recent_429s
        return sum(recent) >= max(2, CUT_SHARE * len(recent))

    def _correct_tokens(self, estimated: int, actual: int) -> None:
        self._token_sizes.append(actual)
        if self.limit.tpm is not None:
            self._token_tat += (actual - estimated) * emission_interval(self.limit.tpm)

    def _cut_rate(self) -> None:
        now = self.clock()
        if self._allowed_rpm is None:
            # First 429: the server's quota is what it accepted over its window -- the starts
            # of the last minute that were not refused. Not a rate stretched from a short
            # burst (300 starts in 19 s read as 950 rpm), and not half of anything.
            self._forget_old_starts(now)
            while self._refused_starts and self._refused_starts[0] <= now - WINDOW:
                self._refused_starts.popleft()
            accepted = len(self._starts) - len(self._refused_starts)
            self._ceiling_rpm = max(MIN_ADAPTIVE_RPM, float(accepted))
            self._allowed_rpm = self._ceiling_rpm
        else:
            self._ceiling_rpm = self._allowed_rpm
            self._allowed_rpm = aimd_decrease(self._allowed_rpm)
        self._last_cut_at = now
        self._recent_429s.clear()  # the next cut needs fresh evidence at the new rate

    def pause(self, seconds: float) -> None:
        """Hold every acquirer of this model until ``now + seconds`` (never shortens one)."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)

    # -- reading ----------------------------------------------------------------------

    def concurrency_cap(self) -> int:
        """Little's law on the rate in force and the median latency of recent answers."""
        rate = self._rate_per_second()
        if rate is None or not self._latencies:
            return self.limit.max_concurrency
        latency = statistics.median(self._latencies)
        return littles_law_concurrency(rate, latency, self.limit.max_concurrency)

    def _rate_per_second(self) -> float | None:
        rates = []
        if self._allowed_rpm is not None:
            rates.append(self._allowed_rpm / WINDOW)
        if self.limit.tpm is not None and self._token_sizes:
            mean_tokens = statistics.fmean(self._token_sizes)
            if mean_tokens > 0:
                rates.append(self.limit.tpm / WINDOW / mean_tokens)
        return min(rates) if rates else None

    def next_start_time(self, now: float, estimated_tokens: int = 0) -> float:
        """When a request arriving at `now` could start, ignoring concurrency."""
        return max(now, self._ready_at(estimated_tokens))

    def tokens_available(self, now: float) -> float:
        """Tokens the minute has room for at `now`; negative is debt still draining."""
        if self.limit.tpm is None:
            return math.inf
        drained = (now - self._token_tat) / emission_interval(self.limit.tpm)
        return min(self.limit.tpm, drained)

    def _forget_old_starts(self, now: float) -> None:
        while self._starts and self._starts[0][0] <= now - WINDOW:
            self._starts.popleft()

    def snapshot(self) -> LimiterStats:
        now = self.clock()
        self._forget_old_starts(now)
        return LimiterStats(
            model=self.model,
            rpm_limit=self._allowed_rpm,
            tpm_limit=self.limit.tpm,
            requests_last_minute=len(self._starts),
            rate_limited_total=self._rate_limited_total,
            concurrency_cap=self.concurrency_cap(),
            in_flight=self._in_flight,
            paused_until=max(0.0, self._paused_until - now),
            adaptive=self.adaptive,
            tokens_last_minute=sum(tokens for _, tokens in self._starts),
            latency_p50=statistics.median(self._latencies) if self._latencies else None,
        )


# -- all models -------------------------------------------------------------------------


class ModelRateLimit(Protocol):
    """What the pipeline asks of one model's limiter: this module's, or the fleet's in Redis."""

    async def acquire(self, estimated_tokens: int) -> Any: ...

    def record(
        self,
        permit: Any,
        *,
        actual_tokens: int | None,
        outcome: Outcome,
        latency: float,
        retry_after: float | None = None,
    ) -> None: ...


class RateLimits(Protocol):
    def for_model(self, model: str) -> ModelRateLimit: ...


class Limits:
    """One `ModelLimiter` per model name, so one model's quota never starves another."""

    def __init__(
        self,
        per_model: Mapping[str, ModelLimit],
        default: ModelLimit,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._default = default
        self._clock = clock
        self._sleep = sleep
        self._limiters = {
            model: ModelLimiter(model, limit, clock=clock, sleep=sleep)
            for model, limit in per_model.items()
        }

    def for_model(self, model: str) -> ModelLimiter:
        limiter = self._limiters.get(model)
        if limiter is None:
            limiter = ModelLimiter(model, self._default, clock=self._clock, sleep=self._sleep)
            self._limiters[model] = limiter
        return limiter

    def snapshot(self) -> list[LimiterStats]:
        return [limiter.snapshot() for limiter in self._limiters.values()]
