"""`--group auto`: split a folder of photos taken one product after another into items.

A reseller photographs product after product and copies IMG_0001.jpg ... into one folder.
The photos are put in capture order (EXIF DateTimeOriginal, else the file time, else the
name), and a boundary is drawn between two neighbours when the next photo is clearly of
another product. Two signals, both local and cheap (~10 ms a photo, one small decode):

- the gap in capture time: seconds between shots of one product, tens of seconds to
  minutes between products. Measured against this shoot's own typical gap (its median),
  so a slow photographer is not split at every shot;
- a change in what is pictured: the object's colours (a hue/saturation histogram of the
  pixels that differ from the border, so the backdrop and the light count little; also with
  the backdrop's colour divided out, which cancels a warm or cool cast that falls on both),
  its layout (a coarse colour grid) and a perceptual hash (near-identical shots). A product is
  shot from several angles, so the next photo is compared with the last few photos before
  it and the few after it, and the closest pair counts.

A label or barcode close-up looks like nothing else in the item; it is recognised (almost no
colour in the middle of the frame once the light's cast is taken out, and fine light/dark
detail: bars, print) and goes with whichever neighbour it was shot closer in time, or, when
both gaps are alike, with the one whose colours show around the label's rim. A photo that
cannot be decoded goes by time alone (the run reports it with its item).

Each boundary gets a score (time evidence + visual evidence); one far from the threshold
is decided, one near it is `unsure`. `--confirm-groups` sends the unsure ones, as small
thumbnails either side, to the vision model in one request (`confirm_groups`), and its
answers are kept in the store keyed by the photos' hashes, so a rerun asks nothing.

Photos that already belong to an item are never regrouped: they keep their item.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from pydantic import BaseModel

if TYPE_CHECKING:
    import numpy as np

    from dealscout_cli.config import Settings
    from dealscout_cli.images import PreparedImage
    from dealscout_cli.records import EnqueueReport
    from dealscout_cli.scan import FoundItem, FoundPhoto, GroupedPhotos, ScanBatch, ScanResult
    from dealscout_cli.store import Store

EXIF_IFD = 0x8769
DATE_TIME_ORIGINAL = 36867
DATE_TIME = 0x0132
THUMB_SIDE = 160  # the decode size for signatures (a JPEG draft makes it cheap)
QUESTION_SIDE = 192  # the long side of a thumbnail sent to the model
WINDOW = 5  # photos compared either side of a boundary: a product is shot from several angles
THRESHOLD = 0.0  # score above: another product
UNSURE_MARGIN = 0.4  # |score| below: unsure (what --confirm-groups asks about; ~10% of them)
# The score, set on generated shoots (tests/shoot_factory.py, seeds 7-14; the benchmark
# reports seeds 1-5 and 20-24, never used to set them). Time: log2(gap / the shoot's median
# gap) / 2 - TIME_OFFSET, at most TIME_CAP, times TIME_WEIGHT: a gap like the usual one argues
# strongly for the same product, a long one only a little for another (people pause within a
# product too); a gap shorter than the usual one counts SHORT_GAP_WEIGHT times more (seconds
# apart is almost always one product, however unlike two angles of it look). Visual: how far
# the closest pair across the boundary is above VISUAL_MARGIN times the shoot's median
# distance, in medians, times VISUAL_WEIGHT.
TIME_WEIGHT, TIME_OFFSET, TIME_CAP = 2.0, 0.5, 0.15
VISUAL_MARGIN, VISUAL_WEIGHT = 1.1, 2.0
SHORT_GAP_WEIGHT = 1.5
USUAL_CAP = 0.5  # 40-product shoots: 0.27-0.36, so it binds only on short runs
LAYOUT_WEIGHT = 0.1
RIM_TIME_RATIO = 3.0  # gaps either side of a label shot within this factor: its rim decides
RIM_MARGIN = 0.2  # ...when one side's colours are this much closer to the rim's
FAR_PAIR_PENALTY = 0.04  # per step away from the boundary: the nearest pair weighs most


class Why(StrEnum):
    """Why a group starts where it does (stored with the item, shown by `dealscout group`)."""

    FIRST = "first photo"
    TIME_GAP = "time gap"
    VISUAL = "visual change"
    TIME_AND_VISUAL = "time gap and visual change"
    MODEL = "model"
    MERGED = "merged"
    SPLIT = "split"


@dataclass(frozen=True)
class Signature:
    """What grouping knows about one photo: when it was taken and what it shows."""

    taken: float  # unix seconds (EXIF, else file time)
    clock: str  # "exif" or "file"
    colours: tuple[float, ...]  # object hue/saturation histogram, sums to 1
    balanced: tuple[float, ...]  # the same with the backdrop's colour divided out (the cast)
    layout: tuple[float, ...]  # coarse grid, lightness-normalised chroma
    phash: int
    label: bool  # looks like a label or barcode close-up
    blind: bool = False  # could not be decoded: time alone places it

    @property
    def joins_by_time(self) -> bool:
        """A label shot or an unreadable photo: it goes with the neighbour nearer in time."""
        return self.label or self.blind


@dataclass(frozen=True)
class Boundary:
    """Between photo `index - 1` and photo `index` of a folder's sequence."""

    index: int
    gap_seconds: float
    distance: float  # visual: 0 same, 1 nothing alike
    score: float  # > THRESHOLD: another product
    split: bool
    unsure: bool
    why: Why

    def decided(self, split: bool) -> Boundary:
        return replace(self, split=split, unsure=False, why=Why.MODEL if split else self.why)


