"""`dealscout retry`: failed items back into the queue for the next snap."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import (
    DbOption,
    JsonFlag,
    err,
    guarded,
    open_store,
    out,
    plural,
    print_json,
)
from dealscout_cli.errors import ErrorKind

if TYPE_CHECKING:
    from dealscout_cli.store.queue import Requeued

AllFlag = Annotated[bool, typer.Option("--all", help="Every failed item, whatever the cause.")]
ItemsOption = Annotated[list[int] | None, typer.Option("--item", help="This item id (repeatable).")]
# The kinds come from the one enum the record stores, so `--help` lists every one and an
# unknown kind is refused (exit 2) instead of matching nothing.
ErrorKindOption = Annotated[
    ErrorKind | None,
    typer.Option(
        case_sensitive=False,
        metavar="KIND",
        help="Only failures of this kind: " + ", ".join(kind.value for kind in ErrorKind) + ".",
    ),
]


def retry(
    db: DbOption = Path(config.DEFAULT_DB),
    all_items: AllFlag = False,
    item: ItemsOption = None,
    error_kind: ErrorKindOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Put failed items back in the queue; the next `snap` processes them.

    Without options, re-queues the failures whose cause can pass (rate limits,
    timeouts, server errors). Finished stages are kept: an item whose
    identification succeeded is only priced again. An item named with --item
    that is not put back is named with why (no such item, done, queued...).

    Example: dealscout retry --error-kind rate_limited && dealscout snap
    """

    def requeue() -> tuple[int, dict[int, str], int]:
        with open_store(db) as store:
            now = time.time()
            if item or error_kind or all_items:
                done: Requeued = store.requeue_failed(
                    now=now, item_ids=item or None, error_kind=error_kind
                )
                return done.count, done.not_requeued, store.counts().get("failed", 0)
            return store.requeue_retryable(now=now), {}, store.counts().get("failed", 0)

    count, not_requeued, still_failed = guarded(requeue)
    if json_out:
        payload: dict[str, Any] = {
            "requeued": count,
            "not_requeued": [{"item_id": i, "why": why} for i, why in not_requeued.items()],
            "still_failed": still_failed,
        }
        print_json(payload)
        return
    for item_id, why in not_requeued.items():
        err.print(f"item {item_id} not re-queued: {why}", markup=False, highlight=False)
    _say_what_next(
        db, count, still_failed, default=not (item or error_kind or all_items), kind=error_kind
    )


def _say_what_next(
    db: Path, count: int, still_failed: int, *, default: bool, kind: ErrorKind | None
) -> None:
    from dealscout_cli.snap import db_command

    settings = config.Settings(db_path=db)
    message = f"{plural(count, 'item')} back in the queue"
    if count:
        message += f"; run `{db_command(settings, 'snap')}` to process them"
    elif default and still_failed:
        message += (
            f": none of the {plural(still_failed, 'failed item')} failed for a cause that can "
            f"pass; `{db_command(settings, 'retry', '--all')}` re-queues them anyway"
        )
    elif kind is not None and still_failed:
        message += f": no failed item failed with {kind.value}"
    elif not still_failed:
        message += ": no item has failed"
    out.print(message)
