"""`dealscout snap`: parse the flags, wire progress output, call `dealscout_cli.snap.snap`.

What a finished run prints (tables, batch report, failures) is in `render`; the live
progress (bar, lines, JSON events) is in `progress`. The options snap alone takes are
named here, so the command's signature reads as a list of them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import (
    EXIT_STOPPED,
    EXIT_USAGE,
    PATHS_HELP,
    DbOption,
    Group,
    GroupOption,
    JsonFlag,
    MaxSideOption,
    PricesOption,
    PricingModelOption,
    VisionModelOption,
    err,
    fail,
    guarded,
    plain,
    plural,
)
from dealscout_cli.costs import stale_prices_note

if TYPE_CHECKING:  # for annotations only: `dealscout --help` imports none of them
    from dealscout_cli.cli.progress import ScanCounter
    from dealscout_cli.config import Settings
    from dealscout_cli.events import Event
    from dealscout_cli.records import EnqueueReport
    from dealscout_cli.scan import ScanResult

SnapPathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="[PATHS]...",
        help=PATHS_HELP + " Without paths: process what the database already has queued "
        "(how a stopped run is resumed).",
        show_default=False,
    ),
]


class Engine(StrEnum):
    """`--engine`: who calls Gemini (`config.ENGINES` also has "batch", spelt `--batch`)."""

    LOCAL = "local"
    CELERY = "celery"


OfflineFlag = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Run against the built-in Gemini emulator: no key, no cost, placeholder listings marked offline.",
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar=config.ENV_BASE_URL,
        help="Gemini API base URL (a proxy, or `dealscout emulator`).",
    ),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=256,
        envvar=config.ENV_CONCURRENCY,
        help="Most items in flight at once; each model's limiter uses fewer when rate × latency needs fewer.",
    ),
]
RpmOption = Annotated[
    float | None,
    typer.Option(min=0.1, help="Requests per minute allowed per model (your quota)."),
]
TpmOption = Annotated[
    float | None, typer.Option(min=1, help="Input tokens per minute allowed per model.")
]
MaxRetriesOption = Annotated[
    int, typer.Option(min=0, max=10, help="Retries of one call on 429/5xx/timeouts.")
]
MaxAttemptsOption = Annotated[
    int, typer.Option(min=1, max=20, help="Attempts per item before it is marked failed.")
]
TimeoutOption = Annotated[float, typer.Option(min=1, help="Seconds one model call may take.")]
LeaseOption = Annotated[
    float,
    typer.Option(min=1, help="Seconds after which a killed run's items can be claimed again."),
]
SoftTimeLimitOption = Annotated[
    float,
    typer.Option(min=1, help="Seconds one item may take before it is stopped and retried later."),
]
GraceOption = Annotated[
    float,
    typer.Option(min=0, help="Seconds in-flight items get to finish after Ctrl-C/SIGTERM."),
]
ForceFlag = Annotated[
    bool, typer.Option("--force", help="Process items again even if they are done.")
]
QuietFlag = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print only failures and the exit code tells the rest (for cron)."
    ),
]
LogJsonFlag = Annotated[
    bool,
    typer.Option("--log-json", help="One JSON object per event instead of progress output."),
]
LogFileOption = Annotated[
    Path | None, typer.Option(help="Write progress/log records to this file instead of stderr.")
]
EngineOption = Annotated[
    Engine,
    typer.Option(
        case_sensitive=False,
        help="'local': this process calls Gemini. 'celery': Celery workers do (see README).",
    ),
]
BrokerOption = Annotated[
    str | None,
    typer.Option(
        envvar=config.ENV_BROKER, help="Redis URL of the Celery broker, for --engine celery."
    ),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        min=0,
        help="Stop claiming new items once the recorded spend (all runs) plus the items in "
        "flight could pass this many USD; exit code 3.",
    ),
]
BarcodesFlag = Annotated[
    bool,
    typer.Option(
        "--barcodes/--no-barcodes",
        help="Read UPC/EAN/ISBN barcodes from the photos locally and give them to the model.",
    ),
]
BatchFlag = Annotated[
    bool,
    typer.Option(
        "--batch",
        help="For cron: send queued items through Gemini Batch Mode (half price, results "
        "within 24 h). Each run collects finished batches and submits new ones; pending "
        "batches exit 0.",
    ),
]
GroundedPricesFlag = Annotated[
    bool,
    typer.Option(
        "--grounded-prices",
        help="Let the pricing call search the web (Google Search grounding); billed per "
        "request on top of tokens. Sources are kept with the price.",
    ),
]
MediaResolutionOption = Annotated[
    str | None,
    typer.Option(
        "--media-resolution",
        metavar="[low|medium|high]",
        help="Gemini 3: tokens per photo for identify (low 280, medium 560, high 1,120), "
        f"whatever its size. Default: {config.DEFAULT_MEDIA_RESOLUTION}.",
    ),
]
ConfirmGroupsFlag = Annotated[
    bool,
    typer.Option(
        "--confirm-groups",
        help="With --group auto: the vision model decides the boundaries the local signals "
        "are unsure of, on small thumbnails, in one cheap call (recorded and priced like "
        "every call; answers kept, so a rerun asks nothing).",
    ),
]
ThinkingOption = Annotated[
    str | None,
    typer.Option(
        "--thinking",
        metavar="[minimal|low|medium|high]",
        help="Gemini 3: how much both stages think (billed as output). Default: "
        f"{config.DEFAULT_IDENTIFY_THINKING} to identify, {config.DEFAULT_PRICE_THINKING} to price.",
    ),
]


def snap(
    paths: SnapPathsArgument = None,
    db: DbOption = Path(config.DEFAULT_DB),
    group: GroupOption = Group.PHOTO,
    offline: OfflineFlag = False,
    base_url: BaseUrlOption = None,
    vision_model: VisionModelOption = config.DEFAULT_VISION_MODEL,
    pricing_model: PricingModelOption = config.DEFAULT_PRICING_MODEL,
    concurrency: ConcurrencyOption = config.DEFAULT_CONCURRENCY,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    max_side: MaxSideOption = config.DEFAULT_MAX_SIDE,
    max_retries: MaxRetriesOption = config.DEFAULT_MAX_RETRIES,
    max_attempts: MaxAttemptsOption = config.DEFAULT_MAX_ATTEMPTS,
    timeout: TimeoutOption = config.DEFAULT_CALL_TIMEOUT,
    lease: LeaseOption = config.DEFAULT_LEASE_SECONDS,
    soft_time_limit: SoftTimeLimitOption = config.DEFAULT_SOFT_TIME_LIMIT,
    grace: GraceOption = config.DEFAULT_GRACE,
    force: ForceFlag = False,
    prices: PricesOption = None,
    quiet: QuietFlag = False,
    log_json: LogJsonFlag = False,
    log_file: LogFileOption = None,
    json_out: JsonFlag = False,
    engine: EngineOption = Engine.LOCAL,
    broker: BrokerOption = None,
    max_cost: MaxCostOption = None,
    barcodes: BarcodesFlag = True,
    batch: BatchFlag = False,
    grounded_prices: GroundedPricesFlag = False,
    media_resolution: MediaResolutionOption = None,
    thinking: ThinkingOption = None,
    confirm_groups: ConfirmGroupsFlag = False,
) -> None:
    """Scan photos, queue what is new, and turn each item into a draft listing.

    Items are keyed by their photos' content, so a rerun (or a rename) never pays
    twice; a killed run resumes where it stopped. Exit codes describe this run:
    0 all done (with --batch: or still pending in a batch), 1 items failed or
    files were skipped in this run, 2 usage error, 3 stopped early (daily quota,
    key rejected, model unknown, the API not answering, the database not
    writable, --max-cost reached, broker lost; with --batch: a batch could not
    be sent or polled, or ended without results), 130/143 interrupted.

    Without PATHS, processes what is already queued in --db: after a stop or
    Ctrl-C, `dealscout snap` (with the same --db, --offline, ...) resumes.

    Example: dealscout snap ./photos --group folder --offline
    """
    from dealscout_cli.budget import usd_to_micros
    from dealscout_cli.snap import snap as run_snap

    settings = guarded(lambda: config.resolve(
        db_path=db, offline=offline or None, base_url=base_url, vision_model=vision_model,
        pricing_model=pricing_model, concurrency=concurrency, rpm=rpm, tpm=tpm, max_side=max_side,
        max_retries=max_retries, max_attempts=max_attempts, call_timeout=timeout,
        lease_seconds=lease, soft_time_limit=soft_time_limit, grace=grace, prices_file=prices,
        barcodes=barcodes, engine=config.engine_for(engine, batch=batch), broker=broker,
        grounded_prices=grounded_prices or None, media_resolution=media_resolution,
        identify_thinking=thinking, price_thinking=thinking,
        max_cost_micro_usd=None if max_cost is None else usd_to_micros(max_cost),
    ).validated())  # fmt: skip
    paths = paths or []
    if not settings.offline and (note := stale_prices_note()):
        err.print(note, markup=False)  # once, before the run: its costs use these prices
    with _run_output(settings, paths, quiet=quiet, log_json=log_json, log_file=log_file) as output:
        result = guarded(lambda: run_snap(
            paths, settings, group=group.value, force=force, on_event=output.report,
            on_scanned=output.scanned, on_scanning=output.counter,
            confirm_groups=confirm_groups,
        ), store_error=EXIT_STOPPED)  # fmt: skip
        from dealscout_cli.cli.render import render_run

        render_run(result, quiet=quiet, json_out=json_out, log=output.log if log_json else None)
    raise typer.Exit(result.exit_code)


@dataclass
class RunOutput:
    """The three callbacks a run reports through while snap waits for it."""

    reporter: Any  # one of progress's reporters: called with each Event
    counter: "ScanCounter"
    quiet: bool
    log_json: bool
    scanning: bool = True  # False without paths: the run only processes the queue
    log_handle: IO[str] | None = None

    def report(self, event: "Event") -> None:
        """One event of the run. The run may start while the scan goes on: the scan's
        spinner gives way to the run's progress (which counts the photos read from then)."""
        from dealscout_cli.events import EventKind

        if event.kind == EventKind.RUN_STARTED:
            self.counter.close()
        self.reporter(event)

    def log(self, record: dict[str, Any]) -> None:
        """--log-json: one more JSON line where the events go (a summary, nothing to do)."""
        import json
        import sys
        import time

        out = self.log_handle or sys.stderr
        out.write(json.dumps({"ts": round(time.time(), 3), **record}, default=str) + "\n")
        out.flush()

    def scanned(self, found: "ScanResult", report: "EnqueueReport") -> None:
        """After the scan: what was skipped, then one line of what was found."""
        self.counter.close()
        for problem in found.problems:
            where = problem.place
            if self.log_json:
                self.log({"event": "skipped", "path": where, "reason": problem.reason})
            else:
                err.print(
                    f"[yellow]skipped[/] {plain(where)}: {plain(problem.reason)}",
                    markup=True,
                    highlight=False,
                )
        for warning in found.warnings:
            if not self.log_json:
                err.print(
                    f"[yellow]warning[/] {plain(warning.path)}: {plain(warning.reason)}",
                    markup=True,
                    highlight=False,
                )
        if self.quiet or self.log_json or not self.scanning:
            return
        if found.groupings:
            from dealscout_cli.grouping import summary_line

            err.print(
                f"grouped: {summary_line(found)} (`dealscout group` lists them)", highlight=False
            )
        err.print(
            f"found {plural(len(found.items), 'item')}: {report.new} new, "
            f"{report.already_done} already done, "
            f"{report.already_queued} queued, {report.failed_before} failed earlier"
            + (f", {report.requeued} re-queued (--force)" if report.requeued else "")
            + (
                f"; {report.redo_offline} offline placeholders queued again for the real model"
                if report.redo_offline
                else ""
            ),
            highlight=False,
        )