@dataclass
class Grouping:
    """One folder's new photos in capture order and the boundaries between them."""

    source: str
    photos: list[FoundPhoto]
    boundaries: list[Boundary]  # len(photos) - 1, boundaries[i] before photos[i + 1]
    known: list[FoundItem] = field(default_factory=list)  # photos already in items, kept
    model_decided: int = 0
    reasons: dict[str, GroupReason] = field(default_factory=dict)  # item key → why, by items()

    @property
    def unsure(self) -> list[Boundary]:
        return [b for b in self.boundaries if b.unsure]

    def groups(self) -> list[tuple[list[FoundPhoto], Why, Boundary | None]]:
        """The photos of each group, why it starts, and the boundary it starts at."""
        if not self.photos:
            return []
        groups: list[tuple[list[FoundPhoto], Why, Boundary | None]] = [
            ([self.photos[0]], Why.FIRST, None)
        ]
        for boundary in self.boundaries:
            photo = self.photos[boundary.index]
            if boundary.split:
                groups.append(([photo], boundary.why, boundary))
            else:
                groups[-1][0].append(photo)
        return groups

    def items(self) -> list[FoundItem]:
        """The known items, then one item per group; why each new one starts goes in `reasons`."""
        from dealscout_cli.scan import FoundItem, item_key

        made = list(self.known)
        for photos, why, boundary in self.groups():
            made.append(
                FoundItem(
                    key=item_key([p.sha256 for p in photos]),
                    label=_stem(photos[0]),
                    photos=tuple(photos),
                    notes=None,
                    source=self.source,
                )
            )
            self.reasons[made[-1].key] = GroupReason(why, boundary)
        return made


@dataclass(frozen=True)
class GroupReason:
    """Why an item starts where it does, as stored: the reason and the numbers behind it."""

    why: Why
    boundary: Boundary | None = None

    @property
    def unsure(self) -> bool:
        return self.boundary is not None and self.boundary.unsure

    def detail(self) -> dict[str, float]:
        if self.boundary is None:
            return {}
        b = self.boundary
        return {
            "gap_seconds": round(b.gap_seconds, 1),
            "distance": round(b.distance, 3),
            "score": round(b.score, 3),
        }


def group_photos(
    photos: Sequence[FoundPhoto],
    source: str,
    known: Mapping[str, tuple[str, int]] | None = None,
) -> Grouping:
    """Group a folder's photos (distinct by content). `known` maps a photo's sha256 to the key
    of the item it already belongs to and its place there: those photos keep their item."""
    from dealscout_cli.scan import FoundItem

    known = known or {}
    kept: dict[str, list[FoundPhoto]] = {}
    new: list[FoundPhoto] = []
    for photo in photos:
        if photo.sha256 in known:
            kept.setdefault(known[photo.sha256][0], []).append(photo)
        else:
            new.append(photo)
    known_items = []
    for key, group in kept.items():
        group.sort(key=lambda photo: known[photo.sha256][1])  # their place in the item
        known_items.append(FoundItem(key, _stem(group[0]), tuple(group), None, source))
    signatures = [signature(photo.path, photo.mtime_ns) for photo in new]
    order = sorted(range(len(new)), key=lambda i: (signatures[i].taken, str(new[i].path)))
    ordered = [new[i] for i in order]
    sigs = [signatures[i] for i in order]
    return Grouping(source, ordered, boundaries(sigs), known_items)


