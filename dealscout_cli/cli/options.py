"""What every dealscout command shares: consoles, exit codes, error handling, common options.

CLI layer only. Every command module of `dealscout_cli.cli` imports from here, so an option
reads the same in every `--help` and every command ends on an error the same way.
"""

import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from dealscout_cli import config
from dealscout_cli.errors import DealscoutError, StoreError, UsageError
from dealscout_cli.text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from dealscout_cli.store import Store


class LazyConsole:
    """A rich Console built on first use, so `dealscout --help` never imports rich (~30 ms).

    Method calls pass through; hand `.console` to rich objects (Live, Progress) that want
    the real thing.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def console(self) -> "Console":
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def print_json(payload: Any) -> None:
    """`--json` output: plain JSON on stdout, two-space indent, no colour and no rich import."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def new_table(*headers: str, **options: Any) -> "Table":
    """A rich Table, imported when a command first draws one (see LazyConsole)."""
    from rich.table import Table

    return Table(*headers, **options)


# stdout carries data (model-written titles, paths): printed as is, never read as markup
# or emoji codes, so "[offline]" or "Lot [NEW]" stays on screen.
out = LazyConsole(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = LazyConsole(stderr=True, highlight=False, soft_wrap=True)  # no mid-message wraps in cron logs

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3  # a run stopped early: run the same command again once the cause is fixed


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """One red line on stderr and an exit code: how the CLI ends on a known error."""
    err.print(f"[red]error:[/] {plain(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Outside text (a model's title, a server's message, a file name) reaches a terminal through
# one of two doors, both showing control characters as escapes (`text.printable`): `plain()`
# inside a rich markup string (`err.print(f"[red]...[/] {plain(x)}")`), `printable()` for
# everything printed without markup (`out`, `markup=False`, table cells on `out`).
def plain(text: object) -> str:
    """Outside text for a rich markup string: control characters shown as escapes (so ESC
    cannot clear the screen or hide a link) and markup escaped (so a path like
    `shoots/[/x]/a.jpg` is printed as is instead of read as a closing tag)."""
    from rich.markup import escape

    return escape(printable(text))


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 item`, `2 items`, `0 items`: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


def guarded(fn: Callable[[], Any], *, store_error: int = EXIT_FAILED) -> Any:
    """Run a command body: known errors become one line; unknown ones stay loud. A database
    that cannot be written exits `store_error` (`snap`: 3, like a run stopped by it)."""
    try:
        return fn()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        if os.environ.get(config.ENV_DEBUG):
            raise
        fail(str(exc), store_error)
    except DealscoutError as exc:
        if os.environ.get(config.ENV_DEBUG):
            raise
        fail(str(exc))


def open_store(db: Path, *, create: bool = False) -> "Store":
    """The store, imported when a command first opens it (sqlite-utils stays off `--help`)."""
    from dealscout_cli.store import Store

    return Store.open(db, create=create)


def read_store(db: Path) -> "Store":
    """The store opened only to read: commands that only read never write, not even the
    journal mode, so they work on a backup or a read-only copy."""
    from dealscout_cli.store import Store

    return Store.open_read_only(db)


DbOption = Annotated[
    Path,
    typer.Option(
        "--db", envvar=config.ENV_DB, help="The SQLite file that keeps jobs, calls and listings."
    ),
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")
]
PATHS_HELP = "Folders of photos (searched recursively) or manifests (.csv/.jsonl)."
PathsArgument = Annotated[
    list[Path], typer.Argument(metavar="PATHS...", help=PATHS_HELP, show_default=False)
]


class Group(StrEnum):
    """`--group`: what one item is. A StrEnum, so `--help` lists the choices, Typer refuses
    any other, and the value passes on as the plain string `scan` takes (`scan.GROUPINGS`,
    not imported here: it would load Pillow on every command)."""

    PHOTO = "photo"
    FOLDER = "folder"
    AUTO = "auto"


# Choices read without regard to case (`--group Folder`, `--format CSV`), as people type them.
GroupOption = Annotated[
    Group,
    typer.Option(
        case_sensitive=False,
        help="'photo': each photo is an item. 'folder': each folder of photos is one item; "
        "photos loose in a folder you name are one item each. 'auto': photos loose in a "
        "folder you name are split into products by capture time and what they show "
        "(`dealscout group` lists and corrects the groups).",
    ),
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