def _open_log(log_file: Path) -> IO[str]:
    """--log-file, opened for appending before any work starts, or one line saying why not."""
    try:
        return log_file.open("a", encoding="utf-8")
    except OSError as exc:
        fail(f"--log-file {log_file}: cannot write there ({exc.strerror or exc})", EXIT_USAGE)


@contextmanager
def _run_output(
    settings: "Settings", paths: list[Path], *, quiet: bool, log_json: bool, log_file: Path | None
) -> Iterator[RunOutput]:
    """Progress for the run's length; Ctrl-C before the run's own handlers exits 130."""
    from dealscout_cli.cli.progress import ScanCounter, make_reporter
    from dealscout_cli.snap import resume_command

    log_handle = _open_log(log_file) if log_file else None
    reporter = make_reporter(
        quiet=quiet, log_json=log_json, log_file=log_handle, console=err.console
    )
    counter = ScanCounter(err.console, enabled=bool(paths) and not (quiet or log_json or log_file))
    try:
        yield RunOutput(
            reporter,
            counter,
            quiet=quiet,
            log_json=log_json,
            scanning=bool(paths),
            log_handle=log_handle,
        )
    except KeyboardInterrupt:  # Ctrl-C while scanning or queueing, before the run's handlers
        counter.close()
        # The scan may not have queued everything yet: the same paths again (nothing is paid twice).
        again = resume_command(settings, paths)
        err.print(
            f"interrupted: nothing is lost (SQLite keeps what was saved); run `{plain(again)}`"
            " again to go on",
            highlight=False,
        )
        raise typer.Exit(130) from None
    finally:
        counter.close()
        reporter.close()
        if log_handle:
            log_handle.close()
