"""What the commands print: result tables on stdout, notes and failures on stderr, `--json` payloads.

Rich is imported when the first table is drawn (`new_table`), so a `--json` run never loads
it. Every function here takes what the core returned and only formats it. Text from outside
(titles, file names, server messages) is shown with its control characters escaped: table
cells go through `_row`, lines on stderr through `plain` or `printable` (see `options`).
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dealscout_cli.cli.options import err, new_table, out, plain, plural, print_json
from dealscout_cli.costs import format_usd
from dealscout_cli.text import printable

if TYPE_CHECKING:
    from rich.table import Table

    from dealscout_cli.estimate import Estimate
    from dealscout_cli.jobs import RunSummary
    from dealscout_cli.models import Listing
    from dealscout_cli.snap import SnapResult
    from dealscout_cli.store.reviews import Revision


def _row(table: "Table", *cells: str, style: str | None = None, multiline: bool = False) -> None:
    """A table row whose cells may hold outside text: each shown with `printable`. The
    tables are printed on `out`, which reads no markup, so "[offline]" needs no escaping;
    `multiline` keeps the newlines of a cell that has a row of its own (a description)."""
    table.add_row(*(printable(cell, multiline=multiline) for cell in cells), style=style)


# ---------------------------------------------------------------- snap

# `--log-json`: what a finished run says goes as JSON lines too, where the events go.
LogRecord = Callable[[dict[str, Any]], None]


def render_run(
    result: "SnapResult", *, quiet: bool, json_out: bool, log: LogRecord | None = None
) -> None:
    """What a finished `snap` prints: a batch report with --batch, else the run's summary.
    With `log` (--log-json) the notes on stderr are JSON lines instead of text."""
    if result.batch is not None:
        render_batch(result, quiet=quiet, json_out=json_out, log=log)
    else:
        render_snap(result, quiet=quiet, json_out=json_out, log=log)


def render_snap(
    result: "SnapResult", *, quiet: bool, json_out: bool, log: LogRecord | None = None
) -> None:
    """A local or fleet run: the summary table, the listings made, what failed."""
    summary = result.summary
    if json_out:
        print_json(_snap_payload(result))
    if summary is None:
        _render_nothing_to_do(result, quiet=quiet or json_out, log=log)
    elif not quiet and not json_out:
        out.print(_summary_table(summary, offline=result.offline))
        render_made(summary, offline=result.offline)
    if summary is not None and summary.stop_reason:
        # A stop is a failure: --quiet (cron) still gets its one line, on stderr; --json has it
        _render_stop(result, quiet=json_out, log=log)
    if result.failed_in_batch and not quiet:
        _render_failures(result, log=log, json_out=json_out)


def _render_nothing_to_do(result: "SnapResult", *, quiet: bool, log: LogRecord | None) -> None:
    hint = None
    if result.failed_earlier:
        hint = f"`{result.retry_command}` re-queues failed items whose cause can pass"
    if log is not None:
        log({"event": "nothing_to_do", "failed_earlier": result.failed_earlier, "hint": hint})
        return
    if quiet:
        return
    err.print(
        "nothing to do: every item is already done or failed; no calls made"
        + (
            f" ({plain(hint)}; `--force` redoes done ones)"
            if hint
            else " (`--force` redoes done ones)"
        ),
        highlight=False,
    )


def _stop_hint(result: "SnapResult") -> str:
    """What to run after a stop, ready to paste: the same database and the same way of running."""
    from dealscout_cli.jobs import StopKind

    summary = result.summary
    assert summary is not None and summary.stop_reason
    if summary.stop_kind == StopKind.BUDGET:
        return f"to go on with a higher budget: `{result.resume_command_with(max_cost_factor=2)}`"
    return f"to resume: `{result.resume_command}`"


def _render_stop(result: "SnapResult", *, quiet: bool, log: LogRecord | None) -> None:
    summary = result.summary
    assert summary is not None
    hint = _stop_hint(result)
    if log is not None:
        log({"event": "stopped_early", "reason": summary.stop_reason, "resume": hint})
    elif not quiet:
        err.print(
            f"[yellow]stopped early:[/] {plain(summary.stop_reason)}; {plain(hint)}",
            highlight=False,
        )


def _snap_payload(result: "SnapResult") -> dict[str, Any]:
    summary = result.summary
    return {
        "items_found": len(result.scan.items),
        "new": result.queued.new,
        "already_done": result.queued.already_done,
        "redo_offline": result.queued.redo_offline,
        "problems": [
            {"path": p.path, "line": p.line, "reason": p.reason} for p in result.scan.problems
        ],
        "warnings": [{"path": w.path, "reason": w.reason} for w in result.scan.warnings],
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
            "resume": result.resume_command if summary.stop_reason else None,
        },
        "failed": result.failed_in_batch,
        "offline": result.offline,
        "exit_code": result.exit_code,
    }


def _cost(micros: int, *, offline: bool) -> str:
    """A run's cost: offline calls are recorded at $0 and said to be free, in every table."""
    return "free (offline)" if offline and not micros else format_usd(micros)


