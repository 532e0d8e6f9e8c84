"""The `dealscout` command: parse, call the core, render. No SQL, no retry policy, no prompts.

Results go to stdout (tables, or JSON with --json); progress and errors go to
stderr. Known errors become one red line and an exit code; anything else is a
bug and keeps its traceback (always under pytest or with DEALSCOUT_DEBUG=1).
"""

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dealscout_cli import config
from dealscout_cli.costs import format_usd
from dealscout_cli.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table

app = typer.Typer(
    help="Turn folders of product photos into draft marketplace listings with Gemini.\n\n"
    "Start with: dealscout snap ./photos --offline   (no API key needed: runs against the built-in emulator)",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never show the API key
    context_settings={"help_option_names": ["-h", "--help"]},
    # Plain click help: Typer's rich help imports rich.markdown, rich.traceback and pygments
    # (~100 ms), a third of `dealscout --help`, whose start-up goal is 0.3 s.
    rich_markup_mode=None,
)

from dealscout_cli.cli.options import (  # noqa: E402
    EXIT_USAGE,
    DbOption,
    GroupOption,
    JsonFlag,
    MaxSideOption,
    PathsArgument,
    PricesOption,
    PricingModelOption,
    VisionModelOption,
    check_group,
    err,
    new_table,
    out,
    plain,
    print_json,
)
from dealscout_cli.cli.options import fail as _fail  # noqa: E402
from dealscout_cli.cli.options import guarded as _guarded  # noqa: E402


def _open_store(db: Path, *, create: bool = False) -> Any:
    from dealscout_cli.store import Store

    return Store.open(db, create=create)


# ---------------------------------------------------------------- snap


