"""The one retry policy: call level (tenacity) and item level, and their worst case."""

from __future__ import annotations

import anyio
import pytest

from dealscout_cli.errors import (
    BadModelOutput,
    Blocked,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from dealscout_cli.retry import RetryPolicy


def attempts_and_waits(
    policy: RetryPolicy, errors: list[Exception | None]
) -> tuple[int, list[float], BaseException | None]:
    """Run one call whose attempts fail with `errors` in turn (None: succeeds)."""
    slept: list[float] = []
    tries = 0

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> None:
        nonlocal tries
        async for attempt in policy.call_retrying(sleep):
            with attempt:
                tries += 1
                error = errors[min(tries, len(errors)) - 1]
                if error is not None:
                    raise error

    raised: BaseException | None = None
    try:
        anyio.run(main)
    except ProviderError as exc:
        raised = exc
    return tries, slept, raised


def test_a_retryable_call_is_tried_call_retries_plus_one_times() -> None:
    policy = RetryPolicy(call_retries=3, call_backoff_base=0.01)
    tries, slept, raised = attempts_and_waits(
        policy, [ProviderError("503", status=503, retryable=True)]
    )
    assert tries == 4
    assert len(slept) == 3
    assert isinstance(raised, ProviderError)


def test_a_call_that_succeeds_on_retry_returns() -> None:
    policy = RetryPolicy(call_retries=3, call_backoff_base=0.01)
    tries, _slept, raised = attempts_and_waits(policy, [ProviderTimeout("slow"), None])
    assert (tries, raised) == (2, None)


def test_backoff_is_full_jitter_under_the_cap() -> None:
    policy = RetryPolicy(
        call_retries=8, call_backoff_base=1.0, call_backoff_cap=10.0, call_budget=1e9
    )
    samples: dict[int, list[float]] = {n: [] for n in range(1, 9)}
    for _ in range(150):
        _tries, slept, _ = attempts_and_waits(
            policy, [ProviderError("x", status=500, retryable=True)]
        )
        for n, wait in enumerate(slept, start=1):
            samples[n].append(wait)
    for n, waits in samples.items():
        ceiling = min(10.0, 2.0 ** (n - 1))
        assert all(0 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered, not one value
        assert max(waits) > 0.8 * ceiling


def test_the_servers_retry_info_wins_when_longer_even_past_the_cap() -> None:
    policy = RetryPolicy(call_retries=2, call_backoff_cap=30.0, call_budget=300.0)
    _tries, slept, _ = attempts_and_waits(policy, [RateLimited("429", retry_after=45.0), None])
    assert slept == [45.0]


def test_no_retry_ends_past_the_call_budget() -> None:
    policy = RetryPolicy(call_retries=10, call_budget=20.0)
    tries, slept, raised = attempts_and_waits(policy, [RateLimited("429", retry_after=30.0)])
    assert (tries, slept) == (1, [])
    assert isinstance(raised, RateLimited)


def test_a_bad_answer_is_asked_again_once() -> None:
    policy = RetryPolicy(call_retries=5, call_backoff_base=0.01)
    tries, _slept, raised = attempts_and_waits(policy, [BadModelOutput("not JSON")])
    assert tries == 2
    assert isinstance(raised, BadModelOutput)


def test_a_final_error_is_not_retried() -> None:
    tries, slept, raised = attempts_and_waits(RetryPolicy(), [Blocked("safety")])
    assert (tries, slept) == (1, [])
    assert isinstance(raised, Blocked)


@pytest.mark.parametrize(("attempt", "delay"), [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0)])
def test_item_delay_doubles_to_its_cap(attempt: int, delay: float) -> None:
    assert RetryPolicy().item_delay(attempt) == delay


def test_worst_case_calls_is_call_tries_times_item_attempts() -> None:
    assert RetryPolicy(call_retries=3, item_attempts=3).worst_case_calls == 12
    assert RetryPolicy(call_retries=0, item_attempts=1).worst_case_calls == 1
