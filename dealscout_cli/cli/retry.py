"""`dealscout retry`: failed items back into the queue for the next snap."""

import time
from pathlib import Path
from typing import Annotated

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import DbOption, JsonFlag, guarded, open_store, out, print_json

AllFlag = Annotated[bool, typer.Option("--all", help="Every failed item, whatever the cause.")]
ItemsOption = Annotated[list[int] | None, typer.Option("--item", help="This item id (repeatable).")]
ErrorKindOption = Annotated[
    str | None,
    typer.Option(help="Only failures of this kind (rate_limited, timeout, bad_output, ...)."),
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
    identification succeeded is only priced again.

    Example: dealscout retry --error-kind rate_limited && dealscout snap ./photos
    """

    def requeue() -> int:
        with open_store(db) as store:
            now = time.time()
            if item or error_kind or all_items:
                return store.requeue_failed(now=now, item_ids=item or None, error_kind=error_kind)
            return store.requeue_retryable(now=now)

    count = guarded(requeue)
    if json_out:
        print_json({"requeued": count})
    else:
        out.print(
            f"{count} items back in the queue"
            + ("; run `dealscout snap PHOTOS` to process them" if count else "")
        )
