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
   - The sliding minute (configured ``rpm``): a start also waits until the starts the
     server counts in the last ``WINDOW`` (+ ``WINDOW_MARGIN`` for arrival jitter) leave
     room for it, the server's own rule. It is what makes giving time back safe (below).
   - A shared pause: when the server answers 429 with a *long* ``RetryInfo.retryDelay``
     (``SHORT_RETRY`` or more: a full window, a day), every acquirer of that model waits it
     out, not just the request that got it. A short one ("retry in 1s") holds only its
     own request -- its retry waits it out (`retry`) -- unless 429s are a pattern of
     recent answers, when everyone waits that short while.

Time given back (configured ``rpm``). Google charges no quota for a refused request, and
a short pause stops starts the quota had room for; spacing alone never makes either up
(5% lone 1 s 429s cost ~25% of the quota). So a 429's start leaves the sliding minute and
its spacing is owed back, and so is the spacing a short shared pause took. What is owed
lets the next starts go back to back, until it is used or ``WINDOW`` old -- never past the
sliding minute's room, so no 60 s holds more than ``rpm`` counted starts. A start that
used owed spacing owes it again when it leaves the minute: the server's room comes back
all at once, and spacing alone would lose it again each minute. A long pause owes
nothing: the server said the window is full.

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

A 429 *storm* (the server refuses everything for a while, whatever we send) is not a
quota, and measuring it as one collapsed the rate: a storm in a run's first seconds
read as "the server accepted 0 requests last minute", the rate floored at 1 RPM, and a
climb of 10% of a 1 RPM ceiling per minute never came back (11 of 40 items in 8
minutes). So a cut is not the only thing the limiter remembers; it also keeps ``good``,
the highest rate in force that got clean answers in the last ``GOOD_MEMORY`` (120 s) --
never a probe's rate, nor an unbounded one -- and recovers in three ways:

- **Floor.** A cut never takes the rate below ``FLOOR_SHARE x`` the clean answers of the
  last minute: while the server still takes requests, repeated cuts in a storm stop at
  half of what it takes. (At a real quota the cuts are far above it: 0.9 x rate.)
- **Regrowth.** Below ``RECOVER_SHARE x good`` a clean answer grows the rate
  multiplicatively, ``rate x 2 ** (60 / rate / DOUBLING_SECONDS)``: each answer stands
  for the ``60/rate`` seconds of spacing it used, so the rate doubles every
  ``DOUBLING_SECONDS`` (10 s) of clean answers, however low it fell. From half of good
  that is one doubling (10 s); from 1 RPM to 0.9 x 300 RPM, log2(270) = 8.1 doublings,
  about 80 s -- in practice less, since one answer at 1 RPM already covers 60 s (x64).
  At and above 0.9 x good the climb is the additive one, so the sawtooth at a real
  quota (cut to 0.9 x rate, which is about 0.9 x good) is what it was.
- **Probing.** When the first clean answer after a cut finds no good rate (the storm
  came before any clean answer, or outlasted the memory), there is nothing to return
  to: the rate doubles every ``DOUBLING_SECONDS`` without a cap, as a run's start is
  unbounded, until a 429 pattern -- short RetryInfo or not, that is the edge it looks
  for. That cut measures what the server accepted over the last minute, as the first
  one does.

When the rate grows, the spacing already charged (``tat``) is rescaled to the new rate
and the acquirer asleep at the gate looks again, so a start booked 60 s out at 1 RPM
does not hold up the faster rate that followed. Measured (benchmarks/storm.py, 300 RPM
server, 10 s storm at the start): ok calls in the four minutes after the storm were
300, 251, 298, 296 a model (it used to be 11 items in 8 minutes). Minute 2's dip is the
probe's overshoot paid back: the server's sliding window still holds the burst that
found the edge in minute 1, so nothing fits for a while whatever the client's rate.

