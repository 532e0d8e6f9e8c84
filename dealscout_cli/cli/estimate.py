"""`dealscout estimate`: what a snap would cost, as a table or JSON. Calls no model.

The counting lives in `dealscout_cli.estimate`; the table is drawn in `render`.
"""

from pathlib import Path
from typing import Annotated

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import (
    EXIT_USAGE,
    Group,
    GroupOption,
    JsonFlag,
    MaxSideOption,
    PathsArgument,
    PricesOption,
    PricingModelOption,
    VisionModelOption,
    err,
    fail,
    guarded,
    print_json,
)
from dealscout_cli.cli.snap import MediaResolutionOption, ThinkingOption

EarlierRunsDbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar=config.ENV_DB,
        help="The SQLite file of earlier runs: items done there cost nothing.",
    ),
]


def estimate_command(
    paths: PathsArgument,
    db: EarlierRunsDbOption = Path(config.DEFAULT_DB),
    group: GroupOption = Group.PHOTO,
    vision_model: VisionModelOption = config.DEFAULT_VISION_MODEL,
    pricing_model: PricingModelOption = config.DEFAULT_PRICING_MODEL,
    max_side: MaxSideOption = config.DEFAULT_MAX_SIDE,
    prices: PricesOption = None,
    media_resolution: MediaResolutionOption = None,
    thinking: ThinkingOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Predict the calls, tokens and cost of a snap, without calling any model.

    Reads only the photos' headers and the database. Input tokens are counted the
    way Gemini bills them; output tokens are typical answer lengths, so treat the
    cost as an estimate. Items already done in the database cost nothing.

    Example: dealscout estimate ./photos
    """
    for path in paths:
        if not path.exists():
            fail(f"{path} does not exist; pass a folder of photos or a manifest", EXIT_USAGE)
    from dealscout_cli.estimate import estimate

    settings = guarded(
        lambda: config.resolve(
            db_path=db,
            vision_model=vision_model,
            pricing_model=pricing_model,
            max_side=max_side,
            prices_file=prices,
            media_resolution=media_resolution,
            identify_thinking=thinking,
            price_thinking=thinking,
        ).checked_choices()
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
    if result.grouping:
        err.print(f"grouped: {result.grouping}", highlight=False)
    from dealscout_cli.cli.render import render_estimate

    render_estimate(result)
