"""The job lifecycle's one decision: what a failed attempt means for its item."""

from __future__ import annotations

import pytest

from dealscout_cli.errors import (
    BadModelOutput,
    BadPhoto,
    Blocked,
    ErrorKind,
    ItemTimedOut,
    KeyRejected,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
    RemoteFailure,
    kind_of,
)
from dealscout_cli.jobs import Action, RunSummary, exit_code, outcome_of
from dealscout_cli.records import Lease
from dealscout_cli.retry import RetryPolicy

POLICY = RetryPolicy(item_attempts=3)


def lease(attempt: int) -> Lease:
    return Lease(
        job_id=1, item_id=1, item_key="k", token=1, owner="o", attempt=attempt, expires_at=0
    )


@pytest.mark.parametrize(
    "error",
    [QuotaExhausted("per day"), KeyRejected("bad key", status=403), ModelNotFound("gone")],
)
def test_errors_every_item_would_meet_stop_the_run(error: Exception) -> None:
    outcome = outcome_of(error, lease(1), POLICY)
    assert outcome.action == Action.STOP
    assert outcome.kind == kind_of(error)


@pytest.mark.parametrize(
    "error",
    [BadModelOutput("twice bad"), Blocked("safety"), BadPhoto("a.jpg", "not an image")],
)
def test_final_kinds_fail_at_once_and_say_retrying_cannot_help(error: Exception) -> None:
    outcome = outcome_of(error, lease(1), POLICY)
    assert (outcome.action, outcome.retryable) == (Action.FAIL, False)


@pytest.mark.parametrize(
    "error",
    [
        RateLimited("429", retry_after=1.0),
        ProviderTimeout("slow"),
        ItemTimedOut("soft limit"),
        ProviderError("503", status=503, retryable=True),
        ProviderError("reset", status=None, retryable=True),
        RemoteFailure(ErrorKind.LOST, "no result", retryable=True),
    ],
)
def test_retryable_errors_retry_later_until_the_last_attempt(error: Exception) -> None:
    first = outcome_of(error, lease(1), POLICY)
    assert (first.action, first.delay) == (Action.RETRY, 5.0)
    assert outcome_of(error, lease(2), POLICY).delay == 10.0
    last = outcome_of(error, lease(3), POLICY)
    assert (last.action, last.retryable) == (Action.FAIL, True)


def test_a_retryable_error_while_stopping_goes_back_to_the_queue() -> None:
    outcome = outcome_of(ProviderTimeout("slow"), lease(1), POLICY, stopping=True)
    assert outcome.action == Action.RELEASE


def test_provider_errors_without_a_class_get_their_kind_from_the_status() -> None:
    assert kind_of(ProviderError("x", status=502)) == ErrorKind.SERVER_ERROR
    assert kind_of(ProviderError("x", status=400)) == ErrorKind.CLIENT_ERROR
    assert kind_of(ProviderError("x", status=None)) == ErrorKind.CONNECTION_ERROR


def test_a_daily_quota_stop_says_when_to_resume() -> None:
    assert "resume after it resets" in outcome_of(QuotaExhausted("q"), lease(1), POLICY).message


def test_exit_codes() -> None:
    assert exit_code(RunSummary(run_id=1)) == 0
    assert exit_code(RunSummary(run_id=1, failed=1)) == 1
    assert exit_code(RunSummary(run_id=1, stop_reason="budget")) == 3
    assert exit_code(RunSummary(run_id=1, signal_number=15, failed=2)) == 143
