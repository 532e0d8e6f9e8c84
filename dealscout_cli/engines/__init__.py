"""Engines: where an item's pipeline runs. The job lifecycle (`jobs`) is the same for all.

    local    an anyio pool in this process (`engines.local`)
    batch    Gemini Batch Mode, half price, answers within 24 h (`engines.batch`)
    celery   Celery workers over Redis (`distributed.coordinator`)

`snap` picks one from `ENGINES` by `Settings.engine`. Each meets the small `Engine`
protocol: run the queue under a `JobLifecycle` it is given, and say what else it has to
report. Which settings an engine cannot honour is `config.ENGINE_REFUSES`, checked by
`config.validate` before anything starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from dealscout_cli.config import OFFLINE_API_KEY, Settings

if TYPE_CHECKING:
    from dealscout_cli.engines.local import Feed
    from dealscout_cli.jobs import JobLifecycle
    from dealscout_cli.pipeline import PipelineConfig

# Pillow and zxing release the GIL while they decode: one thread more than there are cores
# keeps every core busy while the event loop does its share (requests, JSON, SQLite).
IMAGE_THREADS = (os.cpu_count() or 2) + 1
OFFLINE_BATCH_WAIT = 60.0  # the built-in emulator dies with this process: wait for its batches
OFFLINE_BATCH_SECONDS = 0.2


class Engine(Protocol):
    def check(self, settings: Settings) -> None:
        """Raise a DealscoutError, before any run is recorded, when the engine cannot start."""
        ...

    def run(self, lifecycle: JobLifecycle, settings: Settings, *, handle_signals: bool) -> Any:
        """Process the queue; the outcome is in `lifecycle.summary`. Returns what the engine
        has to say beyond it (Batch Mode: its `BatchReport`), or None."""
        ...


class LocalEngine:
    def check(self, settings: Settings) -> None:
        return None

    def run(
        self,
        lifecycle: JobLifecycle,
        settings: Settings,
        *,
        handle_signals: bool,
        feed: Feed | None = None,
    ) -> None:
        """`feed`: the scan still queueing items; the run ends only once it is done."""
        import anyio

        from dealscout_cli.engines.local import run_local

        with model_endpoint(settings) as endpoint:
            anyio.run(run_local, lifecycle, endpoint, handle_signals, feed)


class BatchEngine:
    def check(self, settings: Settings) -> None:
        return None

    def run(self, lifecycle: JobLifecycle, settings: Settings, *, handle_signals: bool) -> Any:
        import anyio

        from dealscout_cli.engines.batch import run_batch

        wait = OFFLINE_BATCH_WAIT if settings.offline else 0.0
        with model_endpoint(settings, batch_seconds=OFFLINE_BATCH_SECONDS) as endpoint:
            return anyio.run(run_batch, lifecycle, endpoint, wait)


class FleetEngine:
    def check(self, settings: Settings) -> None:
        from dealscout_cli.distributed.coordinator import check_broker

        assert settings.broker, "config.validate requires a broker for --engine celery"
        check_broker(settings.broker)

    def run(self, lifecycle: JobLifecycle, settings: Settings, *, handle_signals: bool) -> None:
        from dealscout_cli.distributed.coordinator import run_fleet

        run_fleet(lifecycle, settings, handle_signals=handle_signals)


ENGINES: dict[str, type[Engine]] = {
    "local": LocalEngine,
    "batch": BatchEngine,
    "celery": FleetEngine,
}


@contextlib.contextmanager
def model_endpoint(settings: Settings, **emulator_options: Any) -> Iterator[Settings]:
    """The settings a run calls the model with: with --offline, an in-process emulator's
    (stopped when the run ends); otherwise as given."""
    if not settings.offline:
        yield settings
        return
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    emulator = Emulator(EmulatorConfig(seed=1, **emulator_options))
    emulator.start()
    try:
        yield settings.with_(base_url=emulator.url, api_key=OFFLINE_API_KEY)
    finally:
        emulator.stop()


def pipeline_config(settings: Settings) -> PipelineConfig:
    from dealscout_cli.pipeline import PipelineConfig

    return PipelineConfig(
        vision_model=settings.vision_model,
        pricing_model=settings.pricing_model,
        max_side=settings.max_side,
        offline=settings.offline,
        read_barcodes=settings.barcodes,
        grounded_prices=settings.grounded_prices,
        media_resolution=settings.media_resolution,
        identify_thinking=settings.identify_thinking,
        price_thinking=settings.price_thinking,
    )