def _summary_table(summary: "RunSummary", *, offline: bool) -> "Table":
    table = new_table(title="snap" + (" (offline: emulator, not a real model)" if offline else ""))
    for column in ("done", "failed", "retry later", "released", "calls", "cost", "time", "items/s"):
        table.add_column(column, justify="right")
    rate = summary.done / summary.elapsed if summary.elapsed else 0.0
    _row(
        table,
        str(summary.done),
        str(summary.failed),
        str(summary.retried),
        str(summary.released),
        str(summary.calls),
        _cost(summary.cost_micro_usd, offline=offline),
        f"{summary.elapsed:.1f} s",
        f"{rate:.2f}",
    )
    return table


def _render_failures(
    result: "SnapResult", *, log: LogRecord | None = None, json_out: bool = False
) -> None:
    """What failed in this run (or was skipped), and the way out when there is one."""
    failures = result.failed_in_batch
    retryable = sum(1 for f in failures if f.get("state") == "failed" and f.get("retryable"))
    hint = (
        f"`{result.retry_command}` re-queues the {plural(retryable, 'one')} whose cause can "
        "pass (rate limits, timeouts, server errors)"
        if retryable
        else "none can pass on a retry as it is (a bad photo or file, a refused or unusable "
        "answer): fix or replace the photos and snap them again"
    )
    if log is not None:
        log({"event": "failures", "items": failures, "retryable": retryable, "hint": hint})
        return
    if json_out:
        return  # the --json payload has them
    err.print(f"[red]{plural(len(failures), 'item')} failed or skipped:[/]")
    for failure in failures[:20]:
        where = failure.get("first_photo") or failure.get("source") or ""
        error = failure["error"] or ""
        if where and where in error:
            where = ""  # BadPhoto messages already start with the file
        shown = f"{printable(where)}: {printable(error)}" if where else printable(error)
        err.print(f"  item {failure['item_id']}: {shown}", markup=False)
    if len(failures) > 20:
        err.print(
            f"  ... and {len(failures) - 20} more (`{plain(result.status_command)} --json`)",
            highlight=False,
        )
    err.print(f"  {plain(hint)}", highlight=False)