The arithmetic (GCRA, Little's law, AIMD) lives in small pure functions so that the
Redis-wide limiter can run the same steps in a Lua script.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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
# Recovering from a 429 storm (see the module docstring).
GOOD_MEMORY = 2 * WINDOW  # how long the best clean minute is remembered
FLOOR_SHARE = 0.5  # a cut never goes below this share of the last minute's clean answers
RECOVER_SHARE = 0.9  # below this share of the good rate, regrow multiplicatively
DOUBLING_SECONDS = 10.0  # ... doubling every this many seconds of clean answers
# A 429 only cuts the rate when 429s are a real share of recent answers. Servers also
# send the odd 429 that says nothing about our rate (shared capacity, injected faults);
# halving on each of those walked a chaos run down to 1 RPM.
RECENT_OUTCOMES = 20
CUT_SHARE = 0.1
# A 429 whose RetryInfo says "try again in a second or two" is a blip, not a full window:
# its own request waits it out, the rate is kept, the others go on (unless 429s are a
# pattern). A full per-minute window says tens of seconds.
SHORT_RETRY = 5.0
# The client's own sliding minute is this much longer than the server's: a request that
# arrives a few ms later than the one a minute before it must not find the window full.
WINDOW_MARGIN = 0.1


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


def regrow(rate: float, doubling: float = DOUBLING_SECONDS) -> float:
    """One clean answer's share of a rate that doubles every `doubling` seconds: the answer
    stands for the ``60/rate`` seconds of spacing it used."""
    factor: float = 2.0 ** (emission_interval(rate) / doubling)
    return rate * factor


def gcra_rescale(tat: float, last_start: float, old_interval: float, new_interval: float) -> float:
    """`tat` with the debt charged since `last_start` at `old_interval` re-priced at `new_interval`."""
    if tat <= last_start:
        return tat
    return last_start + (tat - last_start) * new_interval / old_interval


# -- stopping and the soft time limit ----------------------------------------------------


class Stopping(Exception):  # noqa: N818 (a signal like anyio's Cancelled, not an error)
    """The run is stopping: `acquire` lets no new request start (see `Limits.wake_all`).

    Not a `DealscoutError`: it never reaches a person. The engine catches it and gives the
    item back to the queue, since nothing was sent and nothing failed."""


class SoftTimeLimit:
    """An item's soft time limit whose clock stands still while the item waits for a permit:
    a slow quota (or a 429 pause) is the account's doing, not the item's, and must not fail it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + seconds)

    @contextmanager
    def paused(self) -> Iterator[None]:
        remaining = self.scope.deadline - anyio.current_time()
        self.scope.deadline = math.inf
        try:
            yield
        finally:
            self.scope.deadline = anyio.current_time() + remaining


# The deadline belongs to the task that runs the item, as anyio's cancel scopes do: the
# pipeline finds it here without every stage passing it along.
_SOFT_LIMIT: ContextVar[SoftTimeLimit | None] = ContextVar("soft_time_limit", default=None)


@contextmanager
def soft_time_limit(seconds: float) -> Iterator[SoftTimeLimit]:
    """`anyio.move_on_after(seconds)`, except that `waiting_for_permit` stops its clock."""
    limit = SoftTimeLimit(seconds)
    token = _SOFT_LIMIT.set(limit)
    try:
        with limit.scope:
            yield limit
    finally:
        _SOFT_LIMIT.reset(token)


@contextmanager
def waiting_for_permit() -> Iterator[None]:
    """While inside, the current task's soft time limit (if any) does not run."""
    limit = _SOFT_LIMIT.get()
    if limit is None:
        yield
        return
    with limit.paused():
        yield


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
        self._last_start = -math.inf  # the scheduled time of the last committed start
        # Configured rpm: (start, seconds of owed spacing it used) of the starts the server
        # counts, last WINDOW. A start that used owed spacing owes it again when it leaves.
        self._counted: deque[tuple[float, float]] = deque()
        self._short_pause: tuple[float, float] | None = None  # (from, until): given back
        self._owed: deque[list[float]] = deque()  # [earned at, seconds] of spacing owed back
        self._clean_answers: deque[float] = deque()  # when each clean answer came, last minute
        self._good: deque[tuple[float, float]] = deque()  # (when, rate in force) of clean
        # answers, rates decreasing: its head is the best of the last GOOD_MEMORY seconds
        self._after_cut = False  # the next clean answer decides whether to probe
        self._probing = False
        self._stop_reason: str | None = None
        self._waiting: set[anyio.CancelScope] = set()
        self._nap: anyio.CancelScope | None = None  # the gate's sleep, while it sleeps

    @property
    def adaptive(self) -> bool:
        return self.limit.rpm is None

    @property
    def allowed_rpm(self) -> float | None:
        """The request rate in force: configured, adaptive, or None for unbounded."""
        return self._allowed_rpm

    def good_rpm(self) -> float:
        """The highest adaptive rate that got clean answers in the last GOOD_MEMORY seconds
        (0 when none did: the limiter has nothing to return to)."""
        now = self.clock()
        while self._good and self._good[0][0] <= now - GOOD_MEMORY:
            self._good.popleft()
        return self._good[0][1] if self._good else 0.0

    # -- acquiring --------------------------------------------------------------------

    async def acquire(self, estimated_tokens: int) -> Permit:
        """Wait for a slot, the request spacing, token room and any pause; then go.
        Raises `Stopping` once `wake_all` was called, at once, however long the wait."""
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must be >= 0, not {estimated_tokens}")
        if self._stop_reason is not None:
            raise Stopping(self._stop_reason)
        with anyio.CancelScope() as waiting:
            self._waiting.add(waiting)
            try:
                await self._take_slot()
                try:
                    started_at = await self._pass_gate(estimated_tokens)
                except BaseException:
                    self._release_slot()
                    raise
                return Permit(self, estimated_tokens, started_at)
            finally:
                self._waiting.discard(waiting)
        raise Stopping(self._stop_reason or "stopping")  # `wake_all` cancelled the wait

    def wake_all(self, reason: str) -> None:
        """From now on no request starts here: every acquirer, waiting (in a pause, for the
        spacing, for a slot) or still to come, raises `Stopping`. Permits out stay valid."""
        self._stop_reason = reason
        for waiting in self._waiting:
            waiting.cancel()

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
                with anyio.CancelScope() as nap:  # `_grow` ends it when the rate rises
                    self._nap = nap
                    await self._sleep(ready - now)
                self._nap = None
                slept_until = None if nap.cancelled_caught else ready

    def _ready_at(self, tokens: int) -> float:
        """Earliest start the quotas and pauses allow (may be in the past)."""
        ready = self._paused_until
        if self._allowed_rpm is not None:
            interval = emission_interval(self._allowed_rpm)
            tolerance = (self.limit.burst - 1) * interval + min(self._owed_seconds(), interval)
            ready = max(ready, gcra_ready_at(self._request_tat, tolerance))
        if self.limit.rpm is not None:
            ready = max(ready, self._window_ready_at())
        if self.limit.tpm is not None and tokens > 0:
            ready = max(ready, gcra_ready_at(self._token_tat))
        return ready

    def _window_ready_at(self) -> float:
        """When the last minute's counted starts leave room for one more (configured rpm):
        the server's own sliding window, the bound that time given back never breaks."""
        assert self.limit.rpm is not None
        counted = self._counted
        horizon = self.clock() - WINDOW - WINDOW_MARGIN
        while counted and counted[0][0] <= horizon:
            start, used = counted.popleft()
            # Its room comes back at once, as the server's does: a start given back goes on
            # being given back each minute, where spacing alone would lose it again.
            self._owe(used, earned_at=start + WINDOW)
        room = max(1, math.floor(self.limit.rpm))
        return counted[-room][0] + WINDOW + WINDOW_MARGIN if len(counted) >= room else -math.inf

    def _commit(self, scheduled: float, now: float, tokens: int) -> None:
        if self._allowed_rpm is not None:
            interval = emission_interval(self._allowed_rpm)
            self._owe(self._spacing_paused(scheduled))
            used = self._use_owed(interval)
            self._request_tat = gcra_charge(self._request_tat, scheduled, interval - used)
            self._last_start = max(self._last_start, scheduled)
            if self.limit.rpm is not None:
                self._counted.append((now, used))
        if self.limit.tpm is not None:
            cost = tokens * emission_interval(self.limit.tpm)
            self._token_tat = gcra_charge(self._token_tat, scheduled, cost)
        self._starts.append((now, tokens))

    def _spacing_paused(self, scheduled: float) -> float:
        """Seconds of spacing before `scheduled` that a short shared pause took (configured
        rpm): the part of the pause after the last start's slot, so it is counted once."""
        if self.limit.rpm is None or self._short_pause is None:
            return 0.0
        begun, until = self._short_pause
        return max(0.0, min(scheduled, until) - max(self._request_tat, begun))

    def _owe(self, seconds: float, earned_at: float | None = None) -> None:
        """Give `seconds` of spacing back: the next starts may go that much sooner, back to
        back, within `WINDOW` of `earned_at` (and never past the sliding window's room)."""
        if seconds <= 0:
            return
        self._owed.append([self.clock() if earned_at is None else earned_at, seconds])
        if self._nap is not None:
            self._nap.cancel()  # the acquirer at the gate may go sooner now: let it look again

    def _owed_seconds(self) -> float:
        horizon = self.clock() - WINDOW
        while self._owed and self._owed[0][0] <= horizon:
            self._owed.popleft()  # not used within the quota's window: gone
        return sum(seconds for _, seconds in self._owed)

    def _use_owed(self, most: float) -> float:
        """Take up to `most` seconds of what is owed, oldest first; returns what was taken."""
        wanted = min(most, self._owed_seconds())
        left = wanted
        while left > 0 and self._owed:
            take = min(left, self._owed[0][1])
            self._owed[0][1] -= take
            left -= take
            if self._owed[0][1] <= 1e-12:
                self._owed.popleft()
        return wanted

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
        pattern = outcome == "rate_limited" and self._429s_are_a_pattern()  # before a cut clears it
        if outcome == "ok":
            self._latencies.append(latency)
            if self._allowed_rpm is not None and self._after_last_cut(permit):
                self._grow()
            self._note_clean_answer()
        elif outcome == "rate_limited":
            self._rate_limited_total += 1
            self._refused_starts.append(permit.started_at)
            # A probe is looking for the quota's edge: any 429 pattern ends it, short or not.
            window_full = retry_after is None or retry_after >= SHORT_RETRY or self._probing
            if window_full and self._after_last_cut(permit) and pattern:
                self._cut_rate()
            self._give_back(permit)
        if retry_after is not None and retry_after > 0:
            self._honour_retry_info(retry_after, pattern)
        self._release_slot()

    def _give_back(self, permit: Permit) -> None:
        """A refused request is not counted by the server (Google charges no quota for a
        429): with a configured rpm its start goes back to the window and the spacing."""
        if self.limit.rpm is None or self._allowed_rpm is None:
            return
        found = next((entry for entry in self._counted if entry[0] == permit.started_at), None)
        if found is None:
            return  # its minute is over: nothing left to give back
        self._counted.remove(found)
        self._owe(emission_interval(self._allowed_rpm))  # what it charged, with what it used

    def _honour_retry_info(self, retry_after: float, pattern: bool) -> None:
        """A full window (long RetryInfo) or a pattern of 429s holds every request of the
        model; a lone short one holds only its own request (its retry waits it out, `retry`).
        A short shared pause's cost is given back afterwards (`_pause_given_back`)."""
        if retry_after >= SHORT_RETRY:
            self._owed.clear()  # the window is full: there is nothing to give back
            self.pause(retry_after)
        elif pattern:
            now = self.clock()
            self._short_pause = (now, now + retry_after)
            self.pause(retry_after)

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
        if self._allowed_rpm is None or self._probing:
            # First 429 (or the first after probing): the server's quota is what it accepted
            # over its window -- the starts of the last minute that were not refused. Not a
            # rate stretched from a short burst (300 starts in 19 s read as 950 rpm), and not
            # half of anything.
            self._forget_old_starts(now)
            while self._refused_starts and self._refused_starts[0] <= now - WINDOW:
                self._refused_starts.popleft()
            accepted = len(self._starts) - len(self._refused_starts)
            self._ceiling_rpm = max(MIN_ADAPTIVE_RPM, float(accepted))
            self._allowed_rpm = self._ceiling_rpm
            if self._clean_answers_in_window(now):  # measured at the quota, not in a storm
                self._note_good(now, self._allowed_rpm)
        else:
            self._ceiling_rpm = self._allowed_rpm
            floor = FLOOR_SHARE * len(self._clean_answers_in_window(now))
            self._allowed_rpm = max(aimd_decrease(self._allowed_rpm), floor)
        self._last_cut_at = now
        self._after_cut = True
        self._probing = False
        self._recent_429s.clear()  # the next cut needs fresh evidence at the new rate

    def _grow(self) -> None:
        """A clean answer at the rate in force: regrow, probe or climb (module docstring)."""
        rate = self._allowed_rpm
        assert rate is not None
        if self._after_cut:  # the first clean answer since the cut: is there a good rate?
            self._after_cut = False
            self._probing = self.good_rpm() == 0
        target = RECOVER_SHARE * self.good_rpm()
        if self._probing:
            grown = regrow(rate)
        elif rate < target:
            grown = min(target, regrow(rate))
        else:
            grown = aimd_increase(rate, self._ceiling_rpm)
        self._request_tat = gcra_rescale(
            self._request_tat, self._last_start, emission_interval(rate), emission_interval(grown)
        )
        self._allowed_rpm = grown
        if self._nap is not None:
            self._nap.cancel()  # the acquirer at the gate may go sooner now: let it look again

    def _note_clean_answer(self) -> None:
        now = self.clock()
        self._clean_answers_in_window(now).append(now)
        rate = self._allowed_rpm
        if rate is not None and not self._probing:  # else it says nothing about a rate
            self._note_good(now, rate)

    def _note_good(self, now: float, rate: float) -> None:
        good = self._good
        while good and good[-1][1] <= rate:
            good.pop()
        good.append((now, rate))

    def _clean_answers_in_window(self, now: float) -> deque[float]:
        answers = self._clean_answers
        while answers and answers[0] <= now - WINDOW:
            answers.popleft()
        return answers

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
        self._stop_reason: str | None = None
        self._sleeping: set[anyio.CancelScope] = set()
        self._limiters = {
            model: ModelLimiter(model, limit, clock=clock, sleep=sleep)
            for model, limit in per_model.items()
        }

    def for_model(self, model: str) -> ModelLimiter:
        limiter = self._limiters.get(model)
        if limiter is None:
            limiter = ModelLimiter(model, self._default, clock=self._clock, sleep=self._sleep)
            if self._stop_reason is not None:
                limiter.wake_all(self._stop_reason)
            self._limiters[model] = limiter
        return limiter

    def wake_all(self, reason: str) -> None:
        """A stop reaches every model's waiters at once: see `ModelLimiter.wake_all`; and
        every call sleeping between its retries (`backoff`)."""
        self._stop_reason = reason
        for limiter in self._limiters.values():
            limiter.wake_all(reason)
        for sleeping in self._sleeping:
            sleeping.cancel()

    async def backoff(self, seconds: float) -> None:
        """A call's wait before its next try (backoff, RetryInfo): the server's time, like
        a permit's, so it is off the item's soft time limit, and a stop ends it at once."""
        if self._stop_reason is not None:
            raise Stopping(self._stop_reason)
        with waiting_for_permit(), anyio.CancelScope() as sleeping:
            self._sleeping.add(sleeping)
            try:
                await self._sleep(seconds)
                return
            finally:
                self._sleeping.discard(sleeping)
        raise Stopping(self._stop_reason or "stopping")

    def snapshot(self) -> list[LimiterStats]:
        return [limiter.snapshot() for limiter in self._limiters.values()]
