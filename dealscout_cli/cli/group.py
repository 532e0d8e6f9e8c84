"""`dealscout group`: the items `--group auto` made from a shoot, and merging and splitting them.

Grouping, merging and splitting live in `dealscout_cli.grouping` and the store; this module
parses the numbers and draws the table.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import (
    EXIT_USAGE,
    DbOption,
    JsonFlag,
    err,
    fail,
    guarded,
    open_store,
    out,
    plain,
    plural,
    print_json,
    read_store,
)
from dealscout_cli.cli.snap import ConfirmGroupsFlag, OfflineFlag

if TYPE_CHECKING:
    from dealscout_cli.store import Store
    from dealscout_cli.store.groups import GroupRow

T = TypeVar("T")

GroupPathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="[PATHS]...",
        help="Folders of photos to group (as `snap --group auto` would) and queue without "
        "calling any model. Without paths: the groups already in --db.",
        show_default=False,
    ),
]
MergeOption = Annotated[
    str | None,
    typer.Option(
        metavar="N,M[,...]",
        help="Merge these groups (their numbers, as listed) into one item.",
    ),
]
SplitOption = Annotated[
    str | None,
    typer.Option(
        metavar="N:K|PHOTO",
        help="Split group N before its K-th photo (5:3), or start a new group at the photo "
        "with this file name (IMG_0042.jpg).",
    ),
]


def group(
    paths: GroupPathsArgument = None,
    db: DbOption = Path(config.DEFAULT_DB),
    merge: MergeOption = None,
    split: SplitOption = None,
    confirm_groups: ConfirmGroupsFlag = False,
    offline: OfflineFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """List the groups `--group auto` made, and merge or split them by number.

    With PATHS, groups the photos loose in those folders into items (capture time
    and what the photos show) and queues them without calling any model, so the
    groups can be checked before `snap` spends anything. Photos already in an item
    keep it. An item's key is the hash of its photos: merging two groups makes one
    new item, splitting one makes two, and nothing else changes. Only queued or
    failed groups can be regrouped. `dealscout review` does the same with
    thumbnails (its Groups page).

    Example: dealscout group ./shoot && dealscout group --merge 12,13 && dealscout snap
    """
    if merge and split:
        fail("--merge and --split one at a time", EXIT_USAGE)
    settings = guarded(lambda: config.resolve(db_path=db, offline=offline or None))
    if paths:
        from dealscout_cli.grouping import group_shoot, summary_line

        found, report = guarded(lambda: group_shoot(list(paths), settings, confirm=confirm_groups))
        for problem in found.problems:  # an empty file, a broken list: in no group, so say so
            where = f"{problem.path}:{problem.line}" if problem.line else problem.path
            err.print(f"skipped {plain(where)}: {plain(problem.reason)}", highlight=False)
        if not json_out:
            err.print(f"grouped: {summary_line(found)}; {report.new} new items", highlight=False)
    elif confirm_groups:
        fail("--confirm-groups asks about the photos of PATHS; name the folder", EXIT_USAGE)
    if merge:
        numbers = _numbers(merge, "--merge")
        new = guarded(lambda: _with_store(db, lambda s: s.merge_groups(numbers, now=time.time())))
        err.print(f"merged groups {', '.join(map(str, numbers))} into group {new}", highlight=False)
    if split:
        first, second = guarded(lambda: _split(db, split))
        err.print(f"split into groups {first} and {second}", highlight=False)
    rows = guarded(lambda: _read_groups(db))
    if json_out:
        print_json([row.to_dict() for row in rows])
        return
    _render(rows)


def _with_store(db: Path, action: "Callable[[Store], T]") -> T:
    with open_store(db) as store:
        return action(store)


def _read_groups(db: Path) -> "list[GroupRow]":
    """Listing only reads: the file is not even switched to WAL (a backup, a read-only copy)."""
    with read_store(db) as store:
        return store.groups()


def _numbers(text: str, flag: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        fail(f"{flag} takes group numbers, e.g. {flag} 3,4; got {text!r}", EXIT_USAGE)
    return numbers


def _split(db: Path, where: str) -> tuple[int, int]:
    """`5:3` (group 5 before its 3rd photo) or a file name (the group holding it, before it)."""
    with open_store(db) as store:
        number, sep, position = where.partition(":")
        # isdecimal, not isdigit: int() refuses a superscript "²" that isdigit() accepts
        if sep and number.strip().isdecimal() and position.strip().isdecimal():
            return store.split_group(int(number), int(position), now=time.time())
        return store.split_before_photo_named(where, now=time.time())


def _render(rows: "list[GroupRow]") -> None:
    if not rows:
        out.print("no groups yet: `dealscout group ./shoot` groups a folder of photos")
        return
    from rich.table import Table

    table = Table(show_edge=False)
    for name in ("#", "first photo", "last photo", "photos", "why it starts", "state"):
        table.add_column(name, justify="right" if name in ("#", "photos") else "left")
    for row in rows:
        why = row.why + (" (unsure)" if row.unsure else "")
        if "gap_seconds" in row.detail:
            why += f", {row.detail['gap_seconds']:.0f} s"
        table.add_row(
            str(row.item_id),
            plain(row.photos[0] if row.photos else ""),
            plain(row.photos[-1] if len(row.photos) > 1 else ""),
            str(len(row.photos)),
            why,
            row.state,
        )
    out.print(table)
    unsure = sum(row.unsure for row in rows)
    out.print(
        f"{plural(len(rows), 'group')}, {plural(unsure, 'unsure start')}; "
        "fix with --merge N,M or --split N:K, then `dealscout snap`"
    )