def render_made(summary: Any, *, offline: bool) -> None:
    """The listings a run made (the first few), and where to go from there."""
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
        _row(
            made,
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


# ---------------------------------------------------------------- snap --batch


def render_batch(
    result: "SnapResult", *, quiet: bool, json_out: bool, log: LogRecord | None = None
) -> None:
    """--batch: what was collected, what was submitted, what is still pending."""
    if json_out:
        print_json(_batch_payload(result))
    report, summary = result.batch, result.summary
    if log is not None:
        log({"event": "batch", **_batch_payload(result)["batch"]})
    elif not json_out:
        for problem in report.errors:
            err.print(f"[yellow]batch:[/] {plain(problem)}", highlight=False)
    if summary is not None and summary.stop_reason:
        _render_stop(result, quiet=json_out, log=log)
    if not quiet and not json_out and log is None:
        _render_batch_progress(result)
    if result.failed_in_batch and not quiet:
        _render_failures(result, log=log, json_out=json_out)


def _batch_payload(result: "SnapResult") -> dict[str, Any]:
    report, summary = result.batch, result.summary
    assert summary is not None  # Batch Mode always runs a pass
    return {
        "items_found": len(result.scan.items),
        "new": result.queued.new,
        "already_done": result.queued.already_done,
        "redo_offline": result.queued.redo_offline,
        "batch": {
            "submitted": report.submitted,
            "pending": report.pending,
            "collected": report.collected,
            "done": summary.done,
            "failed": summary.failed,
            "requeued": report.requeued + summary.retried,
            "calls": summary.calls,
            "cost_usd": summary.cost_micro_usd / 1_000_000,
            "errors": report.errors,
            "stop_reason": summary.stop_reason,
            "resume": result.resume_command,
        },
        "failed": result.failed_in_batch,
        "offline": result.offline,
        "exit_code": result.exit_code,
    }


def _render_batch_progress(result: "SnapResult") -> None:
    report, summary, offline = result.batch, result.summary, result.offline
    assert summary is not None
    for batch in report.collected:
        err.print(
            f"collected {plain(batch['name'])} ({plain(batch['stage'])}, "
            f"{plural(batch['items'], 'item')}, {plain(batch['state'])})",
            highlight=False,
        )
    if summary.calls:
        err.print(
            f"{plural(summary.done, 'listing')} written, {summary.failed} failed; "
            f"{plural(summary.calls, 'batched call')} cost "
            f"{_cost(summary.cost_micro_usd, offline=offline)} (batch price)",
            highlight=False,
        )
    render_made(summary, offline=offline)
    for batch in report.submitted:
        err.print(
            f"submitted {plain(batch['name'])} ({plain(batch['stage'])}, "
            f"{plural(batch['items'], 'item')})",
            highlight=False,
        )
    waiting = len(report.pending)
    if waiting:
        err.print(
            f"batch submitted; {plural(waiting, 'batch', 'batches')} pending: run again later "
            f"to collect (`{plain(result.resume_command)}`)",
            highlight=False,
        )
    elif not report.collected and not report.errors:
        err.print("nothing to do: no queued items and no open batches; no calls made")


# ---------------------------------------------------------------- status


def status_table(report: dict[str, Any]) -> "Table":
    """`status_report` (plus the fleet, when asked) as a two-column table."""
    table = new_table(title=f"dealscout status: {printable(report['database'])}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    _add_item_rows(table, report)
    _add_call_rows(table, report)
    _row(table, "active runs", str(report["active_runs"]))
    fleet = report.get("fleet")
    if fleet is not None:
        _add_fleet_rows(table, fleet)
    if report["offline_listings"]:
        _row(
            table,
            "offline",
            f"{report['offline_listings']} listings made by the emulator (placeholders)",
        )
    for error in report["last_errors"]:
        _row(table, f"  item {error['item_id']}", f"{error['state']}: {error['error']}")
    return table


def _add_item_rows(table: "Table", report: dict[str, Any]) -> None:
    counts = report["counts"]
    _row(table, "items", str(report["items"]))
    for state in ("done", "queued", "running", "failed", "skipped"):
        _row(table, f"  {state}", str(counts[state]))
    if counts.get("batched"):  # only after `snap --batch`: waiting on a Gemini batch job
        _row(table, "  batched", f"{counts['batched']} (the next `snap --batch` collects them)")
    per_minute, window = report["throughput_items_per_minute"], report["throughput_window_seconds"]
    if per_minute is None:
        _row(table, "throughput", "none: no run is active")
    else:
        _row(table, "throughput", f"{per_minute:.1f} items/min over the last {_span(window)}")
    if report["eta_seconds"] is not None:
        _row(table, "eta", about(report["eta_seconds"]))


def about(seconds: float) -> str:
    """A time left as a person says it: "about 20 s", "about 3 min", "about 2 h 5 min"."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 57.5:
        return f"about {round(seconds / 5) * 5} s"
    hours, minutes = divmod(max(round(seconds / 60), 1), 60)
    if not hours:
        return f"about {minutes} min"
    return f"about {hours} h" + (f" {minutes} min" if minutes else "")


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def _add_call_rows(table: "Table", report: dict[str, Any]) -> None:
    _row(
        table,
        "calls",
        f"{report['calls']} ({report['input_tokens']:,} in / {report['output_tokens']:,} out tokens)",
    )
    cost = format_usd(report["cost_micro_usd"])
    unpriced = report["unpriced_calls"]
    if unpriced and not report["cost_micro_usd"]:  # never $0 for calls nobody priced
        cost = f"unknown ({plural(unpriced, 'call')} to models without a price; see --prices)"
    elif unpriced:
        cost += f" (+{plural(unpriced, 'call')} to models without a price; see --prices)"
    _row(table, "cost", cost)
    for model in report["models_last_minute"]:
        _row(
            table,
            f"  {model['model']}",
            f"{model['requests']} req last min, {model['rate_limited'] or 0} × 429, "
            f"{model['mean_latency_ms']} ms mean",
        )
    for limiter in report["limiters"]:
        allowed = f"{limiter['rpm_limit']:.0f} rpm" if limiter["rpm_limit"] else "no limit yet"
        paused = f", paused {limiter['paused_until']:.0f} s" if limiter["paused_until"] else ""
        _row(
            table,
            f"  {limiter['model']} (run {limiter['run_id']})",
            f"{allowed}{' adaptive' if limiter['adaptive'] else ''}, {limiter['in_flight']} in flight "
            f"of {limiter['concurrency_cap']}, {limiter['rate_limited_total']} × 429{paused}",
        )


def _add_fleet_rows(table: "Table", fleet: dict[str, Any]) -> None:
    if not fleet["reachable"]:
        _row(table, "fleet", f"{fleet['broker']}: {fleet['error']}")
        return
    _row(
        table,
        "fleet",
        f"{len(fleet['workers'])} workers, {fleet['tasks_in_flight']} tasks in flight, "
        f"{fleet['queue_depth']} queued in the broker",
    )
    for worker in fleet["workers"]:
        _row(table, f"  {worker['name']}", _worker_line(worker))


def _worker_line(worker: dict[str, Any]) -> str:
    ago = worker.get("last_heartbeat_ago")
    beat = "" if ago is None else f", last heartbeat {ago:g} s ago"
    holds, resent = worker.get("holds") or [], worker.get("resent") or []
    if worker.get("lost"):
        return f"LOST{beat}; held {len(holds)} tasks, {len(resent)} sent again: " + (
            ", ".join(resent) or "none"
        )
    return f"{worker['active']} active, {worker['reserved']} reserved{beat}, holds {len(holds)}"


# ---------------------------------------------------------------- listings


def listings_table(found: list["Listing"]) -> "Table":
    """One row a listing; the SKU and the numbers are what a seller copies."""
    table = new_table(title=f"{len(found)} listings")
    # The SKU and the numbers never wrap or get cut; the title takes what width is left.
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
        _row(table, *cells)
    return table


def listing_table(
    listing: "Listing",
    calls: list[dict[str, Any]],
    revisions: "Sequence[Revision]" = (),
    review: dict[str, Any] | None = None,
) -> "Table":
    """One listing in full: the current revision, the photos, what the seller changed,
    the review's decision, every call and its cost."""
    ident = listing.identification
    table = new_table(
        title=f"item {listing.item_id} · {listing.sku}" + (" · offline" if listing.offline else ""),
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column()
    _row(table, "title", ident.title)
    _row(table, "condition", f"{ident.condition.value} (eBay {ident.ebay_condition_id})")
    _row(table, "brand / model", f"{ident.brand or '-'} / {ident.model or '-'}")
    _row(table, "category", ident.category)
    if listing.price:
        p = listing.price
        _row(
            table,
            "price",
            f"{p.low:.2f} – {p.suggested:.2f} – {p.high:.2f} {p.currency}: {p.rationale}",
        )
    for source in listing.price_sources:  # --grounded-prices: the pages the price came from
        _row(table, "price source", source)
    _row(table, "description", ident.description, multiline=True)
    if ident.defects:
        _row(table, "defects", "; ".join(ident.defects))
    for photo in listing.photos:
        _row(table, "photo", photo.path)
    for barcode in listing.barcodes:
        _row(table, "barcode", barcode)
    for warning in listing.quality_warnings:
        _row(table, "warning", warning)
    _row(
        table,
        "prompt",
        f"{listing.prompt_version} ({listing.vision_model}, {listing.pricing_model})",
    )
    _add_revision_rows(table, revisions, review or {})
    _add_call_cost_rows(table, calls)
    return table


def _add_revision_rows(
    table: "Table", revisions: "Sequence[Revision]", review: dict[str, Any]
) -> None:
    """Each revision after the first: who made it, when, and what it changed."""
    from dealscout_cli.store.reviews import changes

    before: dict[str, Any] | None = None
    for revision in revisions:
        if before is not None:
            edits = changes(before, revision.fields)
            what = "; ".join(f"{name}: {_shown(old)} → {_shown(new)}" for name, old, new in edits)
            _row(
                table,
                f"revision {revision.number}",
                f"{revision.author.value}, {revision.created_at}: {what or 'no change'}",
            )
        before = revision.fields
    if review.get("decision"):
        _row(table, "review", f"{review['decision']} {review['decided_at']}")
    if review.get("note"):
        waiting = " (waiting for the next snap)" if review.get("asked_at") else ""
        _row(table, "asked again", f"{review['note']}{waiting}")


def _shown(value: Any) -> str:
    """A field's value in one short line (a long description is cut)."""
    text = "-" if value is None or value == [] else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _add_call_cost_rows(table: "Table", calls: list[dict[str, Any]]) -> None:
    total: int | None = 0
    for call in calls:
        answered = call["input_tokens"] is not None
        if answered and call["cost_micro_usd"] is None:
            total = None  # a model without a price: the item's cost is unknown, never $0
        elif total is not None:
            total += call["cost_micro_usd"] or 0
        _row(
            table,
            f"call {call['stage']}",
            f"{call['model']} #{call['attempt']} {call['outcome']} {call['latency_ms']} ms "
            f"{call['input_tokens'] or 0}+{call['output_tokens'] or 0} tok {format_usd(call['cost_micro_usd'])}",
        )
    _row(table, "cost", format_usd(total))


# ---------------------------------------------------------------- estimate


def render_estimate(result: "Estimate") -> None:
    """The estimate as a table on stdout, and what it leaves out on stderr."""
    table = new_table(title=f"estimate: {_items_line(result)}")
    # Numbers never wrap or get cut ("~2,500,0…"); at 80 columns the model name folds instead.
    table.add_column("model", overflow="fold")
    table.add_column("stage", no_wrap=True)
    for column in ("calls", "input\ntokens", "thinking\ntokens", "answer\ntokens", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.rows:
        _row(
            table,
            row.model,
            row.stage,
            f"{row.requests:,}",
            f"{row.input_tokens:,}",
            f"~{row.thinking_tokens:,}",
            f"~{row.answer_tokens:,}",
            format_usd(row.cost_micro_usd),
        )
    _row(
        table,
        "total",
        "",
        f"{result.requests:,}",
        f"{result.input_tokens:,}",
        f"~{result.thinking_tokens:,}",
        f"~{result.answer_tokens:,}",
        format_usd(result.cost_micro_usd),
        style="bold",
    )
    table.caption = (
        f"about {format_usd(result.cost_per_item_micro_usd)} an item; "
        "~ thinking and answer (billed as output) are typical"
    )
    out.print(table)
    if result.cost_micro_usd is None:
        unpriced = [row.model for row in result.rows if row.cost_micro_usd is None]
        err.print(
            f"no price for {' or '.join(dict.fromkeys(unpriced))}: cost unknown; "
            "pass --prices FILE with their USD per 1M tokens",
            markup=False,
        )
    if result.stale_prices:
        err.print(result.stale_prices, markup=False)
    for photo in result.unusable[:20]:
        err.print(
            f"will be skipped: {printable(photo.path)}: {printable(photo.reason)}", markup=False
        )
    if len(result.unusable) > 20:
        err.print(f"... and {len(result.unusable) - 20} more (`--json` lists them all)")


def _items_line(result: "Estimate") -> str:
    parts = [f"{result.items} items", f"{result.to_identify + result.to_price} to process"]
    if result.to_price:
        parts.append(f"{result.to_price} already identified")
    if result.already_done:
        parts.append(f"{result.already_done} already done (free)")
    if result.failed_before:
        parts.append(f"{result.failed_before} failed earlier (not retried)")
    return ", ".join(parts)
