"""The `dealscout` command: parse, call the core, render. No SQL, no retry policy, no prompts.

Results go to stdout (tables, or JSON with --json); progress and errors go to
stderr. Known errors become one red line and an exit code; anything else is a
bug and keeps its traceback (always under pytest or with DEALSCOUT_DEBUG=1).

One module per command, each a plain typed function registered below:

    options.py    consoles, exit codes, `fail`/`guarded`, the options commands share
    snap.py       `dealscout snap`: flags to Settings, progress wiring, the run
    status.py     `dealscout status` (--watch)
    listings.py   `dealscout listings` (--item)
    export.py     `dealscout export` (--approved)
    review.py     `dealscout review`: the local web app
    retry.py      `dealscout retry`
    emulator.py   `dealscout emulator`
    worker.py     `dealscout worker` (Celery)
    estimate.py   `dealscout estimate`
    group.py      `dealscout group`: the groups --group auto made; merge and split
    render.py     the result tables and --json payloads
    progress.py   a run's live progress: bar, plain lines or JSON events

Heavy libraries (rich, the SDK, pydantic, anyio, Celery) are imported inside the
commands, so `dealscout --help` and `dealscout status --json` start fast.
"""

from typing import Annotated

import typer

# Submodules, not their functions: `dealscout_cli.cli.snap` stays the module (patchable).
from dealscout_cli.cli import (
    emulator,
    estimate,
    export,
    group,
    listings,
    retry,
    review,
    snap,
    status,
    worker,
)

__all__ = ["app", "main"]

app = typer.Typer(
    help="Turn folders of product photos into draft marketplace listings with Gemini.\n\n"
    "First hour:\n\n"
    "\b\n"
    "  dealscout snap ./photos --offline   try it: no key, no cost, placeholder listings\n"
    "  export GEMINI_API_KEY=...           then the real thing: the same folder again,\n"
    "  dealscout snap ./photos             placeholders are redone by the model\n"
    "  dealscout status                    where a run stands (another terminal, or cron)\n"
    "  dealscout listings                  the drafts; listings --item ID for one in full\n"
    "  dealscout review                    check, edit and approve them in a browser\n"
    "  dealscout export --format ebay -o ebay.csv\n\n"
    "A stopped or killed run resumes with `dealscout snap` (what is queued is kept).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never show the API key
    context_settings={"help_option_names": ["-h", "--help"]},
    # Plain click help: Typer's rich help imports rich.markdown, rich.traceback and pygments
    # (~100 ms), a third of `dealscout --help`, whose start-up goal is 0.3 s.
    rich_markup_mode=None,
)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"dealscout {version('dealscout')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("dealscout (version unknown: not installed)")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Turn folders of product photos into draft marketplace listings with Gemini."""


# In this order in `dealscout --help`.
app.command("snap", short_help="Turn photos into draft listings; resumable (try: --offline).")(
    snap.snap
)
app.command("status", short_help="Items by state, throughput, cost, last errors (--watch).")(
    status.status
)
app.command("listings", short_help="The drafts made so far (--item ID shows one in full).")(
    listings.listings
)
app.command("export", short_help="Write the listings as csv, jsonl, ebay, shopify or meta.")(
    export.export
)
app.command("review", short_help="Check, edit, approve and export the listings in a browser.")(
    review.review
)
app.command("retry", short_help="Put failed items back in the queue for the next snap.")(
    retry.retry
)
app.command("emulator", short_help="Run a local Gemini API stand-in with limits and faults.")(
    emulator.emulator
)
app.command("worker", short_help="Run a Celery worker for snap --engine celery.")(worker.worker)
app.command("estimate", short_help="Predict calls, tokens and cost; calls no model.")(
    estimate.estimate_command
)
app.command("group", short_help="List, merge and split the items --group auto made.")(group.group)


def main() -> None:
    app()