@app.command(short_help="Turn photos into draft listings; resumable (try: --offline).")
def snap(
    paths: PathsArgument,
    db: DbOption = Path(config.DEFAULT_DB),
    group: GroupOption = "photo",
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Run against the built-in Gemini emulator: no key, no cost, placeholder listings marked offline.",
        ),
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            envvar=config.ENV_BASE_URL,
            help="Gemini API base URL (a proxy, or `dealscout emulator`).",
        ),
    ] = None,
    vision_model: VisionModelOption = config.DEFAULT_VISION_MODEL,
    pricing_model: PricingModelOption = config.DEFAULT_PRICING_MODEL,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            envvar=config.ENV_CONCURRENCY,
            help="Most items in flight at once; each model's limiter uses fewer when rate × latency needs fewer.",
        ),
    ] = config.DEFAULT_CONCURRENCY,
    rpm: Annotated[
        float | None,
        typer.Option(min=0.1, help="Requests per minute allowed per model (your quota)."),
    ] = None,
    tpm: Annotated[
        float | None, typer.Option(min=1, help="Input tokens per minute allowed per model.")
    ] = None,
    max_side: MaxSideOption = config.DEFAULT_MAX_SIDE,
    max_retries: Annotated[
        int, typer.Option(min=0, max=10, help="Retries of one call on 429/5xx/timeouts.")
    ] = config.DEFAULT_MAX_RETRIES,
    max_attempts: Annotated[
        int, typer.Option(min=1, max=20, help="Attempts per item before it is marked failed.")
    ] = config.DEFAULT_MAX_ATTEMPTS,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds one model call may take.")
    ] = config.DEFAULT_CALL_TIMEOUT,
    lease: Annotated[
        float,
        typer.Option(min=1, help="Seconds after which a killed run's items can be claimed again."),
    ] = config.DEFAULT_LEASE_SECONDS,
    soft_time_limit: Annotated[
        float,
        typer.Option(
            min=1, help="Seconds one item may take before it is stopped and retried later."
        ),
    ] = config.DEFAULT_SOFT_TIME_LIMIT,
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds in-flight items get to finish after Ctrl-C/SIGTERM."),
    ] = config.DEFAULT_GRACE,
    force: Annotated[
        bool, typer.Option("--force", help="Process items again even if they are done.")
    ] = False,
    prices: PricesOption = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only failures and the exit code tells the rest (for cron)."
        ),
    ] = False,
    log_json: Annotated[
        bool,
        typer.Option("--log-json", help="One JSON object per event instead of progress output."),
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="Write progress/log records to this file instead of stderr.")
    ] = None,
    json_out: JsonFlag = False,
    engine: Annotated[
        str,
        typer.Option(
            help="'local': this process calls Gemini. 'celery': Celery workers do (see README)."
        ),
    ] = "local",
    broker: Annotated[
        str | None,
        typer.Option(
            envvar=config.ENV_BROKER, help="Redis URL of the Celery broker, for --engine celery."
        ),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Stop claiming new items once the recorded spend (all runs) plus the items in "
            "flight could pass this many USD; exit code 3.",
        ),
    ] = None,
    barcodes: Annotated[
        bool,
        typer.Option(
            "--barcodes/--no-barcodes",
            help="Read UPC/EAN/ISBN barcodes from the photos locally and give them to the model.",
        ),
    ] = True,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="For cron: send queued items through Gemini Batch Mode (half price, results "
            "within 24 h). Each run collects finished batches and submits new ones; pending "
            "batches exit 0.",
        ),
    ] = False,
    grounded_prices: Annotated[
        bool,
        typer.Option(
            "--grounded-prices",
            help="Let the pricing call search the web (Google Search grounding); billed per "
            "request on top of tokens. Sources are kept with the price.",
        ),
    ] = False,
) -> None:
    """Scan photos, queue what is new, and turn each item into a draft listing.

    Items are keyed by their photos' content, so a rerun (or a rename) never pays
    twice; a killed run resumes where it stopped. Exit codes: 0 all done
    (with --batch: or still pending in a batch), 1 some items failed, 2 usage
    error, 3 stopped early (daily quota, key rejected, model unknown, broker lost;
    with --batch: a batch could not be sent or polled, or ended without results),
    130/143 interrupted.

    Example: dealscout snap ./photos --group folder --offline
    """
    check_group(group)
    settings = config.resolve(
        db_path=db,
        offline=offline or None,
        base_url=base_url,
        vision_model=vision_model,
        pricing_model=pricing_model,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        max_side=max_side,
        max_retries=max_retries,
        max_attempts=max_attempts,
        call_timeout=timeout,
        lease_seconds=lease,
        soft_time_limit=soft_time_limit,
        grace=grace,
        prices_file=prices,
        barcodes=barcodes,
    )
    if engine not in ("local", "celery"):
        _fail(f"--engine must be 'local' or 'celery', not {engine!r}", EXIT_USAGE)
    if engine == "celery" and not broker:
        _fail(
            "--engine celery needs --broker redis://HOST:6379/0 (or DEALSCOUT_BROKER)", EXIT_USAGE
        )
    if engine == "local" and not settings.offline and not settings.api_key:
        _fail(config.NO_API_KEY, EXIT_USAGE)
    from dealscout_cli.budget import usd_to_micros
    from dealscout_cli.cli.progress import ScanCounter, make_reporter
    from dealscout_cli.snap import snap as run_snap

    max_cost_micros = None if max_cost is None else _guarded(lambda: usd_to_micros(max_cost))
    log_handle = log_file.open("a", encoding="utf-8") if log_file else None
    reporter = make_reporter(quiet=quiet, log_json=log_json, log_file=log_handle, console=err.console)
    counter = ScanCounter(err.console, enabled=not (quiet or log_json or log_file))

    def scanned(found: Any, report: Any) -> None:
        counter.close()
        for problem in found.problems:
            where = f"{problem.path}:{problem.line}" if problem.line else problem.path
            if not log_json:
                err.print(
                    f"[yellow]skipped[/] {plain(where)}: {plain(problem.reason)}",
                    markup=True,
                    highlight=False,
                )
        if quiet or log_json:
            return
        err.print(
            f"found {len(found.items)} items: {report.new} new, {report.already_done} already done, "
            f"{report.already_queued} queued, {report.failed_before} failed earlier"
            + (f", {report.requeued} re-queued (--force)" if report.requeued else ""),
            highlight=False,
        )

    try:
        result = _guarded(
            lambda: run_snap(
                paths,
                settings,
                group=group,
                force=force,
                on_event=reporter,
                on_scanned=scanned,
                on_scanning=counter,
                engine=engine,
                broker=broker,
                max_cost_micro_usd=max_cost_micros,
                batch=batch,
                grounded_prices=grounded_prices,
            )
        )
    except KeyboardInterrupt:  # Ctrl-C while scanning or queueing, before the run's handlers
        counter.close()
        err.print("interrupted: nothing is lost (SQLite keeps what was saved); run snap again")
        raise typer.Exit(130) from None
    finally:
        counter.close()
        reporter.close()
        if log_handle:
            log_handle.close()
    if result.batch is not None:
        _render_batch(result, quiet=quiet, json_out=json_out)
    else:
        _render_snap(result, settings, quiet=quiet, json_out=json_out)
    raise typer.Exit(result.exit_code)


