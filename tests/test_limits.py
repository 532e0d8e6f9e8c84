"""Rate limits, adaptive concurrency and retry waits, all on fake time."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dealscout_cli.limits import (
    WINDOW_MARGIN,
    Limits,
    ModelLimit,
    ModelLimiter,
    Permit,
    Stopping,
    littles_law_concurrency,
)

T0 = 1000.0


class FakeTime:
    """A clock that only moves when someone sleeps (or a test moves it).

    Exact as long as one task sleeps at a time, which the limiter guarantees: only the
    acquirer at the gate sleeps, the rest wait on the gate or for a slot.
    """

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


def run(main: Callable[[], Awaitable[object]]) -> None:
    anyio.run(main)


def limiter_for(limit: ModelLimit, fake: FakeTime, model: str = "vision") -> ModelLimiter:
    return ModelLimiter(model, limit, clock=fake, sleep=fake.sleep)


async def start_all(limiter: ModelLimiter, count: int, tokens: int = 0) -> list[float]:
    """`count` concurrent acquirers; each answers at once. Returns the start times."""
    starts: list[float] = []

    async def one() -> None:
        permit = await limiter.acquire(tokens)
        starts.append(permit.started_at)
        limiter.record(permit, actual_tokens=None, outcome="ok", latency=1.0)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return sorted(starts)


async def settle() -> None:
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


def most_in_any_window(starts: list[float], window: float = 60.0) -> int:
    # A hair under a minute: float sums of 60/rpm may land a few ulps short of it.
    starts = sorted(starts)
    return max(
        (sum(1 for s in starts[i:] if s < first + window - 1e-6) for i, first in enumerate(starts)),
        default=0,
    )


# -- request spacing ------------------------------------------------------------------


def test_requests_are_spaced_not_burst() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=60), fake)

    async def main() -> None:
        starts = await start_all(limiter, 10)
        assert sum(1 for s in starts if s < T0 + 1) <= 2
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert gaps == pytest.approx([1.0] * 9)

    run(main)


def test_burst_allows_back_to_back_starts_after_idle() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=60, burst=2), fake)

    async def main() -> None:
        starts = await start_all(limiter, 4)
        assert [s - T0 for s in starts] == pytest.approx([0.0, 0.0, 1.0, 2.0])

    run(main)


def test_sustained_rate_matches_limit() -> None:
    fake = FakeTime()
    rpm = 60
    limiter = limiter_for(ModelLimit(rpm=rpm), fake)
    end = T0 + 300
    starts: list[float] = []

    async def worker() -> None:
        while fake.now < end:
            permit = await limiter.acquire(500)
            starts.append(permit.started_at)
            limiter.record(permit, actual_tokens=480, outcome="ok", latency=2.0)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)

    run(main)
    in_run = [s for s in starts if s < end]
    assert most_in_any_window(in_run) <= rpm
    assert len(in_run) >= 0.97 * rpm * 5


def test_late_wakeups_do_not_slow_the_rate() -> None:
    fake = FakeTime()

    async def oversleep(seconds: float) -> None:
        await fake.sleep(seconds + 0.05)

    limiter = ModelLimiter("vision", ModelLimit(rpm=60), clock=fake, sleep=oversleep)

    async def main() -> None:
        starts = await start_all(limiter, 60)
        # Each start is charged from when it was due, so lateness does not add up.
        assert starts[-1] - T0 == pytest.approx(59.05)

    run(main)


def test_real_clock_spaces_requests() -> None:
    limiter = ModelLimiter("vision", ModelLimit(rpm=60_000))  # 1 ms apart

    async def main() -> None:
        with anyio.fail_after(2):
            starts = await start_all(limiter, 5)
        assert starts[-1] - starts[0] >= 0.004 - 1e-6

    run(main)


def test_no_rate_limit_means_no_spacing() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(max_concurrency=8), fake)

    async def main() -> None:
        assert await start_all(limiter, 8) == [T0] * 8

    run(main)


# -- tokens ---------------------------------------------------------------------------


def test_token_limit_spaces_large_requests() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=1000, tpm=60_000), fake)

    async def main() -> None:
        starts = await start_all(limiter, 3, tokens=30_000)
        assert [s - T0 for s in starts] == pytest.approx([0.0, 30.0, 60.0])

    run(main)


def test_actual_tokens_correct_the_estimate() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(tpm=60_000), fake)

    async def main() -> None:
        permit = await limiter.acquire(30_000)
        assert limiter.next_start_time(fake.now, 1) == pytest.approx(T0 + 30)
        limiter.record(permit, actual_tokens=6_000, outcome="ok", latency=1.0)
        assert limiter.next_start_time(fake.now, 1) == pytest.approx(T0 + 6)

    run(main)


def test_tokens_above_the_estimate_are_charged() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(tpm=60_000), fake)

    async def main() -> None:
        permit = await limiter.acquire(6_000)
        limiter.record(permit, actual_tokens=60_000, outcome="ok", latency=1.0)
        assert limiter.tokens_available(fake.now) == pytest.approx(-60_000)
        nxt = await limiter.acquire(1_000)
        assert nxt.started_at == pytest.approx(T0 + 60)

    run(main)


def test_request_larger_than_the_minute_still_goes() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(tpm=1_000), fake)

    async def main() -> None:
        starts = await start_all(limiter, 2, tokens=2_000)
        assert [s - T0 for s in starts] == pytest.approx([0.0, 120.0])

    run(main)


# -- pauses ---------------------------------------------------------------------------


def test_retry_after_pauses_everyone_on_that_model() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=600), fake)

    async def main() -> None:
        permit = await limiter.acquire(0)
        limiter.record(
            permit, actual_tokens=None, outcome="rate_limited", latency=0.2, retry_after=10.0
        )
        assert limiter.snapshot().paused_until == pytest.approx(10.0)
        starts = await start_all(limiter, 3)
        # Everyone waits the pause out, then they go at the usual spacing, not at once.
        assert [s - T0 for s in starts] == pytest.approx([10.0, 10.1, 10.2])

    run(main)


def test_other_model_not_paused() -> None:
    fake = FakeTime()
    limits = Limits(
        {"vision": ModelLimit(rpm=60), "pricing": ModelLimit(rpm=600)},
        ModelLimit(),
        clock=fake,
        sleep=fake.sleep,
    )

    async def main() -> None:
        vision = limits.for_model("vision")
        permit = await vision.acquire(0)
        vision.record(
            permit, actual_tokens=None, outcome="rate_limited", latency=0.2, retry_after=30.0
        )
        pricing = await limits.for_model("pricing").acquire(0)
        assert pricing.started_at == T0
        by_model = {stats.model: stats for stats in limits.snapshot()}
        assert by_model["vision"].paused_until == pytest.approx(30.0)
        assert by_model["pricing"].paused_until == 0

    run(main)


def test_unknown_model_gets_the_default_limit() -> None:
    fake = FakeTime()
    limits = Limits({}, ModelLimit(rpm=30), clock=fake, sleep=fake.sleep)
    limiter = limits.for_model("gemini-x")
    assert limiter.limit.rpm == 30
    assert limits.for_model("gemini-x") is limiter


# -- adaptive mode --------------------------------------------------------------------


async def hold_one_a_second(limiter: ModelLimiter, fake: FakeTime, count: int) -> list[Permit]:
    permits = []
    for _ in range(count):
        permits.append(await limiter.acquire(0))
        fake.now += 1
    return permits


def test_first_429s_set_the_rate_to_what_the_server_accepted_then_cut_gently() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        assert limiter.allowed_rpm is None
        permits = await hold_one_a_second(limiter, fake, 30)  # 30 starts in the last minute
        limiter.record(permits[-2], actual_tokens=None, outcome="rate_limited", latency=0.1)
        assert limiter.allowed_rpm is None  # one 429 is not yet a pattern
        limiter.record(permits[-1], actual_tokens=None, outcome="rate_limited", latency=0.1)
        assert limiter.allowed_rpm == pytest.approx(28)  # the 28 starts the server accepted
        later = [await limiter.acquire(0), await limiter.acquire(0)]
        for permit in later:
            limiter.record(permit, actual_tokens=None, outcome="rate_limited", latency=0.1)
        assert limiter.allowed_rpm == pytest.approx(28 * 0.9)


def test_lone_429s_among_clean_answers_do_not_cut() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        for n in range(60):
            permit = await limiter.acquire(0)
            fake.now += 0.5
            outcome = "rate_limited" if n % 20 == 10 else "ok"  # 5% random 429s
            limiter.record(permit, actual_tokens=None, outcome=outcome, latency=0.1)
        assert limiter.allowed_rpm is None

    run(main)


def test_burst_of_429s_cuts_once() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        permits = await hold_one_a_second(limiter, fake, 30)
        for permit in permits:
            limiter.record(permit, actual_tokens=None, outcome="rate_limited", latency=0.1)
        assert limiter.allowed_rpm == pytest.approx(28)  # set once, at the second 429
        assert limiter.snapshot().rate_limited_total == 30

    run(main)


def test_clean_run_creeps_back_up() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        permits = await hold_one_a_second(limiter, fake, 30)
        for permit in permits[:2]:
            limiter.record(permit, actual_tokens=None, outcome="rate_limited", latency=0.1)
        for permit in permits[2:]:  # started before the cut: no credit
            limiter.record(permit, actual_tokens=None, outcome="ok", latency=0.1)
        assert limiter.allowed_rpm == pytest.approx(28)
        end = fake.now + 60
        while fake.now < end:
            permit = await limiter.acquire(0)
            limiter.record(permit, actual_tokens=None, outcome="ok", latency=0.1)
        # 10% of the 28 rpm ceiling per clean minute.
        assert limiter.allowed_rpm == pytest.approx(28 * 1.1, abs=0.5)

    run(main)


def test_configured_rate_is_not_cut_by_429() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=60), fake)

    async def main() -> None:
        permit = await limiter.acquire(0)
        limiter.record(permit, actual_tokens=None, outcome="rate_limited", latency=0.1)
        assert limiter.allowed_rpm == 60

    run(main)


# -- concurrency ----------------------------------------------------------------------


def test_concurrency_follows_littles_law() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=120, max_concurrency=32), fake)

    async def main() -> None:
        assert limiter.concurrency_cap() == 32  # no latency seen yet
        for _ in range(5):
            permit = await limiter.acquire(0)
            limiter.record(permit, actual_tokens=None, outcome="ok", latency=5.0)
        # 2 requests/s x 5 s x 1.2 headroom, + 1
        assert limiter.snapshot().concurrency_cap == 13

    run(main)


def test_littles_law_is_bounded_by_max_concurrency() -> None:
    assert littles_law_concurrency(100.0, 5.0, max_concurrency=32) == 32
    assert littles_law_concurrency(0.01, 0.1, max_concurrency=32) == 2


def test_token_rate_can_set_the_concurrency() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(tpm=60_000, max_concurrency=32), fake)

    async def main() -> None:
        permit = await limiter.acquire(10_000)
        limiter.record(permit, actual_tokens=10_000, outcome="ok", latency=12.0)
        # 60k tokens/min at 10k each is 0.1 requests/s: ceil(0.1 x 12 x 1.2) + 1
        assert limiter.concurrency_cap() == 3

    run(main)


def test_acquire_waits_for_a_free_slot() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(max_concurrency=1), fake)
    order: list[str] = []

    async def second() -> None:
        await limiter.acquire(0)
        order.append("second started")

    async def main() -> None:
        first = await limiter.acquire(0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await settle()
            order.append("first done")
            limiter.record(first, actual_tokens=None, outcome="ok", latency=1.0)
        assert order == ["first done", "second started"]

    run(main)


def test_cancelled_acquire_releases_its_slot() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(max_concurrency=1), fake)

    async def main() -> None:
        first = await limiter.acquire(0)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(limiter.acquire, 0)
                await settle()
                scope.cancel()
        limiter.record(first, actual_tokens=None, outcome="ok", latency=1.0)
        assert limiter.snapshot().in_flight == 0
        with anyio.fail_after(1):
            await limiter.acquire(0)
        assert limiter.snapshot().in_flight == 1

    run(main)


def test_cancelled_wait_for_the_rate_reserves_nothing() -> None:
    fake = FakeTime()

    async def sleep_until_cancelled(seconds: float) -> None:
        await anyio.sleep_forever()

    limiter = ModelLimiter("vision", ModelLimit(rpm=1), clock=fake, sleep=sleep_until_cancelled)

    async def main() -> None:
        first = await limiter.acquire(0)
        limiter.record(first, actual_tokens=None, outcome="ok", latency=1.0)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(limiter.acquire, 0)
                await settle()
                assert limiter.snapshot().in_flight == 1
                scope.cancel()
        assert limiter.snapshot().in_flight == 0
        # the spacing's minute, and the client's sliding minute (a hair longer than the server's)
        assert limiter.next_start_time(fake.now) == T0 + 60 + WINDOW_MARGIN

    run(main)


def test_snapshot_shows_the_median_latency_of_clean_answers() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        for latency, outcome in ((2.0, "ok"), (9.0, "error"), (4.0, "ok"), (3.0, "ok")):
            permit = await limiter.acquire(0)
            limiter.record(permit, actual_tokens=None, outcome=outcome, latency=latency)
        stats = limiter.snapshot()
        assert (stats.latency_p50, stats.in_flight) == (3.0, 0)

    run(main)


def test_recording_a_permit_twice_is_an_error() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        permit = await limiter.acquire(0)
        limiter.record(permit, actual_tokens=None, outcome="ok", latency=1.0)
        with pytest.raises(RuntimeError):
            limiter.record(permit, actual_tokens=None, outcome="ok", latency=1.0)

    run(main)


def test_snapshot_counts_requests_in_the_last_minute() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=60), fake)

    async def main() -> None:
        await start_all(limiter, 5)
        assert limiter.snapshot().requests_last_minute == 5
        fake.now += 60
        stats = limiter.snapshot()
        assert (stats.requests_last_minute, stats.rpm_limit) == (0, 60)

    run(main)


# -- properties -----------------------------------------------------------------------


batches = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=12),  # requests arriving together
        st.floats(min_value=0, max_value=90),  # idle seconds before them
        st.integers(min_value=0, max_value=4_000),  # estimated tokens
        st.floats(min_value=0.2, max_value=3.0),  # actual / estimated
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(batches=batches, rpm=st.sampled_from([1, 7, 60, 150]))
def test_no_minute_holds_more_than_the_quota_whatever_the_arrivals(batches, rpm) -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(rpm=rpm, tpm=20_000, max_concurrency=5), fake)
    starts: list[float] = []
    sent: list[tuple[float, int]] = []

    async def one(tokens: int, ratio: float) -> None:
        permit = await limiter.acquire(tokens)
        starts.append(permit.started_at)
        sent.append((permit.started_at, int(tokens * ratio)))
        limiter.record(permit, actual_tokens=int(tokens * ratio), outcome="ok", latency=1.5)

    async def main() -> None:
        for count, idle, tokens, ratio in batches:
            fake.now += idle
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(one, tokens, ratio)

    run(main)
    assert len(starts) == sum(count for count, *_ in batches)
    assert most_in_any_window(starts) <= rpm
    # Tokens go "pay after": a minute holds at most tpm plus the request that opened it.
    largest = max(tokens for _, tokens in sent)
    for first, _ in sent:
        in_window = sum(tokens for start, tokens in sent if first <= start < first + 60 - 1e-6)
        assert in_window <= 20_000 + largest


def test_429s_that_say_retry_in_a_second_pause_but_keep_the_rate() -> None:
    fake = FakeTime()
    limiter = limiter_for(ModelLimit(), fake)

    async def main() -> None:
        permits = await hold_one_a_second(limiter, fake, 10)
        for permit in permits:
            limiter.record(
                permit, actual_tokens=None, outcome="rate_limited", latency=0.1, retry_after=1.0
            )
        assert limiter.allowed_rpm is None
        assert limiter.snapshot().paused_until > 0

    run(main)


# -- after a 429 storm ------------------------------------------------------------------


class SlidingWindowServer:
    """A per-minute quota over a true sliding window, and a storm that refuses everything
    from `storm[0]` to `storm[1]` (RetryInfo: until it ends, like the emulator's, or none)."""

    def __init__(self, rpm: int, storm: tuple[float, float], storm_retry_info: bool) -> None:
        self.rpm = rpm
        self.storm = storm
        self.storm_retry_info = storm_retry_info
        self.accepted: list[float] = []
        self.refused: list[float] = []

    def answer(self, now: float) -> tuple[str, float]:
        start, end = self.storm
        if start <= now < end:
            self.refused.append(now)
            return "rate_limited", float(math.ceil(end - now)) if self.storm_retry_info else 0.0
        in_window = [t for t in self.accepted[-self.rpm :] if t > now - 60]
        if len(in_window) >= self.rpm:
            self.refused.append(now)
            return "rate_limited", float(max(1, math.ceil(in_window[0] + 60 - now)))
        self.accepted.append(now)
        return "ok", 0.0

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted if start <= t < end)


