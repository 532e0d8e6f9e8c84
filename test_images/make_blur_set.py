"""The photos that calibrate the blur warning, and the score it gets on them.

    python test_images/make_blur_set.py            # precision/recall of the blur flag
    python test_images/make_blur_set.py DIR        # also write the photos into DIR as JPEGs

A seller's photo is often one plain object on a plain background: few edges, each of them
sharp. A measure that counts edges (the variance of a Laplacian) calls that blurry. The set:
flat shapes on plain backgrounds at several sizes and colours (low contrast and equal
luminance included), the same photos Gaussian-blurred at radius 2, 3 and 4, and busy sharp
photos (texture, stripes, many small shapes). tests/test_images.py asserts on it; `BLUR_SET`
is what it imports. Everything is drawn from fixed seeds: the same set on every machine.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZES = ((320, 240), (640, 480), (1024, 768), (1600, 1200), (900, 1200))
# (background, object): light, dark, saturated, low contrast, and red on green of equal grey.
COLOURS = (
    ((245, 245, 245), (30, 60, 160)),
    ((255, 255, 255), (200, 40, 40)),
    ((20, 20, 25), (230, 200, 60)),
    ((225, 225, 225), (190, 190, 196)),
    ((120, 170, 90), (200, 110, 100)),
    ((250, 240, 220), (140, 100, 70)),
)
BLUR_RADII = (2, 3, 4)


@dataclass(frozen=True)
class BlurSample:
    name: str
    image: Image.Image
    blurred: bool


def flat_photo(size: tuple[int, int], background: tuple, colour: tuple, seed: int) -> Image.Image:
    """One to three plain shapes, no texture, no noise: a product on a backdrop."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        w = int(width * rng.uniform(0.15, 0.5))
        h = int(height * rng.uniform(0.15, 0.5))
        x, y = rng.randrange(0, width - w), rng.randrange(0, height - h)
        box = (x, y, x + w, y + h)
        shape = rng.choice(("rectangle", "ellipse", "polygon", "rounded"))
        if shape == "rectangle":
            draw.rectangle(box, fill=colour)
        elif shape == "ellipse":
            draw.ellipse(box, fill=colour)
        elif shape == "rounded":
            draw.rounded_rectangle(box, radius=min(w, h) // 5, fill=colour)
        else:
            points = [
                (x + rng.randrange(w), y + rng.randrange(h)) for _ in range(rng.randint(3, 6))
            ]
            draw.polygon(points, fill=colour)
    return image


def busy_photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A sharp photo full of detail: texture, stripes or many small shapes."""
    rng = random.Random(seed)
    kind = seed % 3
    if kind == 0:
        noise = Image.effect_noise(size, 60).convert("RGB")
        base = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), 128))
        return Image.blend(base, noise, 0.5)
    image = Image.new("RGB", size, (235, 235, 230))
    draw = ImageDraw.Draw(image)
    width, height = size
    if kind == 1:
        step = max(4, width // rng.randint(20, 60))
        for x in range(0, width, step * 2):
            draw.rectangle((x, 0, x + step - 1, height), fill=(40, 40, 40))
        return image
    for _ in range(300):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randint(2, max(3, width // 40))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    return image


def _blur_set() -> Iterator[BlurSample]:
    seed = 0
    for size in SIZES:
        for background, colour in COLOURS:
            seed += 1
            sharp = flat_photo(size, background, colour, seed)
            name = f"flat-{size[0]}x{size[1]}-{seed:02d}"
            yield BlurSample(f"{name}.jpg", sharp, False)
            radius = BLUR_RADII[seed % len(BLUR_RADII)]
            soft = sharp.filter(ImageFilter.GaussianBlur(radius))
            yield BlurSample(f"{name}-blur{radius}.jpg", soft, True)
    for index, size in enumerate(SIZES * 2):
        sharp = busy_photo(size, index)
        name = f"busy-{size[0]}x{size[1]}-{index:02d}"
        yield BlurSample(f"{name}.jpg", sharp, False)
        radius = BLUR_RADII[index % len(BLUR_RADII)]
        yield BlurSample(
            f"{name}-blur{radius}.jpg", sharp.filter(ImageFilter.GaussianBlur(radius)), True
        )


def blur_set() -> list[BlurSample]:
    """The calibration set, each photo as a seller's camera would store it (JPEG, quality 90)."""
    samples = []
    for sample in _blur_set():
        out = io.BytesIO()
        sample.image.save(out, "JPEG", quality=90)
        out.seek(0)
        samples.append(BlurSample(sample.name, Image.open(out), sample.blurred))
    return samples


def is_blurred(name: str) -> bool:
    return "-blur" in name


def score(flagged: dict[str, bool], samples: list[BlurSample]) -> dict[str, float]:
    """Precision and recall of a blur flag, and the share of sharp photos left unflagged."""
    truth = {s.name: s.blurred for s in samples}
    hits = sum(1 for name, flag in flagged.items() if flag and truth[name])
    flags = sum(flagged.values())
    blurred = sum(truth.values())
    sharp = len(truth) - blurred
    false_flags = flags - hits
    return {
        "precision": hits / flags if flags else 1.0,
        "recall": hits / blurred,
        "sharp_unflagged": (sharp - false_flags) / sharp,
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dealscout_cli.images import BLURRY, quality_warnings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path)
    args = parser.parse_args()
    samples = blur_set()
    if args.folder:
        args.folder.mkdir(parents=True, exist_ok=True)
        for sample in samples:
            sample.image.save(args.folder / sample.name, "JPEG", quality=90)
    flagged = {s.name: BLURRY in quality_warnings(s.image) for s in samples}
    for sample in samples:
        if flagged[sample.name] != sample.blurred:
            print("wrong:", sample.name, "flagged" if flagged[sample.name] else "missed")
    sharp = sum(not s.blurred for s in samples)
    print(f"{len(samples)} photos ({sharp} sharp, {len(samples) - sharp} blurred)")
    for key, value in score(flagged, samples).items():
        print(f"{key}: {value:.1%}")


if __name__ == "__main__":
    main()
