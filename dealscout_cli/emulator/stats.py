"""What the emulator has seen: requests per model and status, tokens, peaks, images.

`Emulator.stats()` and `GET /_emulator/stats` give the same snapshot. `images_seen`
counts every generateContent request that carried an image (keyed by the sha256 of
the decoded bytes), so a test can prove no photo was sent twice;
`max_requests_per_window` is the busiest `window_seconds` the emulator saw, per model
and overall, so a test can prove a client stayed under its rate limit; `prompts` is the text each
request carried, so a test can prove a seller's note reached the model.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .quota import SlidingWindow


@dataclass(frozen=True)
class StatsSnapshot:
    """A copy of the counters at one moment."""

    requests: int = 0
    requests_by_model: dict[str, int] = field(default_factory=dict)
    requests_by_status: dict[int, int] = field(default_factory=dict)
    requests_by_model_status: dict[str, dict[int, int]] = field(default_factory=dict)
    count_tokens_requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    window_seconds: float = 60.0
    max_requests_per_window: int = 0
    max_requests_per_window_by_model: dict[str, int] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    images_seen: dict[str, int] = field(default_factory=dict)
    images_answered: dict[str, int] = field(default_factory=dict)
    batch_jobs: int = 0  # batchGenerateContent calls accepted
    batch_requests: int = 0  # inlined requests inside them (not counted in `requests`)
    batch_requests_by_model: dict[str, int] = field(default_factory=dict)
    batch_polls: int = 0  # GET batches/{id}
    grounded_requests: int = 0  # requests (online or batched) with the google_search tool
    # the user text of each generateContent request, in arrival order (the last PROMPTS_KEPT)
    prompts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (status codes become string keys)."""
        data = asdict(self)
        data["requests_by_status"] = {str(k): v for k, v in self.requests_by_status.items()}
        data["requests_by_model_status"] = {
            model: {str(k): v for k, v in by_status.items()}
            for model, by_status in self.requests_by_model_status.items()
        }
        return data


PROMPTS_KEPT = 1000  # enough for any test; a long benchmark run stays small


class StatsRecorder:
    """Mutable counters behind a lock: written by the server thread, read from anywhere."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._by_model: Counter[str] = Counter()
            self._by_status: Counter[int] = Counter()
            self._by_model_status: defaultdict[str, Counter[int]] = defaultdict(Counter)
            self._count_tokens = 0
            self._tokens_in = 0
            self._tokens_out = 0
            self._tokens_by_model: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self._arrivals = SlidingWindow(self.window_seconds)
            self._arrivals_by_model: dict[str, SlidingWindow] = {}
            self._peak = 0
            self._peak_by_model: Counter[str] = Counter()
            self._rate_limited: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._images_seen: Counter[str] = Counter()
            self._images_answered: Counter[str] = Counter()
            self._batch_jobs = 0
            self._batch_requests: Counter[str] = Counter()
            self._batch_polls = 0
            self._grounded = 0
            self._prompts: deque[str] = deque(maxlen=PROMPTS_KEPT)

    def batch_created(self, model: str, requests: int, image_hashes: list[str]) -> None:
        with self._lock:
            self._batch_jobs += 1
            self._batch_requests[model] += requests
            self._images_seen.update(image_hashes)

    def batch_polled(self) -> None:
        with self._lock:
            self._batch_polls += 1

    def grounded(self) -> None:
        with self._lock:
            self._grounded += 1

    def arrival(self, model: str, now: float, image_hashes: list[str], prompt: str = "") -> None:
        """A generateContent request reached the model (key and body were valid)."""
        with self._lock:
            self._prompts.append(prompt)
            self._requests += 1
            self._by_model[model] += 1
            self._peak = max(self._peak, self._arrivals.add(now))
            window = self._arrivals_by_model.get(model)
            if window is None:
                window = self._arrivals_by_model[model] = SlidingWindow(self.window_seconds)
            self._peak_by_model[model] = max(self._peak_by_model[model], window.add(now))
            self._images_seen.update(image_hashes)

    def status(self, model: str | None, status: int) -> None:
        with self._lock:
            self._by_status[status] += 1
            if model is not None:
                self._by_model_status[model][status] += 1

    def answered(self, model: str, tokens_in: int, tokens_out: int, hashes: list[str]) -> None:
        with self._lock:
            self._tokens_in += tokens_in
            self._tokens_out += tokens_out
            self._tokens_by_model[model]["in"] += tokens_in
            self._tokens_by_model[model]["out"] += tokens_out
            self._images_answered.update(hashes)

    def rate_limited(self, kind: str) -> None:
        with self._lock:
            self._rate_limited[kind] += 1

    def fault(self, name: str) -> None:
        with self._lock:
            self._faults[name] += 1

    def count_tokens_call(self) -> None:
        with self._lock:
            self._count_tokens += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                requests=self._requests,
                requests_by_model=dict(self._by_model),
                requests_by_status=dict(self._by_status),
                requests_by_model_status={m: dict(c) for m, c in self._by_model_status.items()},
                count_tokens_requests=self._count_tokens,
                tokens_in=self._tokens_in,
                tokens_out=self._tokens_out,
                tokens_by_model={m: dict(c) for m, c in self._tokens_by_model.items()},
                window_seconds=self.window_seconds,
                max_requests_per_window=self._peak,
                max_requests_per_window_by_model=dict(self._peak_by_model),
                rate_limited=dict(self._rate_limited),
                faults=dict(self._faults),
                images_seen=dict(self._images_seen),
                images_answered=dict(self._images_answered),
                batch_jobs=self._batch_jobs,
                batch_requests=sum(self._batch_requests.values()),
                batch_requests_by_model=dict(self._batch_requests),
                batch_polls=self._batch_polls,
                grounded_requests=self._grounded,
                prompts=list(self._prompts),
            )