class AnswersFirst(FakeTime):
    """Fake time that moves only once the answers due at this instant have been recorded,
    so a 429's pause starts when the 429 came, not after some other task's wait."""

    async def sleep(self, seconds: float) -> None:
        await settle()
        await super().sleep(seconds)


def run_against(server: SlidingWindowServer, fake: FakeTime, until: float) -> ModelLimiter:
    """Eight workers through one adaptive limiter against `server`: eight requests in flight."""
    limiter = limiter_for(ModelLimit(max_concurrency=8), fake)

    async def worker() -> None:
        while fake.now < until:
            permit = await limiter.acquire(0)
            outcome, retry = server.answer(fake.now)
            await settle()  # the answer comes back while the others send theirs
            limiter.record(
                permit,
                actual_tokens=None,
                outcome="ok" if outcome == "ok" else "rate_limited",
                latency=0.2,
                retry_after=retry or None,
            )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker)

    run(main)
    return limiter


@pytest.mark.parametrize(
    ("storm_at", "retry_info"), [(0.0, True), (0.0, False), (200.0, True), (200.0, False)]
)
def test_rate_is_back_to_ninety_percent_within_two_minutes_of_a_storm(
    storm_at: float, retry_info: bool
) -> None:
    # At the start, the storm used to set the rate to the 6 requests in flight (the server
    # had accepted none), and a climb of 10% of 6 RPM a minute never came back. Mid-run,
    # without RetryInfo to pause for, cut after cut walked the rate down.
    fake = AnswersFirst(now=0.0)
    storm = (storm_at, storm_at + 10)
    server = SlidingWindowServer(300, storm, retry_info)
    limiter = run_against(server, fake, until=storm[1] + 180)
    two_minutes_on = server.ok_between(storm[1] + 120, storm[1] + 180)
    assert two_minutes_on >= 0.9 * 300
    assert (limiter.allowed_rpm or 0) >= 0.9 * 300
    # ... and not by hammering: few refusals once the storm is over.
    refused_after = sum(1 for t in server.refused if t >= storm[1])
    assert refused_after <= 0.05 * len(server.accepted)


# -- stopping ---------------------------------------------------------------------------


def test_wake_all_ends_every_wait_at_once_even_a_day_long_pause() -> None:
    limits = Limits({}, ModelLimit(rpm=60, max_concurrency=1))
    limiter = limits.for_model("vision")
    stopped: list[str] = []

    async def waiter() -> None:
        with pytest.raises(Stopping, match="daily quota"):
            await limiter.acquire(0)
        stopped.append("woken")

    async def main() -> None:
        held = await limiter.acquire(0)  # the one slot: the next waits for it ...
        limiter.pause(86_400)  # ... and then for a day
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(waiter)
                await settle()
                limits.wake_all("daily quota exhausted")
        limiter.record(held, actual_tokens=None, outcome="ok", latency=0.1)  # still valid
        with pytest.raises(Stopping):
            await limits.for_model("pricing").acquire(0)  # a model first asked for later
        assert limiter.snapshot().in_flight == 0

    run(main)
    assert stopped == ["woken"] * 3
