"""`dealscout export`: the listings as a file a marketplace or a script can take."""

import io
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import DbOption, err, guarded, plain, plural, read_store
from dealscout_cli.errors import UsageError
from dealscout_cli.text import printable

if TYPE_CHECKING:  # the formats import pydantic models: only when the command runs
    from dealscout_cli.export import ExportFormat, ExportReport


class Format(StrEnum):
    """`--format`'s choices, so `--help` lists them without importing the formats (pydantic,
    ~130 ms); `export.ExportFormat` is the real list and a test keeps the two the same."""

    CSV = "csv"
    JSONL = "jsonl"
    EBAY = "ebay"
    SHOPIFY = "shopify"
    META = "meta"


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,
        help="csv, jsonl, ebay (Seller Hub drafts), shopify, meta.",
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="File to write; standard output when omitted."),
]
PhotoBaseUrlOption = Annotated[
    str | None,
    typer.Option(
        help="URL prefix where your photos are hosted; each photo's path below "
        "--photo-root is appended (upload that folder as it is)."
    ),
]
ProductUrlOption = Annotated[
    str | None,
    typer.Option(
        help="Address of each item's page in your shop, {sku} (or {item_id}) standing for "
        "the item, e.g. 'https://shop.example.com/p/{sku}'. Meta's catalog requires it."
    ),
]
PhotoRootOption = Annotated[
    str | None,
    typer.Option(
        help="The folder you upload the photos from. Default: the deepest folder holding "
        "every exported photo (for a flat folder, the URLs end in plain file names)."
    ),
]
IncludeOfflineFlag = Annotated[
    bool,
    typer.Option(
        "--include-offline",
        help="Also export listings made by the emulator (marketplace formats skip them).",
    ),
]
ApprovedFlag = Annotated[
    bool,
    typer.Option("--approved", help="Only the listings approved in `dealscout review`."),
]


def export(
    db: DbOption = Path(config.DEFAULT_DB),
    format: FormatOption = Format.CSV,
    output: OutputOption = None,
    photo_base_url: PhotoBaseUrlOption = None,
    product_url: ProductUrlOption = None,
    photo_root: PhotoRootOption = None,
    include_offline: IncludeOfflineFlag = False,
    approved: ApprovedFlag = False,
) -> None:
    """Write the listings in a format a marketplace or a script can take.

    Example: dealscout export --format ebay --photo-base-url https://example.com/photos/ -o ebay.csv
    """
    from dealscout_cli.export import ExportFormat

    fmt = ExportFormat(format.value)
    report = guarded(
        lambda: _write(
            db,
            fmt,
            output,
            photo_base_url=photo_base_url,
            product_url=product_url,
            photo_root=photo_root,
            include_offline=include_offline,
            approved=approved,
        )
    )
    for sku, reason in report.skipped:  # a reason may quote a model's currency
        err.print(f"skipped {printable(sku)}: {printable(reason)}", markup=False)
    for note in report.notes:  # notes name photo paths
        err.print(f"note: {printable(note)}", markup=False)
    if output is not None:
        err.print(f"wrote {plural(report.written, 'listing')} to {plain(output)}")


def _write(
    db: Path,
    fmt: "ExportFormat",
    output: Path | None,
    *,
    photo_base_url: str | None,
    product_url: str | None,
    photo_root: str | None,
    include_offline: bool,
    approved: bool = False,
) -> "ExportReport":
    """Read the listings, check the options, then write (to stdout without -o)."""
    from dealscout_cli.export import ExportOptions, check_options, export_listings

    with read_store(db) as store:
        found = store.listings(approved_only=approved)
    # Photos are stored with absolute paths (as `scan` found them): so is the root.
    root = os.path.abspath(os.path.expanduser(photo_root)) if photo_root else None
    options = ExportOptions(
        photo_base_url=photo_base_url,
        product_url=product_url,
        photo_root=root,
        include_offline=include_offline,
    )
    check_options(fmt, options, found)  # before -o is opened: a refusal leaves no empty file
    if output is None and sys.stdout.isatty():
        # On a terminal the file is only looked at: its control characters are escaped there
        # (a model's "\x1b[2J" would clear the screen); to a pipe or -o it stays exact.
        shown = io.StringIO(newline="")
        report = export_listings(found, fmt, shown, options)
        sys.stdout.write(printable(shown.getvalue(), multiline=True))
        return report
    if output is None:
        return export_listings(found, fmt, sys.stdout, options)
    with _open_output(output) as handle:
        return export_listings(found, fmt, handle, options)


def _open_output(output: Path) -> io.TextIOWrapper:
    """-o, opened for writing, or a UsageError saying why it cannot be (a missing folder, a
    directory, no permission)."""
    if output.is_dir():
        raise UsageError(
            f"-o {output} is a folder; give a file name, e.g. {output / 'listings.csv'}"
        )
    try:
        return output.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        why = exc.strerror or str(exc)
        if not output.parent.exists():
            why = f"the folder {output.parent} does not exist"
        raise UsageError(f"-o {output}: cannot write there ({why})") from None
