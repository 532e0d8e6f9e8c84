"""The `dealscout estimate` command: what a snap would cost, as a table or JSON. Calls no model.

Registered in cli.py with `app.command("estimate")(estimate_command)`; the
counting lives in `estimate`, this module only parses and renders.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import (
    EXIT_USAGE,
    GroupOption,
    JsonFlag,
    MaxSideOption,
    PathsArgument,
    PricesOption,
    PricingModelOption,
    VisionModelOption,
    check_group,
    err,
    fail,
    guarded,
    new_table,
    out,
    print_json,
)
from dealscout_cli.costs import format_usd

if TYPE_CHECKING:  # the counting imports Pillow and pydantic: only when the command runs
    from dealscout_cli.estimate import Estimate


def estimate_command(
    paths: PathsArgument,
    db: Annotated[
        Path,
        typer.Option(
            "--db",
            envvar=config.ENV_DB,
            help="The SQLite file of earlier runs: items done there cost nothing.",
        ),
    ] = Path(config.DEFAULT_DB),
    group: GroupOption = "photo",
    vision_model: VisionModelOption = config.DEFAULT_VISION_MODEL,
    pricing_model: PricingModelOption = config.DEFAULT_PRICING_MODEL,
    max_side: MaxSideOption = config.DEFAULT_MAX_SIDE,
    prices: PricesOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Predict the calls, tokens and cost of a snap, without calling any model.

    Reads only the photos' headers and the database. Input tokens are counted the
    way Gemini bills them; output tokens are typical answer lengths, so treat the
    cost as an estimate. Items already done in the database cost nothing.

    Example: dealscout estimate ./photos
    """
    check_group(group)
    for path in paths:
        if not path.exists():
            fail(f"{path} does not exist; pass a folder of photos or a manifest", EXIT_USAGE)
    from dealscout_cli.estimate import estimate

    settings = config.resolve(
        db_path=db,
        vision_model=vision_model,
        pricing_model=pricing_model,
        max_side=max_side,
        prices_file=prices,
    )
    from dealscout_cli.cli.progress import ScanCounter

    counter = ScanCounter(err.console, enabled=not json_out)
    try:
        result = guarded(lambda: estimate(paths, settings, group=group, on_photo=counter))  # type: ignore[arg-type]
    finally:
        counter.close()
    if json_out:
        print_json(result.to_dict())
        return
    render(result)


def render(result: "Estimate") -> None:
    """The estimate as a table on stdout, and what it leaves out on stderr."""
    table = new_table(title=f"estimate: {_items_line(result)}")
    # Numbers never wrap or get cut ("~2,500,0…"); at 80 columns the model name folds instead.
    table.add_column("model", overflow="fold")
    table.add_column("stage", no_wrap=True)
    for column in ("calls", "input\ntokens", "output\ntokens", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.rows:
        table.add_row(
            row.model,
            row.stage,
            f"{row.requests:,}",
            f"{row.input_tokens:,}",
            f"~{row.output_tokens:,}",
            format_usd(row.cost_micro_usd),
        )
    table.add_row(
        "total",
        "",
        f"{result.requests:,}",
        f"{result.input_tokens:,}",
        f"~{result.output_tokens:,}",
        format_usd(result.cost_micro_usd),
        style="bold",
    )
    table.caption = (
        f"about {format_usd(result.cost_per_item_micro_usd)} an item; "
        "~ output tokens are typical answer lengths"
    )
    out.print(table)
    if result.cost_micro_usd is None:
        err.print("some models have no price: pass --prices with their USD per 1M tokens")
    for photo in result.unusable[:20]:
        err.print(f"will be skipped: {photo.path}: {photo.reason}", markup=False)
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