def boundaries(sigs: Sequence[Signature]) -> list[Boundary]:
    """Score the boundary between each pair of neighbours in capture order."""
    if len(sigs) < 2:
        return []
    gaps = [max(0.0, sigs[i].taken - sigs[i - 1].taken) for i in range(1, len(sigs))]
    typical = max(2.0, _median(gaps))
    distances = [_window_distance(sigs, i) for i in range(1, len(sigs))]
    # The usual distance between neighbours, at most USUAL_CAP: in a short run of a few
    # products the median is itself a change of product.
    usual = min(USUAL_CAP, _median([d for d in distances if not math.isnan(d)] or [0.3]))
    result = []
    for i in range(1, len(sigs)):
        gap, distance = gaps[i - 1], distances[i - 1]
        time_evidence = TIME_WEIGHT * min(
            TIME_CAP, math.log2(max(gap, 0.5) / typical) / 2 - TIME_OFFSET
        )
        if time_evidence < 0:  # a gap like the usual one: seconds between shots of a product
            time_evidence *= SHORT_GAP_WEIGHT
        if math.isnan(distance):  # a label shot on one side: time alone decides
            score = time_evidence + 0.25
            visual_evidence = 0.0
        else:
            visual_evidence = (distance - VISUAL_MARGIN * usual) / max(usual, 0.05) * VISUAL_WEIGHT
            score = time_evidence + visual_evidence
        split = score > THRESHOLD
        why = _why(time_evidence > 0, visual_evidence > 0)
        result.append(
            Boundary(
                index=i,
                gap_seconds=gap,
                distance=0.0 if math.isnan(distance) else distance,
                score=score,
                split=split,
                unsure=abs(score - THRESHOLD) < UNSURE_MARGIN,
                why=why,
            )
        )
    return _labels_join_neighbours(sigs, gaps, result)


def _why(time_says: bool, visual_says: bool) -> Why:
    if time_says and visual_says:
        return Why.TIME_AND_VISUAL
    return Why.TIME_GAP if time_says else Why.VISUAL


def _labels_join_neighbours(
    sigs: Sequence[Signature], gaps: Sequence[float], found: list[Boundary]
) -> list[Boundary]:
    """A label shot belongs to the product it was shot with: no boundary on the side it is
    closer in time to; the other side keeps its score."""
    result = list(found)
    for i, sig in enumerate(sigs):
        if not sig.joins_by_time:
            continue
        before = gaps[i - 1] if i > 0 else math.inf
        after = gaps[i] if i < len(gaps) else math.inf
        side = i - 1 if before <= after else i  # index into boundaries
        # Time decides when one side is clearly nearer (seconds against a pause); when both
        # gaps are alike, the side whose nearest photo has the colours of the label's rim.
        if max(before, after) < RIM_TIME_RATIO * max(min(before, after), 1.0):
            side = _rim_side(sigs, i, side)
        if 0 <= side < len(result):
            result[side] = replace(result[side], split=False, unsure=False)
    return result


def _rim_side(sigs: Sequence[Signature], i: int, side: int) -> int:
    """The side (an index into boundaries) whose nearest photo shows the colours label shot
    `i` shows around its edge, when one side clearly does; else `side`."""
    if sigs[i].blind:
        return side
    unlike = []
    for step in (-1, 1):
        j = i + step
        while 0 <= j < len(sigs) and sigs[j].joins_by_time:
            j += step
        if not 0 <= j < len(sigs):
            return side
        unlike.append(_unlike(sigs[i].colours, sigs[j].colours))
    if abs(unlike[0] - unlike[1]) < RIM_MARGIN:
        return side
    return i - 1 if unlike[0] < unlike[1] else i


