"""`dealscout listings`: the drafts made so far, or one item in full with its calls and
what the seller changed in `dealscout review`."""

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import DbOption, JsonFlag, err, guarded, out, print_json, read_store
from dealscout_cli.errors import UsageError

if TYPE_CHECKING:
    from dealscout_cli.models import Listing
    from dealscout_cli.store.reviews import Revision

ItemOption = Annotated[
    int | None,
    typer.Option("--item", help="Show one item in full: photos, the seller's edits, calls, cost."),
]


def listings(
    db: DbOption = Path(config.DEFAULT_DB),
    item: ItemOption = None,
    json_out: JsonFlag = False,
) -> None:
    """The draft listings made so far.

    Example: dealscout listings --item 3
    """
    found, calls, revisions, review = guarded(lambda: _load(db, item))
    if json_out:
        payload: Any = [listing.model_dump(mode="json") for listing in found]
        if item is not None:
            history = [
                {**dataclasses.asdict(revision), "author": revision.author.value}
                for revision in revisions
            ]
            payload = {**payload[0], "calls": calls, "revisions": history, "review": review}
        print_json(payload)
        return
    from dealscout_cli.cli.render import listing_table, listings_table

    if item is not None:
        out.print(listing_table(found[0], calls, revisions, review))
    elif not found:
        err.print("no listings yet: run `dealscout snap PHOTOS` first")
    else:
        out.print(listings_table(found))


def _load(
    db: Path, item: int | None
) -> tuple[list["Listing"], list[dict[str, Any]], list["Revision"], dict[str, Any]]:
    """Every listing, or the one of `item` with its calls, revisions and review; an unknown
    item is a usage error."""
    with read_store(db) as store:
        found = store.listings(item_id=item)
        if item is not None and not found:
            store.item(item)  # raises "no item with id" when it does not exist
            raise UsageError(f"item {item} has no listing yet; `dealscout status` shows why")
        if item is None:
            return found, [], [], {}
        return found, store.calls_for_item(item), store.revisions(item), store.review_of(item)
