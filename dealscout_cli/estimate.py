"""What a `snap` of some photos would cost, predicted without calling any model.

Input tokens are counted the way Gemini bills them, by each model family's rule
(`tokens.rule_for`): per item, every distinct photo at the size
`images.prepare_photo` will send (long side shrunk to `max_side` through the same
libjpeg draft scale and Pillow rounding, never upscaled, EXIF-rotated), plus the
identify system text and prompt with the item's notes. Photo sizes come from the
file headers; no pixel is decoded.

The pricing prompt holds the identification, unknown until the vision model
answers, so a typical one stands in (`TYPICAL_IDENTIFICATION`: 147 prompt tokens,
the mean over 40 emulator answers was 147, range 132-169).

On Gemini 3 models the photos cost their media resolution's fixed budget and the
request carries the stage's `thinking_level` (`config.stage_options`), so the
estimate counts what will be sent, not the server's defaults.

Output tokens cannot be counted before the answer, so they are estimates, kept
apart per model: answer tokens are per-stage constants (the emulator's means over
40 items, 157 identify and 51 price, rounded up), and thinking tokens (Gemini 3,
billed as output) are `tokens.THINKING_TOKENS` for the stage's level. The
emulator draws its thoughts around the same table, so an offline run bills within
a few percent of this estimate; a real model's answers and thoughts vary more.

Items the database already finished cost nothing; items whose identification is
saved only need pricing; items that failed earlier are not retried by `snap`
(only after `dealscout retry`). Each is counted apart.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from . import prompts
from .config import Settings, StageOptions, stage_options
from .costs import ModelPrice, call_cost_micros, load_prices, stale_prices_note
from .images import DEFAULT_MAX_PIXELS, MIN_SIDE, display_path, register_heif
from .models import Attribute, Condition, Identification
from .records import Stage
from .scan import FoundItem, GroupBy, ScanResult, scan
from .store import Store
from .tokens import THINKING_SPREAD, rule_for

IDENTIFY_OUTPUT_TOKENS = 160  # answer tokens: emulator mean 157
PRICE_OUTPUT_TOKENS = 52  # answer tokens: emulator mean 51
OUTPUT_TOKENS = {Stage.IDENTIFY: IDENTIFY_OUTPUT_TOKENS, Stage.PRICE: PRICE_OUTPUT_TOKENS}
# What a budget expects an answer to run to: above the emulator's longest, as real
# descriptions run longer than its means.
BUDGET_ANSWER_TOKENS = {Stage.IDENTIFY: 250, Stage.PRICE: 80}

TYPICAL_IDENTIFICATION = Identification(
    title="KitchenAid Artisan Stand Mixer 5 Qt Tilt-Head Empire Red",
    description="Stand mixer with bowl and attachments.",
    category="Home & Garden > Kitchen Appliances > Mixers",
    brand="KitchenAid",
    model="KSM150PS",
    attributes=[
        Attribute(name="Color", value="Empire Red"),
        Attribute(name="Capacity", value="5 Qt"),
        Attribute(name="Power", value="325 W"),
        Attribute(name="Type", value="Tilt-Head"),
        Attribute(name="Material", value="Metal"),
    ],
    condition=Condition.GOOD,
    defects=["Light scratches on the bowl"],
    confidence=0.8,
)

TYPICAL_PHOTO = (4000, 3000)  # a 12 MP phone photo, for a budget with no photos to go by
_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "HEIF"]  # what images.open_image accepts
_SIDEWAYS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ModelRow:
    """One model's share of the run: its calls, tokens and cost (None when it has no price).
    Output is the thinking (Gemini 3) plus the answer, both billed as output."""

    model: str
    stage: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int | None
    thinking_tokens: int = 0
    answer_tokens: int = 0


@dataclass(frozen=True)
class UnusablePhoto:
    """A photo the run will refuse before any call (so it costs nothing), and why."""

    path: str
    reason: str


@dataclass
class Estimate:
    """The predicted calls, tokens and cost of processing some photos."""

    items: int = 0  # items the scan found
    to_identify: int = 0  # items that need both calls
    to_price: int = 0  # items whose identification is saved: pricing only
    already_done: int = 0  # done in the database: free
    failed_before: int = 0  # failed in an earlier run: `snap` leaves them until `dealscout retry`
    photos: int = 0  # distinct photos that will be sent
    rows: list[ModelRow] = field(default_factory=list)
    unusable: list[UnusablePhoto] = field(default_factory=list)
    scan_problems: int = 0  # files the scan skipped (unsupported, unreadable)
    # One item from photos to price, at these items' mean per call (a typical 12 MP photo
    # when there is none to go by); None when a model has no price. What a budget expects.
    cost_per_item_micro_usd: int | None = None
    stale_prices: str | None = None  # the built-in price table is over 90 days old
    grouping: str | None = None  # --group auto: "300 photos → 52 items; 4 boundaries unsure"

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.rows)

    @property
    def input_tokens(self) -> int:
        return sum(row.input_tokens for row in self.rows)

    @property
    def output_tokens(self) -> int:
        return sum(row.output_tokens for row in self.rows)

    @property
    def thinking_tokens(self) -> int:
        return sum(row.thinking_tokens for row in self.rows)

    @property
    def answer_tokens(self) -> int:
        return sum(row.answer_tokens for row in self.rows)

    @property
    def cost_micro_usd(self) -> int | None:
        """Total cost, or None when some model has no price (see `--prices`)."""
        costs = [row.cost_micro_usd for row in self.rows]
        return None if None in costs else sum(c for c in costs if c is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "to_identify": self.to_identify,
            "to_price": self.to_price,
            "already_done": self.already_done,
            "failed_before": self.failed_before,
            "photos": self.photos,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "thinking_tokens": self.thinking_tokens,
            "answer_tokens": self.answer_tokens,
            "cost_micro_usd": self.cost_micro_usd,
            "cost_usd": None if self.cost_micro_usd is None else self.cost_micro_usd / 1_000_000,
            "cost_per_item_micro_usd": self.cost_per_item_micro_usd,
            "models": [asdict(row) for row in self.rows],
            "unusable_photos": [asdict(photo) for photo in self.unusable],
            "scan_problems": self.scan_problems,
            "stale_prices": self.stale_prices,
            "grouping": self.grouping,
        }


def estimate(
    paths: Sequence[Path | str],
    settings: Settings,
    group: GroupBy = "photo",
    on_photo: Callable[[int], None] | None = None,
) -> Estimate:
    """Scan `paths` and predict the calls, tokens and cost of `snap`ping them. Calls no model.
    `on_photo` counts the photos the scan reads (see `scan.scan`)."""
    grouped = None
    if group == "auto":
        from .grouping import known_photos_in

        grouped = known_photos_in(settings.db_path)
    found = scan([Path(p) for p in paths], group=group, on_photo=on_photo, grouped=grouped)
    return estimate_scan(found, settings)


def estimate_scan(found: ScanResult, settings: Settings) -> Estimate:
    """The estimate for items already scanned (what `snap` has in hand before it runs)."""
    result = Estimate(items=len(found.items), scan_problems=len(found.problems))
    known = _known_items(settings.db_path, [item.key for item in found.items])
    vision_input = price_input = 0
    for item in found.items:
        state, identified = known.get(item.key, (None, False))
        if state == "done":
            result.already_done += 1
            continue
        if state == "failed":
            result.failed_before += 1
            continue
        if identified:
            result.to_price += 1
        else:
            tokens = _identify_tokens(item, settings, result)
            if tokens is None:
                continue  # no usable photo: the run marks it bad_photo without a call
            result.to_identify += 1
            vision_input += tokens
        price_input += pricing_input_tokens(model=settings.pricing_model)
    prices = load_prices(settings.prices_file)
    result.rows = [
        _row(prices, settings, Stage.IDENTIFY, result.to_identify, vision_input),
        _row(prices, settings, Stage.PRICE, result.to_identify + result.to_price, price_input),
    ]
    result.cost_per_item_micro_usd = _cost_per_item(result.rows, prices, settings)
    result.stale_prices = stale_prices_note()
    if found.groupings:
        from .grouping import summary_line

        result.grouping = summary_line(found)
    return result


def identify_input_tokens(
    photo_sizes: Sequence[tuple[int, int]],
    notes: str | None = None,
    *,
    model: str | None = None,
    media_resolution: str | None = None,
) -> int:
    """Input tokens of one identify call to `model`: the prepared photos (at
    `media_resolution`, as sent; see `config.stage_options`) plus the system text and prompt."""
    rule = rule_for(model)
    images = sum(
        rule.image_tokens(width, height, media_resolution) for width, height in photo_sizes
    )
    text = rule.text_tokens(prompts.IDENTIFY_SYSTEM) + rule.text_tokens(
        prompts.identify_prompt(notes)
    )
    return images + text


def pricing_input_tokens(
    identification: Identification = TYPICAL_IDENTIFICATION, *, model: str | None = None
) -> int:
    """Input tokens of one pricing call to `model` for `identification` (a typical one by
    default)."""
    rule = rule_for(model)
    return rule.text_tokens(prompts.price_system()) + rule.text_tokens(
        prompts.price_prompt(identification)
    )


def prepared_size(path: Path | str, max_side: int) -> tuple[int, int]:
    """The size `images.prepare_photo` will send, from the file header alone.

    Raises ValueError with a seller's reason when the run will refuse the photo.
    """
    register_heif()
    try:
        # Pillow warns above ~89 MP; we refuse at 50 MP anyway, so only its size matters.
        # (One thread here: `estimate` is a command, not a worker.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=_FORMATS) as image:
                width, height = image.size
                if width * height > DEFAULT_MAX_PIXELS:
                    raise ValueError(f"image too large ({width}×{height} px)")
                if min(width, height) < MIN_SIDE:
                    raise ValueError(f"too small ({width}×{height} px)")
                orientation = _orientation(image)
                if image.format in ("JPEG", "MPO"):
                    image.draft("RGB", (max_side, max_side))  # header only: sets the decode scale
                size = fit_within(image.size, max_side)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not an image we can read ({exc.__class__.__name__})") from None
    return (size[1], size[0]) if orientation in _SIDEWAYS else size


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size Pillow's `thumbnail((max_side, max_side))` gives: aspect kept, never larger."""
    width, height = size
    if width <= max_side and height <= max_side:
        return size
    aspect = width / height
    if aspect <= 1:
        # Portrait or square: the height is max_side; Pillow picks the width whose ratio is closest.
        candidates = (int(max_side * aspect), int(max_side * aspect) + 1)
        best = min(candidates, key=lambda n: abs(aspect - n / max_side))
        return max(best, 1), max_side
    exact = max_side / aspect
    candidates = (int(exact), int(exact) + 1)
    best = min(candidates, key=lambda n: 0 if n == 0 else abs(aspect - max_side / n))
    return max_side, max(best, 1)


