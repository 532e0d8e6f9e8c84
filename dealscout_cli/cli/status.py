"""`dealscout status`: where the work stands, once, as JSON, or refreshed with --watch."""

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import DbOption, JsonFlag, guarded, out, print_json, read_store

WatchFlag = Annotated[
    bool, typer.Option("--watch", "-w", help="Refresh every few seconds until Ctrl-C.")
]
IntervalOption = Annotated[
    float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")
]
FleetBrokerOption = Annotated[
    str | None,
    typer.Option(
        envvar=config.ENV_BROKER,
        help="Also show the Celery fleet: workers, tasks in flight, queue depth.",
    ),
]


def status(
    db: DbOption = Path(config.DEFAULT_DB),
    json_out: JsonFlag = False,
    watch: WatchFlag = False,
    interval: IntervalOption = 2.0,
    broker: FleetBrokerOption = None,
) -> None:
    """Where the work stands: items by state, throughput, cost so far, last errors.

    Reads the database only; safe to run while `snap` is working.

    Example: dealscout status --watch
    """
    if watch:
        _watch(db, broker, interval)
        return
    report = guarded(lambda: _report(db, broker))
    if json_out:
        print_json(report)
    else:
        from dealscout_cli.cli.render import status_table

        out.print(status_table(report))


def _report(db: Path, broker: str | None) -> dict[str, Any]:
    from dealscout_cli.status import status_report

    with read_store(db) as store:
        report = status_report(store, now=time.time())
    if broker:
        from dealscout_cli.distributed.status import fleet_status

        report["fleet"] = fleet_status(broker)
    return report


def _watch(db: Path, broker: str | None, interval: float) -> None:
    """The status table redrawn in place every `interval` seconds, until Ctrl-C."""
    from rich.live import Live

    from dealscout_cli.cli.render import status_table

    try:
        with Live(console=out.console, auto_refresh=False) as live:
            while True:
                live.update(status_table(guarded(lambda: _report(db, broker))), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