def _window_distance(sigs: Sequence[Signature], i: int) -> float:
    """The closest pair across the boundary before photo `i`, WINDOW photos each side,
    label shots left out (NaN when one side has none)."""
    left = [s for s in sigs[max(0, i - WINDOW) : i] if not s.joins_by_time]
    right = [s for s in sigs[i : i + WINDOW] if not s.joins_by_time]
    if not left or not right:
        return math.nan
    # The nearest neighbours weigh most: a pair further apart must be clearly closer to count.
    best = math.inf
    for a_index, a in enumerate(reversed(left)):
        for b_index, b in enumerate(right):
            penalty = FAR_PAIR_PENALTY * (a_index + b_index)
            best = min(best, distance(a, b) + penalty)
    return best


def distance(a: Signature, b: Signature) -> float:
    """How unlike two photos look, 0 (the same shot) to about 1 (nothing alike)."""
    colours = min(_unlike(a.colours, b.colours), _unlike(a.balanced, b.balanced) + BALANCED_PENALTY)
    layout = math.sqrt(sum((x - y) ** 2 for x, y in zip(a.layout, b.layout, strict=True)))
    layout = min(1.0, layout / 2.0)
    near_copy = (a.phash ^ b.phash).bit_count() / 64
    if near_copy < 0.12:  # the same shot again (a burst): certainly one product
        return near_copy
    return (1 - LAYOUT_WEIGHT) * colours + LAYOUT_WEIGHT * layout


