"""Every error dealscout raises on purpose, as one small tree.

    DealscoutError
    ├── UsageError             bad flag, missing key, path that does not exist
    ├── StoreError             database missing, not SQLite, read-only, locked
    ├── ScanError              a folder or manifest that cannot be read at all
    ├── BadPhoto               one photo cannot be used (per item, never ends a run)
    ├── BrokerError            the Celery broker (Redis) cannot be reached
    └── ProviderError          a model call failed (carries HTTP status, retryable)
        ├── RateLimited        429 per-minute quota; retry after `retry_after`
        ├── QuotaExhausted     429 per-day quota; stop the run
        ├── KeyRejected        400/403 for the API key; stop the run
        ├── ModelNotFound      404 for the model name; stop the run
        ├── ProviderTimeout    no answer within the call timeout
        ├── BadModelOutput     the answer is not valid JSON for the schema
        └── Blocked            safety block or no candidates

The CLI turns these into one line and an exit code; anything else is a bug and
keeps its traceback. Messages never contain the API key.
"""

from __future__ import annotations


class DealscoutError(Exception):
    """Base of every error dealscout raises on purpose."""


class UsageError(DealscoutError):
    """The command was asked for something it cannot do; the message says how to fix it."""


class StoreError(DealscoutError):
    """The database cannot be opened or written."""


class ScanError(DealscoutError):
    """A folder or manifest cannot be read at all."""


class BrokerError(DealscoutError):
    """`--engine celery`: the broker (Redis) cannot be reached; the message names it."""


class BadPhoto(DealscoutError):
    """One photo cannot be used: zero bytes, not an image, too big, vanished, changed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ProviderError(DealscoutError):
    """A model call failed. `retryable` says whether trying again can help."""

    kind = "provider_error"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RateLimited(ProviderError):
    """429 on a per-minute quota; `retry_after` is the server's RetryInfo delay in seconds."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, retryable=True)
        self.retry_after = retry_after


class QuotaExhausted(ProviderError):
    """429 on a per-day quota: nothing more can be sent today."""

    kind = "quota_exhausted"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, retryable=False)
        self.retry_after = retry_after


class KeyRejected(ProviderError):
    """The API rejected the key: every further call would fail the same way."""

    kind = "key_rejected"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, status=status, retryable=False)


class ModelNotFound(ProviderError):
    """The API does not know the model name (404): every call to it would fail the same way."""

    kind = "model_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, retryable=False)


# Errors after which every further call fails the same way: the item goes back to the
# queue and the run stops (exit 3) instead of failing every item in turn.
STOPS_THE_RUN = (QuotaExhausted, KeyRejected, ModelNotFound)
STOPS_THE_RUN_KINDS = frozenset(error.kind for error in STOPS_THE_RUN)


class ProviderTimeout(ProviderError):
    """The call got no answer within its timeout."""

    kind = "timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, retryable=True)


class BadModelOutput(ProviderError):
    """The model answered, but not with JSON that fits the schema."""

    kind = "bad_output"

    def __init__(self, message: str, *, raw_text: str = "") -> None:
        super().__init__(message, status=200, retryable=True)
        self.raw_text = raw_text


class Blocked(ProviderError):
    """The model refused (safety block, no candidates); retrying the same photos will not help."""

    kind = "blocked"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200, retryable=False)


class LeaseLost(StoreError):
    """This process no longer holds the job's lease; its result was not recorded."""