def _identify_tokens(item: FoundItem, settings: Settings, result: Estimate) -> int | None:
    sizes = []
    for photo in item.photos:  # already distinct by content (scan)
        try:
            sizes.append(prepared_size(photo.path, settings.max_side))
        except ValueError as exc:
            result.unusable.append(UnusablePhoto(display_path(photo.path), str(exc)))
    if len(sizes) < len(item.photos):
        # prepare_photo fails the whole item on one bad photo: no call is made for it.
        return None
    result.photos += len(sizes)
    return identify_input_tokens(
        sizes,
        item.notes,
        model=settings.vision_model,
        media_resolution=_options(settings, Stage.IDENTIFY).media_resolution,
    )


def _cost_per_item(
    rows: list[ModelRow], prices: dict[str, ModelPrice], settings: Settings
) -> int | None:
    """One item at the high end of its output, for a budget: the mean input per call (a
    typical photo's when there is none), answers of `BUDGET_ANSWER_TOKENS`, and thoughts at
    the top of their spread (`tokens.THINKING_SPREAD`). An expected cost would let half the
    items overrun `--max-cost`."""
    typical = {
        Stage.IDENTIFY.value: identify_input_tokens(
            [fit_within(TYPICAL_PHOTO, settings.max_side)],
            model=settings.vision_model,
            media_resolution=_options(settings, Stage.IDENTIFY).media_resolution,
        ),
        Stage.PRICE.value: pricing_input_tokens(model=settings.pricing_model),
    }
    total = 0
    for row in rows:
        stage = Stage(row.stage)
        input_tokens = -(-row.input_tokens // row.requests) if row.requests else typical[row.stage]
        expected = rule_for(row.model).thought_tokens(_options(settings, stage).thinking_level)
        thinking = math.ceil(expected * (1 + THINKING_SPREAD))
        output = thinking + BUDGET_ANSWER_TOKENS[stage]
        cost = call_cost_micros(prices, row.model, input_tokens, output)
        if cost is None:
            return None
        total += cost
    return total


def _options(settings: Settings, stage: Stage) -> StageOptions:
    """What the stage's requests will carry (the pipeline builds them the same way)."""
    if stage == Stage.IDENTIFY:
        return stage_options(
            settings.vision_model, settings.media_resolution, settings.identify_thinking
        )
    return stage_options(settings.pricing_model, None, settings.price_thinking)


def _row(
    prices: dict[str, ModelPrice],
    settings: Settings,
    stage: Stage,
    requests: int,
    input_tokens: int,
) -> ModelRow:
    model = settings.vision_model if stage == Stage.IDENTIFY else settings.pricing_model
    thinking = requests * rule_for(model).thought_tokens(_options(settings, stage).thinking_level)
    answer = requests * OUTPUT_TOKENS[stage]
    return ModelRow(
        model=model,
        stage=stage.value,
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=thinking + answer,
        cost_micro_usd=call_cost_micros(prices, model, input_tokens, thinking + answer),
        thinking_tokens=thinking,
        answer_tokens=answer,
    )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block counts as upright, as in images.prepare_photo
        return 1
    return value if isinstance(value, int) else 1


def _known_items(db_path: Path, keys: list[str]) -> dict[str, tuple[str, bool]]:
    """item key → (job state, identification saved) for the keys the database knows."""
    if not keys or not Path(db_path).is_file():
        return {}
    with Store.open_read_only(db_path) as store:
        return store.states_by_key(keys)