def _render_batch(result: Any, *, quiet: bool, json_out: bool) -> None:
    """--batch: what was collected, what was submitted, what is still pending."""
    report, summary = result.batch, result.summary
    if json_out:
        payload = {
            "items_found": len(result.scan.items),
            "new": result.queued.new,
            "already_done": result.queued.already_done,
            "batch": {
                "submitted": report.submitted,
                "pending": report.pending,
                "collected": report.collected,
                "done": report.done,
                "failed": report.failed,
                "requeued": report.requeued,
                "calls": report.calls,
                "cost_usd": report.cost_micro_usd / 1_000_000,
                "errors": report.errors,
                "stop_reason": report.stop_reason,
            },
            "failed": result.failed_in_batch,
            "offline": result.offline,
            "exit_code": result.exit_code,
        }
        print_json(payload)
        return
    for problem in report.errors:
        err.print(f"[yellow]batch:[/] {plain(problem)}", highlight=False)
    if report.stop_reason:
        err.print(f"[yellow]stopped early:[/] {plain(report.stop_reason)}", highlight=False)
    if not quiet:
        for batch in report.collected:
            err.print(
                f"collected {batch['name']} ({batch['stage']}, {batch['items']} items, "
                f"{batch['state']})",
                highlight=False,
            )
        if report.calls:
            err.print(
                f"{report.done} listings written, {report.failed} failed; {report.calls} batched "
                f"calls cost {format_usd(report.cost_micro_usd)} (batch price)",
                highlight=False,
            )
        _render_made(summary, offline=result.offline)
        for batch in report.submitted:
            err.print(
                f"submitted {batch['name']} ({batch['stage']}, {batch['items']} items)",
                highlight=False,
            )
        waiting = len(report.pending)
        if waiting:
            err.print(
                f"batch submitted; {waiting} batch(es) pending: run again later to collect",
                highlight=False,
            )
        elif not report.collected and not report.errors:
            err.print("nothing to do: no queued items and no open batches; no calls made")
    if result.failed_in_batch and not quiet:
        err.print(f"[red]{len(result.failed_in_batch)} items failed or were skipped:[/]")
        for failure in result.failed_in_batch[:20]:
            err.print(f"  item {failure['item_id']}: {failure['error'] or ''}", markup=False)


def _render_snap(result: Any, settings: Any, *, quiet: bool, json_out: bool) -> None:
    summary = result.summary
    if json_out:
        payload = {
            "items_found": len(result.scan.items),
            "new": result.queued.new,
            "already_done": result.queued.already_done,
            "problems": [
                {"path": p.path, "line": p.line, "reason": p.reason} for p in result.scan.problems
            ],
            "run": None
            if summary is None
            else {
                "run_id": summary.run_id,
                "done": summary.done,
                "failed": summary.failed,
                "retried": summary.retried,
                "released": summary.released,
                "calls": summary.calls,
                "cost_usd": summary.cost_micro_usd / 1_000_000,
                "elapsed_s": round(summary.elapsed, 3),
                "stop_reason": summary.stop_reason,
            },
            "failed": result.failed_in_batch,
            "offline": result.offline,
            "exit_code": result.exit_code,
        }
        print_json(payload)
        return
    if summary is None:
        if not quiet:
            err.print(
                "nothing to do: every item is already done or failed; no calls made "
                "(`dealscout retry` re-queues failed items, `--force` redoes done ones)"
            )
    elif not quiet:
        table = new_table(
            title="snap" + (" (offline: emulator, not a real model)" if result.offline else "")
        )
        for column in (
            "done",
            "failed",
            "retry later",
            "released",
            "calls",
            "cost",
            "time",
            "items/s",
        ):
            table.add_column(column, justify="right")
        rate = summary.done / summary.elapsed if summary.elapsed else 0.0
        table.add_row(
            str(summary.done),
            str(summary.failed),
            str(summary.retried),
            str(summary.released),
            str(summary.calls),
            format_usd(summary.cost_micro_usd),
            f"{summary.elapsed:.1f} s",
            f"{rate:.2f}",
        )
        out.print(table)
        _render_made(summary, offline=result.offline)
        if summary.stop_reason and "--max-cost" in summary.stop_reason:
            err.print(f"[yellow]stopped early:[/] {plain(summary.stop_reason)}")
        elif summary.stop_reason:
            err.print(
                f"[yellow]stopped early:[/] {plain(summary.stop_reason)}; "
                "run `dealscout snap` again to resume"
            )
    if result.failed_in_batch and not quiet:
        err.print(f"[red]{len(result.failed_in_batch)} items failed or were skipped:[/]")
        for failure in result.failed_in_batch[:20]:
            where = failure.get("first_photo") or failure.get("source") or ""
            error = failure["error"] or ""
            if where and where in error:
                where = ""  # BadPhoto messages already start with the file
            err.print(
                f"  item {failure['item_id']}: {where + ': ' if where else ''}{error}", markup=False
            )
        if len(result.failed_in_batch) > 20:
            err.print(
                f"  ... and {len(result.failed_in_batch) - 20} more (`dealscout status --json`)"
            )
        err.print(
            "  `dealscout retry` re-queues failed items whose cause can pass (rate limits, timeouts)"
        )


