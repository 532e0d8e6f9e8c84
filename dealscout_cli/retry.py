"""The one retry policy: how often one call is tried, and how often one item is.

Two levels, and no third:

* **Call level** (inside one attempt at an item): a failed call that can succeed on a
  second try (429, 5xx, a timeout, a dropped connection, one schema-invalid answer) is
  tried again with full-jitter exponential backoff — tenacity's own `wait_random_exponential`
  — or after the server's RetryInfo delay when that is longer (the SDK ignores it).
  At most `call_retries` retries, and none that would end more than `call_budget` seconds
  after the first try (`stop_before_delay`).
* **Item level** (across attempts, across runs): when an attempt still fails, the item is
  queued again after `item_delay(attempt)` (doubling from `item_delay_base` to
  `item_delay_cap`) until it has had `item_attempts` attempts; then it fails for good.
  Kinds in `FINAL_KINDS` fail at once; kinds in `STOPS_THE_RUN` put the item back and stop
  the run, since every other item would fail the same way.

Every engine (local pool, Batch Mode, Celery) runs exactly these two levels: the Celery
task does not retry by itself (its failures come back as data and the coordinator applies
the item level), so the worst case per call is `worst_case_calls` everywhere. Batch Mode has
no call level (a batch answer is final), so it makes at most `item_attempts` calls a stage.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tenacity
from tenacity.wait import wait_base

from dealscout_cli.config import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRIES
from dealscout_cli.errors import BadModelOutput, ErrorKind, ProviderError, RateLimited

# After these, every further call fails the same way: the item goes back to the queue and
# the run stops (exit 3) instead of failing every item in turn.
STOPS_THE_RUN = frozenset(
    {ErrorKind.QUOTA_EXHAUSTED, ErrorKind.KEY_REJECTED, ErrorKind.MODEL_NOT_FOUND}
)
# Retrying the item cannot help: the same photos give the same answer (a bad answer was
# already asked again at the call level).
FINAL_KINDS = frozenset(
    {ErrorKind.BAD_OUTPUT, ErrorKind.BLOCKED, ErrorKind.BAD_PHOTO, ErrorKind.BAD_INPUT}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Both levels' numbers. Built from `Settings` by `policy_for`; tests shrink the delays."""

    call_retries: int = DEFAULT_MAX_RETRIES
    call_backoff_base: float = 1.0
    call_backoff_cap: float = 30.0
    call_budget: float = 120.0  # seconds of retrying one call before the item gives up
    bad_output_retries: int = 1  # a schema-invalid answer is asked again once
    item_attempts: int = DEFAULT_MAX_ATTEMPTS
    item_delay_base: float = 5.0
    item_delay_cap: float = 300.0

    @property
    def worst_case_calls(self) -> int:
        """The most attempts one call (one stage of one item) can get, on any engine."""
        return (self.call_retries + 1) * self.item_attempts

    def item_delay(self, attempt: int) -> float:
        """Seconds before an item whose attempt number `attempt` failed is tried again."""
        return min(self.item_delay_cap, self.item_delay_base * 2.0 ** max(0, attempt - 1))

    def may_retry_item(self, kind: ErrorKind, attempt: int) -> bool:
        return kind not in FINAL_KINDS and attempt < self.item_attempts

    def call_retrying(self, sleep: Callable[[float], Awaitable[None]]) -> tenacity.AsyncRetrying:
        """A tenacity loop for one call: which errors, how long to wait, when to stop."""
        return tenacity.AsyncRetrying(
            retry=_RetryableCall(self.bad_output_retries),
            wait=_WaitAtLeastRetryInfo(
                tenacity.wait_random_exponential(
                    multiplier=self.call_backoff_base, max=self.call_backoff_cap
                )
            ),
            stop=tenacity.stop_after_attempt(self.call_retries + 1)
            | tenacity.stop_before_delay(self.call_budget),
            sleep=sleep,
            reraise=True,
        )


class _RetryableCall(tenacity.retry_base):
    """Retry a call whose error says it may succeed; a bad answer only so many times."""

    def __init__(self, bad_output_retries: int) -> None:
        self.bad_output_retries = bad_output_retries
        self.bad_outputs = 0

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if not isinstance(error, ProviderError) or not error.retryable:
            return False
        if isinstance(error, BadModelOutput):
            self.bad_outputs += 1
            return self.bad_outputs <= self.bad_output_retries
        return True


class _WaitAtLeastRetryInfo(wait_base):
    """The backoff, or the server's RetryInfo delay when that is longer (even past the cap)."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait: float = self.backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            delay = error.retry_after
            if math.isfinite(delay) and delay > 0:
                wait = max(wait, delay)
        return wait


def policy_for(
    *,
    max_retries: int,
    max_attempts: int,
    item_delay_base: float = RetryPolicy.item_delay_base,
    item_delay_cap: float = RetryPolicy.item_delay_cap,
) -> RetryPolicy:
    """The policy a run uses: the user's retry counts with the standard waits."""
    return RetryPolicy(
        call_retries=max_retries,
        item_attempts=max_attempts,
        item_delay_base=item_delay_base,
        item_delay_cap=item_delay_cap,
    )
