"""Every error dealscout raises on purpose, as one small tree.

    DealscoutError
    ├── UsageError             bad flag, missing key, path that does not exist (exit 2)
    │   └── ScanError          a path or manifest given that cannot be read at all
    ├── StoreError             database missing, not SQLite, read-only, locked
    ├── BadPhoto               one photo cannot be used (per item, never ends a run)
    ├── BrokerError            the Celery broker (Redis) cannot be reached
    └── ProviderError          a model call failed (carries HTTP status, retryable)
        ├── RateLimited        429 per-minute quota; retry after `retry_after`
        ├── QuotaExhausted     429 per-day quota; stop the run
        ├── KeyRejected        400/403 for the API key; stop the run
        ├── ModelNotFound      404 for the model name; stop the run
        ├── ProviderTimeout    no answer within the call timeout
        ├── BadModelOutput     the answer is not valid JSON for the schema
        ├── Blocked            safety block or no candidates
        ├── BadResponse        an answer that is not the API's (a captive portal's page)
        ├── ItemTimedOut       the item passed its soft time limit
        └── RemoteFailure      a Celery worker's failure, by kind (distributed mode)
    LeaseLost                  (a StoreError) another process owns the job now

`ErrorKind` names every failure the record stores (`jobs.error_kind`,
`calls.outcome`); `kind_of(error)` is the one place an exception gets its kind.
What a kind means for the item (retry, fail, stop the run) is `jobs.outcome_of`.

The CLI turns these into one line and an exit code; anything else is a bug and
keeps its traceback. Messages never contain the API key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    """Every kind of failure the record stores, for items (`jobs.error_kind`) and calls."""

    RATE_LIMITED = "rate_limited"  # 429 per minute, still after the call's retries
    QUOTA_EXHAUSTED = "quota_exhausted"  # 429 per day
    KEY_REJECTED = "key_rejected"
    MODEL_NOT_FOUND = "model_not_found"
    TIMEOUT = "timeout"  # a call without an answer in time, or an item past its soft limit
    BAD_OUTPUT = "bad_output"  # an answer that breaks its schema or our rules
    BLOCKED = "blocked"  # safety block, no candidates
    SERVER_ERROR = "server_error"  # 5xx
    CLIENT_ERROR = "client_error"  # another 4xx
    CONNECTION_ERROR = "connection_error"  # no HTTP answer at all
    BAD_RESPONSE = "bad_response"  # an HTTP answer that is not the API's (a portal's HTML page)
    BAD_PHOTO = "bad_photo"
    BAD_INPUT = "bad_input"  # a scanned file that is not a usable photo (a skipped item)
    LOST = "lost"  # distributed: no result from the fleet in time
    FLEET_ERROR = "fleet_error"  # distributed: the Celery task itself failed
    WORKER_CONFIG = "worker_config"  # distributed: a worker without an API key
    WORKER_ERROR = "worker_error"  # distributed: a worker-side failure of another kind
    CANCELLED = "cancelled"  # calls only: cut short by a stop


def kind_for_status(status: int | None) -> ErrorKind:
    """The kind of a provider failure that has no class of its own, by its HTTP status."""
    if status is None:
        return ErrorKind.CONNECTION_ERROR
    return ErrorKind.SERVER_ERROR if status >= 500 else ErrorKind.CLIENT_ERROR


class DealscoutError(Exception):
    """Base of every error dealscout raises on purpose."""


class UsageError(DealscoutError):
    """The command was asked for something it cannot do; the message says how to fix it."""


class StoreError(DealscoutError):
    """The database cannot be opened or written."""


class ScanError(UsageError):
    """A folder or manifest given on the command line cannot be read at all: the command
    was asked for something it cannot do, so nothing is stored (exit 2)."""


class BrokerError(DealscoutError):
    """`--engine celery`: the broker (Redis) cannot be reached; the message names it."""


class BadPhoto(DealscoutError):
    """One photo cannot be used: zero bytes, not an image, too big, vanished, changed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ProviderError(DealscoutError):
    """A model call failed. `retryable` says whether trying again can help; `kind` is the
    class's own kind, or for a plain ProviderError one chosen by HTTP status."""

    KIND: ClassVar[ErrorKind | None] = None

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.kind: ErrorKind = self.KIND or kind_for_status(status)


class RateLimited(ProviderError):
    """429 on a per-minute quota; `retry_after` is the server's RetryInfo delay in seconds."""

    KIND = ErrorKind.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, retryable=True)
        self.retry_after = retry_after


class QuotaExhausted(ProviderError):
    """429 on a per-day quota: nothing more can be sent today."""

    KIND = ErrorKind.QUOTA_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, retryable=False)
        self.retry_after = retry_after


class KeyRejected(ProviderError):
    """The API rejected the key: every further call would fail the same way."""

    KIND = ErrorKind.KEY_REJECTED

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, status=status, retryable=False)


class ModelNotFound(ProviderError):
    """The API does not know the model name (404): every call to it would fail the same way."""

    KIND = ErrorKind.MODEL_NOT_FOUND

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, retryable=False)


class ProviderTimeout(ProviderError):
    """The call got no answer within its timeout."""

    KIND = ErrorKind.TIMEOUT

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, retryable=True)


class BadModelOutput(ProviderError):
    """The model answered, but not with JSON that fits the schema."""

    KIND = ErrorKind.BAD_OUTPUT

    def __init__(self, message: str, *, raw_text: str = "") -> None:
        super().__init__(message, status=200, retryable=True)
        self.raw_text = raw_text


class Blocked(ProviderError):
    """The model refused (safety block, no candidates); retrying the same photos will not help."""

    KIND = ErrorKind.BLOCKED

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200, retryable=False)


class LeaseLost(StoreError):
    """This process no longer holds the job's lease; its result was not recorded."""


class BadResponse(ProviderError):
    """The server answered, but not as the Gemini API does (a captive portal, a proxy page)."""

    KIND = ErrorKind.BAD_RESPONSE

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, retryable=True)


class ItemTimedOut(ProviderError):
    """The item took longer than its soft time limit (waiting for a permit does not count)."""

    KIND = ErrorKind.TIMEOUT

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, retryable=True)


class RemoteFailure(ProviderError):
    """A failure reported by a Celery worker or the fleet, carried back as its kind."""

    def __init__(self, kind: ErrorKind, message: str, *, retryable: bool) -> None:
        super().__init__(message, retryable=retryable)
        self.kind = kind


def kind_of(error: BaseException) -> ErrorKind:
    """The stored kind of any failure an attempt can end with."""
    if isinstance(error, ProviderError):
        return error.kind
    if isinstance(error, BadPhoto):
        return ErrorKind.BAD_PHOTO
    return ErrorKind.WORKER_ERROR
