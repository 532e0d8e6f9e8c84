"""What every dealscout command shares: consoles, exit codes, error handling, common options.

CLI layer only. `cli.py` and the commands kept in their own modules (`estimate_cli`,
`distributed.cli`) import from here, so an option reads the same in every `--help`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from dealscout_cli import config
from dealscout_cli.errors import DealscoutError, UsageError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # no mid-message wraps in cron logs

EXIT_FAILED = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One red line on stderr and an exit code: how the CLI ends on a known error."""
    err.print(f"[red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body: known errors become one line; unknown ones stay loud."""
    try:
        return fn()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except DealscoutError as exc:
        if os.environ.get(config.ENV_DEBUG):
            raise
        fail(str(exc))


def check_group(group: str) -> None:
    if group not in ("photo", "folder"):
        fail(f"--group must be 'photo' or 'folder', not {group!r}", EXIT_USAGE)


DbOption = Annotated[
    Path,
    typer.Option(
        "--db", envvar=config.ENV_DB, help="The SQLite file that keeps jobs, calls and listings."
    ),
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")
]
PathsArgument = Annotated[
    list[Path],
    typer.Argument(
        help="Folders of photos (searched recursively) or manifests (.csv/.jsonl).",
        show_default=False,
    ),
]
GroupOption = Annotated[
    str,
    typer.Option(help="'photo': each photo is an item. 'folder': each leaf folder is one item."),
]
VisionModelOption = Annotated[
    str,
    typer.Option(envvar=config.ENV_VISION_MODEL, help="Model that identifies items from photos."),
]
PricingModelOption = Annotated[
    str, typer.Option(envvar=config.ENV_PRICING_MODEL, help="Model that estimates prices.")
]
MaxSideOption = Annotated[
    int,
    typer.Option(min=64, max=4096, help="Long side in px photos are shrunk to before sending."),
]
PricesOption = Annotated[
    Path | None,
    typer.Option(envvar=config.ENV_PRICES, help="JSON file overriding the model price table."),
]