def _render_made(summary: Any, *, offline: bool) -> None:
    if not summary.done_items:
        return
    made = new_table(
        title="listings made"
        + (" [offline placeholders]" if offline else "")
        + (
            f" (first {len(summary.done_items)} of {summary.done})"
            if summary.done > len(summary.done_items)
            else ""
        )
    )
    made.add_column("id", justify="right", no_wrap=True)
    made.add_column("from", overflow="fold")
    made.add_column("title", ratio=1)
    made.add_column("condition", no_wrap=True)
    made.add_column("price", justify="right", no_wrap=True)
    for row in summary.done_items:
        made.add_row(
            str(row["item_id"]),
            row["label"],
            row["title"],
            row["condition"],
            f"{row['price']:.2f} {row['currency']}",
        )
    out.print(made)
    out.print(
        "`dealscout listings --item ID` shows one in full; `dealscout export` writes them out"
    )


# ---------------------------------------------------------------- status


@app.command(short_help="Items by state, throughput, cost, last errors (--watch).")
def status(
    db: DbOption = Path(config.DEFAULT_DB),
    json_out: JsonFlag = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh every few seconds until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    broker: Annotated[
        str | None,
        typer.Option(
            envvar=config.ENV_BROKER,
            help="Also show the Celery fleet: workers, tasks in flight, queue depth.",
        ),
    ] = None,
) -> None:
    """Where the work stands: items by state, throughput, cost so far, last errors.

    Reads the database only; safe to run while `snap` is working.

    Example: dealscout status --watch
    """
    from dealscout_cli.status import status_report

    def once() -> dict[str, Any]:
        with _open_store(db) as store:
            report = status_report(store, now=time.time())
        if broker:
            from dealscout_cli.distributed.status import fleet_status

            report["fleet"] = fleet_status(broker)
        return report

    if not watch:
        report = _guarded(once)
        if json_out:
            print_json(report)
        else:
            _render_status(report)
        return
    from rich.live import Live

    try:
        with Live(console=out.console, auto_refresh=False) as live:
            while True:
                live.update(_status_table(_guarded(once)), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _status_table(report: dict[str, Any]) -> "Table":
    counts = report["counts"]
    table = new_table(title=f"dealscout status: {report['database']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("items", str(report["items"]))
    for state in ("done", "queued", "running", "failed", "skipped"):
        table.add_row(f"  {state}", str(counts[state]))
    if counts.get("batched"):  # only after `snap --batch`: waiting on a Gemini batch job
        table.add_row("  batched", f"{counts['batched']} (the next `snap --batch` collects them)")
    table.add_row(
        "throughput", f"{report['throughput_items_per_minute']:.1f} items/min (last 5 min)"
    )
    if report["eta"]:
        table.add_row("eta", report["eta"])
    table.add_row(
        "calls",
        f"{report['calls']} ({report['input_tokens']:,} in / {report['output_tokens']:,} out tokens)",
    )
    cost = format_usd(report["cost_micro_usd"])
    if report["unpriced_calls"]:
        cost += f" (+{report['unpriced_calls']} calls to models without a price; see --prices)"
    table.add_row("cost", cost)
    for model in report["models_last_minute"]:
        table.add_row(
            f"  {model['model']}",
            f"{model['requests']} req last min, {model['rate_limited'] or 0} × 429, "
            f"{model['mean_latency_ms']} ms mean",
        )
    for limiter in report["limiters"]:
        allowed = f"{limiter['rpm_limit']:.0f} rpm" if limiter["rpm_limit"] else "no limit yet"
        paused = f", paused {limiter['paused_until']:.0f} s" if limiter["paused_until"] else ""
        table.add_row(
            f"  {limiter['model']} (run {limiter['run_id']})",
            f"{allowed}{' adaptive' if limiter['adaptive'] else ''}, {limiter['in_flight']} in flight "
            f"of {limiter['concurrency_cap']}, {limiter['rate_limited_total']} × 429{paused}",
        )
    table.add_row("active runs", str(report["active_runs"]))
    fleet = report.get("fleet")
    if fleet is not None:
        if not fleet["reachable"]:
            table.add_row("fleet", f"{fleet['broker']}: {fleet['error']}")
        else:
            table.add_row(
                "fleet",
                f"{len(fleet['workers'])} workers, {fleet['tasks_in_flight']} tasks in flight, "
                f"{fleet['queue_depth']} queued in the broker",
            )
            for worker in fleet["workers"]:
                table.add_row(
                    f"  {worker['name']}",
                    f"{worker['active']} active, {worker['reserved']} reserved",
                )
    if report["offline_listings"]:
        table.add_row(
            "offline", f"{report['offline_listings']} listings made by the emulator (placeholders)"
        )
    for error in report["last_errors"]:
        table.add_row(f"  item {error['item_id']}", f"{error['state']}: {error['error']}")
    return table


def _render_status(report: dict[str, Any]) -> None:
    out.print(_status_table(report))


# ---------------------------------------------------------------- listings


@app.command(short_help="The drafts made so far (--item ID shows one in full).")
def listings(
    db: DbOption = Path(config.DEFAULT_DB),
    item: Annotated[
        int | None, typer.Option("--item", help="Show one item in full: photos, calls, cost.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """The draft listings made so far.

    Example: dealscout listings --item 3
    """

    def load() -> tuple[list[Any], list[dict[str, Any]]]:
        with _open_store(db) as store:
            found = store.listings(item_id=item)
            if item is not None and not found:
                store.item(item)  # raises "no item with id" when it does not exist
                raise UsageError(f"item {item} has no listing yet; `dealscout status` shows why")
            calls = store.calls_for_item(item) if item is not None else []
            return found, calls

    found, calls = _guarded(load)
    if json_out:
        payload: Any = [listing.model_dump(mode="json") for listing in found]
        if item is not None:
            payload = {**payload[0], "calls": calls}
        print_json(payload)
        return
    if item is not None:
        _render_one_listing(found[0], calls)
        return
    if not found:
        err.print("no listings yet: run `dealscout snap PHOTOS` first")
        return
    table = new_table(title=f"{len(found)} listings")
    # The SKU and the numbers are what a seller copies: they never wrap or get cut; the
    # title takes what width is left.
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("sku", no_wrap=True)
    table.add_column("title", ratio=1)
    table.add_column("condition", no_wrap=True)
    table.add_column("price", justify="right", no_wrap=True)
    table.add_column("photos", justify="right", no_wrap=True)
    warned = any(listing.quality_warnings for listing in found)
    if warned:  # photo-quality warnings: a column only when there is one to show
        table.add_column("warnings", justify="right", no_wrap=True)
    for listing in found:
        price = f"{listing.price.suggested:.2f} {listing.price.currency}" if listing.price else "-"
        title = listing.identification.title + (" [offline]" if listing.offline else "")
        cells = [
            str(listing.item_id),
            listing.sku,
            title,
            listing.identification.condition.value,
            price,
            str(len(listing.photos)),
        ]
        if warned:
            cells.append(str(len(listing.quality_warnings)) if listing.quality_warnings else "")
        table.add_row(*cells)
    out.print(table)


def _render_one_listing(listing: Any, calls: list[dict[str, Any]]) -> None:
    ident = listing.identification
    table = new_table(
        title=f"item {listing.item_id} · {listing.sku}" + (" · offline" if listing.offline else ""),
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("title", ident.title)
    table.add_row("condition", f"{ident.condition.value} (eBay {ident.ebay_condition_id})")
    table.add_row("brand / model", f"{ident.brand or '-'} / {ident.model or '-'}")
    table.add_row("category", ident.category)
    if listing.price:
        p = listing.price
        table.add_row(
            "price", f"{p.low:.2f} – {p.suggested:.2f} – {p.high:.2f} {p.currency}: {p.rationale}"
        )
    table.add_row("description", ident.description)
    if ident.defects:
        table.add_row("defects", "; ".join(ident.defects))
    for photo in listing.photos:
        table.add_row("photo", photo.path)
    for warning in listing.quality_warnings:
        table.add_row("warning", warning)
    table.add_row(
        "prompt", f"{listing.prompt_version} ({listing.vision_model}, {listing.pricing_model})"
    )
    total = 0
    for call in calls:
        total += call["cost_micro_usd"] or 0
        table.add_row(
            f"call {call['stage']}",
            f"{call['model']} #{call['attempt']} {call['outcome']} {call['latency_ms']} ms "
            f"{call['input_tokens'] or 0}+{call['output_tokens'] or 0} tok {format_usd(call['cost_micro_usd'])}",
        )
    table.add_row("cost", format_usd(total))
    out.print(table)


# ---------------------------------------------------------------- export


@app.command(short_help="Write the listings as csv, jsonl, ebay, shopify or meta.")
def export(
    db: DbOption = Path(config.DEFAULT_DB),
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="csv, jsonl, ebay (Seller Hub drafts), shopify, meta."),
    ] = "csv",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write; standard output when omitted."),
    ] = None,
    photo_base_url: Annotated[
        str | None,
        typer.Option(
            help="URL prefix where your photos are hosted; each photo's path below "
            "--photo-root is appended (upload that folder as it is)."
        ),
    ] = None,
    photo_root: Annotated[
        str | None,
        typer.Option(
            help="The folder you upload the photos from. Default: the deepest folder holding "
            "every exported photo (for a flat folder, the URLs end in plain file names)."
        ),
    ] = None,
    include_offline: Annotated[
        bool,
        typer.Option(
            "--include-offline",
            help="Also export listings made by the emulator (marketplace formats skip them).",
        ),
    ] = False,
) -> None:
    """Write the listings in a format a marketplace or a script can take.

    Example: dealscout export --format ebay --photo-base-url https://example.com/photos/ -o ebay.csv
    """
    from dealscout_cli.export import ExportFormat, ExportOptions, check_options, export_listings

    try:
        fmt = ExportFormat(format)
    except ValueError:
        _fail(
            f"unknown --format {format!r}; choose one of {', '.join(f.value for f in ExportFormat)}",
            EXIT_USAGE,
        )

    def run() -> Any:
        with _open_store(db) as store:
            found = store.listings()
        # Photos are stored with absolute paths (as `scan` found them): so is the root.
        root = os.path.abspath(os.path.expanduser(photo_root)) if photo_root else None
        options = ExportOptions(
            photo_base_url=photo_base_url, photo_root=root, include_offline=include_offline
        )
        check_options(fmt, options, found)  # before -o is opened: a refusal leaves no empty file
        if output is None:
            return export_listings(found, fmt, sys.stdout, options)
        with output.open("w", encoding="utf-8", newline="") as handle:
            return export_listings(found, fmt, handle, options)

    report = _guarded(run)
    for sku, reason in report.skipped:
        err.print(f"skipped {sku}: {reason}", markup=False)
    for note in getattr(report, "notes", []) or []:
        err.print(f"note: {note}", markup=False)
    if output is not None:
        err.print(f"wrote {report.written} listings to {plain(output)}")


# ---------------------------------------------------------------- retry


@app.command(short_help="Put failed items back in the queue for the next snap.")
def retry(
    db: DbOption = Path(config.DEFAULT_DB),
    all_items: Annotated[
        bool, typer.Option("--all", help="Every failed item, whatever the cause.")
    ] = False,
    item: Annotated[
        list[int] | None, typer.Option("--item", help="This item id (repeatable).")
    ] = None,
    error_kind: Annotated[
        str | None,
        typer.Option(help="Only failures of this kind (rate_limited, timeout, bad_output, ...)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Put failed items back in the queue; the next `snap` processes them.

    Without options, re-queues the failures whose cause can pass (rate limits,
    timeouts, server errors). Finished stages are kept: an item whose
    identification succeeded is only priced again.

    Example: dealscout retry --error-kind rate_limited && dealscout snap ./photos
    """

    def run() -> int:
        from dealscout_cli.store import Store

        with Store.open(db, create=False) as store:
            now = time.time()
            if item or error_kind or all_items:
                return store.requeue_failed(now=now, item_ids=item or None, error_kind=error_kind)
            return store.requeue_retryable(now=now)

    count = _guarded(run)
    if json_out:
        print_json({"requeued": count})
    else:
        out.print(
            f"{count} items back in the queue"
            + ("; run `dealscout snap PHOTOS` to process them" if count else "")
        )


# ---------------------------------------------------------------- emulator


@app.command(short_help="Run a local Gemini API stand-in with limits and faults.")
def emulator(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8089,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    rpm: Annotated[
        float | None, typer.Option(help="Requests per minute per model before 429s.")
    ] = None,
    tpm: Annotated[
        float | None, typer.Option(help="Input tokens per minute per model before 429s.")
    ] = None,
    rpd: Annotated[
        int | None, typer.Option(help="Requests per day per model before daily-quota 429s.")
    ] = None,
    latency: Annotated[float, typer.Option(help="Seconds each answer takes (mean).")] = 0.0,
    latency_dist: Annotated[str, typer.Option(help="fixed, uniform or lognormal.")] = "fixed",
    error_rate: Annotated[
        str | None, typer.Option(help="Injected errors, e.g. 429=0.1,503=0.02.")
    ] = None,
    drop_rate: Annotated[
        float, typer.Option(help="Share of requests whose connection is dropped.")
    ] = 0.0,
    malformed_rate: Annotated[
        float, typer.Option(help="Share of 200s with malformed JSON text.")
    ] = 0.0,
    max_tokens_rate: Annotated[
        float, typer.Option(help="Share of 200s cut off with finishReason MAX_TOKENS.")
    ] = 0.0,
    safety_rate: Annotated[float, typer.Option(help="Share of requests blocked for SAFETY.")] = 0.0,
    trickle_rate: Annotated[
        float, typer.Option(help="Share of responses sent slowly, byte by byte.")
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(help="Seed for every random choice (same seed, same answers).")
    ] = 1,
    api_key: Annotated[
        str | None, typer.Option(help="Accept only this key (default: any non-empty key).")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Serve only these models (comma-separated); others get Google's 404, as an "
            "unknown or retired model name does. Default: any name."
        ),
    ] = None,
) -> None:
    """Run a local stand-in for the Gemini API, with rate limits and fault injection.

    Point dealscout (or any google-genai client) at it with
    --base-url http://127.0.0.1:PORT. Stats: GET /_emulator/stats.

    Example: dealscout emulator --port 8089 --rpm 60 --latency 0.8 --error-rate 429=0.1,503=0.02
    """
    from dealscout_cli.emulator import EmulatorConfig, parse_error_rates, parse_models, serve

    try:
        rates = parse_error_rates(error_rate) if error_rate else {}
        cfg = EmulatorConfig(
            seed=seed,
            rpm=rpm,
            tpm=tpm,
            rpd=rpd,
            latency=latency,
            latency_dist=latency_dist,
            error_rates=rates,
            drop_rate=drop_rate,
            trickle_rate=trickle_rate,
            malformed_rate=malformed_rate,
            max_tokens_rate=max_tokens_rate,
            safety_rate=safety_rate,
            api_key=api_key,
            models=parse_models(models) if models is not None else None,
        )
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)

    def ready(url: str) -> None:
        err.print(f"Gemini API emulator on {url}  (Ctrl-C stops; stats at {url}/_emulator/stats)")

    try:
        serve(cfg, host=host, port=port, on_ready=ready)
    except OSError as exc:
        _fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "pick another --port (0 picks a free one)"
        )


from dealscout_cli.cli.worker import worker as _worker  # noqa: E402 (Celery loads lazily)
from dealscout_cli.cli.estimate import estimate_command  # noqa: E402 (Pillow loads lazily)

app.command("worker", short_help="Run a Celery worker for snap --engine celery.")(_worker)
app.command("estimate", short_help="Predict calls, tokens and cost; calls no model.")(estimate_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