def _unlike(a: Sequence[float], b: Sequence[float]) -> float:
    """1 - the intersection of two histograms."""
    return 1.0 - sum(min(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- signatures


def signature(path: Path, mtime_ns: int) -> Signature:
    """One small decode of the photo: its capture time and its visual signature. A photo
    that cannot be decoded is `blind`: its file time places it, and it joins a neighbour
    by time alone (the run says what is wrong with it)."""
    import imagehash
    import numpy as np

    from dealscout_cli.errors import BadPhoto
    from dealscout_cli.images import display_path, open_image, read_photo_bytes

    try:
        # images' own checks (format, size, pixel count), so what snap would refuse is not
        # decoded here either, and no thread-wide warnings filter is needed for the bomb check.
        with open_image(read_photo_bytes(path), display_path(path)) as image:
            taken, clock = _capture_time(image, mtime_ns)
            image.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
            small = image.convert("RGB")
            small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    except (BadPhoto, OSError, ValueError, SyntaxError):
        return Signature(mtime_ns / 1e9, "file", (), (), (), 0, label=False, blind=True)
    phash = int(str(imagehash.phash(small)), 16)
    pixels = np.asarray(small.resize((64, 48)), dtype=np.float32) / 255.0
    label = _looks_like_label(np.asarray(small, dtype=np.float32) / 255.0)
    # A label close-up's own colours are paper and print; its product shows around its rim.
    colours, balanced = _rim_colours(pixels) if label else _object_colours(pixels)
    return Signature(
        taken=taken,
        clock=clock,
        colours=tuple(colours),
        balanced=tuple(balanced),
        layout=tuple(_layout(pixels)),
        phash=phash,
        label=label,
    )


def _capture_time(image: Image.Image, mtime_ns: int) -> tuple[float, str]:
    try:
        exif = image.getexif()
        text = exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL) or exif.get(DATE_TIME)
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        if isinstance(text, str):
            return datetime.strptime(text.strip()[:19], "%Y:%m:%d %H:%M:%S").timestamp(), "exif"
    except Exception:  # a broken EXIF block: the file time stands in
        pass
    return mtime_ns / 1e9, "file"


def _hsv(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import numpy as np

    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    high = pixels.max(axis=-1)
    low = pixels.min(axis=-1)
    chroma = high - low
    safe = np.where(chroma == 0, 1, chroma)
    hue = np.where(
        high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = np.where(chroma == 0, 0, hue) / 6.0
    saturation = np.where(high == 0, 0, chroma / np.where(high == 0, 1, high))
    return hue, saturation, high


HUE_BINS = 18
GREY_BINS = 3
SATURATED = 0.2  # below: a grey pixel
DEEP = 0.5  # saturation above which a hue counts in its own (deep) bins
GREY_WEIGHT = 0.5  # grey says less about a product than a hue
HUE_SPILL = 0.25  # share of a hue bin spread to each neighbour: a warm light moves hues
BACKDROP_GREY = 0.6  # the backdrop's colour divided out, scaled to this grey
BALANCED_PENALTY = 0.05  # the balanced colours count only when clearly closer (a backdrop
# change also changes what is divided out)
BACKDROP_DISTANCE = 0.07  # RGB distance (0-1 scale) from every edge colour: the object


def _object_colours(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue histogram (pale and deep apart) plus grey levels, of the pixels unlike the
    frame's edge: the object, mostly, whatever the backdrop."""
    import numpy as np

    # The backdrop is whatever colours the frame's edge shows (a shadow across it gives two
    # tones): a pixel near any of them is backdrop. An object cut by the frame loses only the
    # part of it that touches the edge.
    edge = np.concatenate(
        [pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3),
         pixels[:, -2:].reshape(-1, 3)]
    )[::3]  # fmt: skip
    flat = pixels.reshape(-1, 3)
    nearest = np.sqrt(((flat[:, None, :] - edge[None, :, :]) ** 2).sum(axis=-1)).min(axis=1)
    mask = (nearest > BACKDROP_DISTANCE).reshape(pixels.shape[:2])
    if mask.sum() < pixels.shape[0] * pixels.shape[1] * 0.03:
        mask = np.ones(mask.shape, dtype=bool)  # nothing stands out: the whole frame
    # The light's colour and strength multiply every pixel, the backdrop's too: divided by
    # the backdrop, a warm and a cool shot of one product on one backdrop look alike.
    backdrop = np.median(edge, axis=0)
    gain = BACKDROP_GREY / np.maximum(backdrop, 0.05)
    return _colours(pixels[mask]), _colours(np.clip(pixels[mask] * gain, 0.0, 1.0))


def _colours(pixels: np.ndarray) -> np.ndarray:
    """Hue histogram (pale and deep apart) plus grey levels of these pixels."""
    import numpy as np

    hue, saturation, value = _hsv(pixels)
    coloured = (saturation > SATURATED) & (value > 0.15)
    hist = np.zeros(HUE_BINS * 2 + GREY_BINS, dtype=np.float64)
    bins = np.minimum((hue[coloured] * HUE_BINS).astype(int), HUE_BINS - 1)
    np.add.at(hist, bins + HUE_BINS * (saturation[coloured] > DEEP), 1.0)
    grey = np.minimum((value[~coloured] * GREY_BINS).astype(int), GREY_BINS - 1)
    np.add.at(hist, HUE_BINS * 2 + grey, GREY_WEIGHT)
    for level in (0, HUE_BINS):
        hues = hist[level : level + HUE_BINS].copy()
        spilt = HUE_SPILL * (np.roll(hues, 1) + np.roll(hues, -1))
        hist[level : level + HUE_BINS] = (1 - 2 * HUE_SPILL) * hues + spilt
    total = hist.sum()
    return hist / total if total else hist


def _rim_colours(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The colours of the frame's outer edge, three pixels deep (twice: `_object_colours`)."""
    import numpy as np

    rim = np.concatenate(
        [pixels[:3].reshape(-1, 3), pixels[-3:].reshape(-1, 3), pixels[3:-3, :3].reshape(-1, 3),
         pixels[3:-3, -3:].reshape(-1, 3)]
    )  # fmt: skip
    colours = _colours(rim)
    return colours, colours


def _layout(pixels: np.ndarray) -> np.ndarray:
    """A 4×3 grid of chroma (lightness taken out), so light changes little of it."""

    grid = pixels.reshape(3, 16, 4, 16, 3).mean(axis=(1, 3))
    lightness = grid.mean(axis=-1, keepdims=True)
    chroma: np.ndarray = (grid - lightness).reshape(-1)
    return chroma * 4


def _looks_like_label(pixels: np.ndarray) -> bool:
    """A label or barcode close-up: the middle of the frame has almost no colour (white
    paper, black print) and a lot of fine light/dark detail (bars, text)."""
    import numpy as np

    middle = pixels[
        pixels.shape[0] // 5 : -pixels.shape[0] // 5, pixels.shape[1] // 5 : -pixels.shape[1] // 5
    ]
    grey = middle.mean(axis=-1)
    paper = middle[grey >= np.percentile(grey, 70)].mean(axis=0)  # the light's cast on white
    balanced = middle / np.maximum(paper, 0.05) * paper.mean()
    chroma = balanced.max(axis=-1) - balanced.min(axis=-1)
    if (chroma < 0.1).mean() < 0.75:
        return False
    if grey.max() - grey.min() < 0.35:
        return False
    edges = np.abs(np.diff(grey, axis=1)) > 0.12
    return bool(edges.mean() > 0.12)


def thumbnail(
    path: Path | str, side: int = QUESTION_SIDE, *, sha256: str | None = None
) -> PreparedImage:
    """A small JPEG of the photo for a boundary question, made like every photo sent to a
    model (`images.prepare_photo`: checked, upright, no metadata at all); BadPhoto if it
    cannot be, or (with `sha256`) if the file changed since it was scanned."""
    from dealscout_cli.images import prepare_photo

    return prepare_photo(Path(path), max_side=side, expected_sha256=sha256, quality=80)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _stem(photo: FoundPhoto) -> str:
    from dealscout_cli.images import display_path

    return display_path(os.path.splitext(photo.path.name)[0])


# ---------------------------------------------------------------- --confirm-groups


class PairAnswer(BaseModel):
    pair: int
    same_product: bool


class PairAnswers(BaseModel):
    """The answer to one boundary question: for each pair of photos, same product or not."""

    answers: list[PairAnswer]


@dataclass(frozen=True)
class Confirmed:
    """What --confirm-groups did: boundaries asked about, answered from the cache, calls made."""

    asked: int = 0
    cached: int = 0
    calls: int = 0
    unanswered: int = 0  # the model left them out, or the call failed: the local guess stands


PAIRS_PER_CALL = 24  # 48 thumbnails of ~258 tokens: one request well under any limit


def confirm_groups(found: ScanResult | ScanBatch, store: Store, settings: Settings) -> Confirmed:
    """Let the vision model decide the unsure boundaries of every auto grouping in `found`,
    cached answers first; `found.items` is rebuilt with the decisions. Every call is recorded
    (stage "group", no item) with its cost; a failed call leaves the local decision."""
    unsure = [(g, b) for g in found.groupings for b in g.unsure]
    if not unsure:
        return Confirmed()
    pairs = {(g.photos[b.index - 1].sha256, g.photos[b.index].sha256): (g, b) for g, b in unsure}
    answers = store.group_answers(pairs)
    cached = len(answers)
    missing = [pair for pair in pairs if pair not in answers]
    calls = 0
    if missing:
        import anyio

        fresh, calls = anyio.run(_ask, [pairs[p] for p in missing], store, settings)
        store.save_group_answers(fresh, model=settings.vision_model, now=time.time())
        answers.update(fresh)
    decided: dict[int, dict[int, bool]] = {}
    for pair, (grouping, boundary) in pairs.items():
        if pair in answers:
            decided.setdefault(id(grouping), {})[boundary.index] = not answers[pair]
    for grouping in found.groupings:
        _apply(found, grouping, decided.get(id(grouping), {}))
    return Confirmed(len(pairs), cached, calls, len(pairs) - len(answers))


def _apply(found: ScanResult | ScanBatch, grouping: Grouping, splits: Mapping[int, bool]) -> None:
    if not splits:
        return
    old = {item.key for item in grouping.items()}
    grouping.boundaries = [
        b.decided(splits[b.index]) if b.index in splits else b for b in grouping.boundaries
    ]
    grouping.model_decided += len(splits)
    grouping.reasons.clear()
    found.items = [item for item in found.items if item.key not in old] + grouping.items()


async def _ask(
    questions: list[tuple[Grouping, Boundary]], store: Store, settings: Settings
) -> tuple[dict[tuple[str, str], bool], int]:
    """Ask in requests of PAIRS_PER_CALL pairs; the answers by (sha before, sha after)."""
    from dealscout_cli import prompts
    from dealscout_cli.config import stage_options
    from dealscout_cli.costs import load_prices
    from dealscout_cli.engines import model_endpoint, pipeline_config
    from dealscout_cli.errors import ProviderError
    from dealscout_cli.pipeline import Pipeline
    from dealscout_cli.providers import open_provider
    from dealscout_cli.providers.base import ImagePart, ModelRequest
    from dealscout_cli.records import CallRecord, Stage
    from dealscout_cli.retry import policy_for

    async def record(call: CallRecord) -> None:
        store.record_call(None, call)

    answers: dict[tuple[str, str], bool] = {}
    calls = 0
    with model_endpoint(settings) as endpoint:
        provider = open_provider(endpoint)
        pipeline = Pipeline(
            provider,
            pipeline_config(endpoint),
            load_prices(endpoint.prices_file),
            record,
            policy=policy_for(max_retries=endpoint.max_retries, max_attempts=1),
        )
        try:
            for start in range(0, len(questions), PAIRS_PER_CALL):
                chunk = questions[start : start + PAIRS_PER_CALL]
                images = []
                for grouping, boundary in chunk:
                    for photo in grouping.photos[boundary.index - 1 : boundary.index + 1]:
                        small = thumbnail(photo.path, sha256=photo.sha256)
                        images.append(
                            ImagePart(small.data, small.mime_type, small.width, small.height)
                        )
                # The cheapest look that tells products apart: low media resolution
                # (280 tokens a thumbnail on Gemini 3) and little thinking.
                options = stage_options(endpoint.vision_model, "low", "low")
                request = ModelRequest(
                    media_resolution=options.media_resolution,
                    thinking_level=options.thinking_level,
                    model=endpoint.vision_model,
                    system=prompts.GROUP_SYSTEM,
                    prompt=prompts.group_prompt(len(chunk)),
                    schema=PairAnswers,
                    images=tuple(images),
                    max_output_tokens=64 + 24 * len(chunk),
                    temperature=0.0,
                )
                calls += 1
                try:
                    parsed = await pipeline.ask(request, Stage.GROUP)
                except ProviderError:
                    continue  # recorded; the local decisions stand for these boundaries
                assert isinstance(parsed, PairAnswers)
                for answer in parsed.answers:
                    if 1 <= answer.pair <= len(chunk):
                        grouping, boundary = chunk[answer.pair - 1]
                        before = grouping.photos[boundary.index - 1].sha256
                        answers[(before, grouping.photos[boundary.index].sha256)] = (
                            answer.same_product
                        )
        finally:
            await provider.aclose()
    return answers, calls


def known_photos_in(db_path: Path) -> GroupedPhotos:
    """`scan`'s lookup of photos already in items, read from the database at `db_path`
    (none when it does not exist yet); it only reads."""

    def lookup(sha256s: list[str]) -> Mapping[str, tuple[str, int]]:
        from dealscout_cli.store import Store

        if not sha256s or not Path(db_path).is_file():
            return {}
        with Store.open_read_only(db_path) as store:
            return store.items_of_photos(sha256s)

    return lookup


def summary_line(found: ScanResult) -> str | None:
    """'300 photos → 52 items; 4 boundaries unsure', or None without auto grouping."""
    if not found.groupings:
        return None
    photos = sum(len(g.photos) + sum(len(i.photos) for i in g.known) for g in found.groupings)
    items = sum(len(g.groups()) + len(g.known) for g in found.groupings)
    unsure = sum(len(g.unsure) for g in found.groupings)
    kept = sum(len(g.known) for g in found.groupings)
    asked = sum(g.model_decided for g in found.groupings)
    line = f"{photos} photos → {items} items; {unsure} boundaries unsure"
    if asked:
        line += f", {asked} decided by the model"
    if kept:
        line += f"; {kept} items kept as grouped before"
    return line


def group_shoot(
    paths: Sequence[Path],
    settings: Settings,
    *,
    confirm: bool = False,
    on_photo: Callable[[int], None] | None = None,
) -> tuple[ScanResult, EnqueueReport]:
    """`dealscout group PATHS`: group the photos and queue the items, calling no model (unless
    `confirm`), so the seller can correct the groups before `snap` spends anything."""
    from dealscout_cli.scan import scan
    from dealscout_cli.store import Store

    found = scan(paths, group="auto", on_photo=on_photo, grouped=known_photos_in(settings.db_path))
    now = time.time()
    with Store.open(settings.db_path) as store:
        if confirm:
            confirm_groups(found, store, settings)
        report = store.enqueue(found.items, now=now, offline=settings.offline)
        store.record_groups([(g.source, g.reasons) for g in found.groupings], now=now)
    return found, report
