"""A reseller's shoot drawn with Pillow: many products, several photos each, one folder.

`make_shoot(folder, products=40)` writes IMG_0001.jpg ... like a phone does, and returns the
truth: which product each file shows. It is made to look like a real session, so grouping
photos into items is not trivial:

- each product is a drawn object (its own shape, two colours and a texture) photographed
  2-8 times from different angles and distances, some shots cropped by the frame;
- backgrounds change within a product as well as between products (the seller moves the
  object from the table to the floor), and lighting changes from shot to shot (brightness,
  a warm or cool cast, a shadow gradient);
- about a third of the products get a label close-up (white sticker, barcode, text lines)
  that looks nothing like the object;
- EXIF DateTimeOriginal: seconds between shots of one product, tens of seconds to minutes
  between products, with some long pauses inside a product and some quick switches between
  products; the file time is the capture time too;
- in a few cases file names are swapped, so name order is not capture order, and a few
  photos have no EXIF time at all (the file time stands in).

The truth is in each photo's EXIF ImageDescription ("product-07"), where the emulator reads
it to answer boundary questions; a photo sent to a model never carries EXIF.
Importable from tests as `from shoot_factory import make_shoot`; from scripts after adding
tests/ to sys.path.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance

EXIF_IFD = 0x8769
DATE_TIME_ORIGINAL = 36867
IMAGE_DESCRIPTION = 0x010E
SIZE = (640, 480)

BACKDROPS = (
    (236, 234, 228),  # white sheet
    (190, 190, 186),  # grey card
    (150, 108, 76),  # wooden table
    (64, 82, 120),  # blue cloth
    (214, 200, 170),  # beige floor
    (60, 60, 60),  # dark worktop
)
SHAPES = ("circle", "box", "triangle", "bottle", "ellipse", "hexagon", "cross", "ring")
TEXTURES = ("plain", "stripes", "dots", "checks")


@dataclass(frozen=True)
class Product:
    number: int
    shape: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    texture: str
    aspect: float  # width / height of the object


@dataclass(frozen=True)
class ShotPhoto:
    name: str  # the file name written
    product: int  # truth: which product (1-based)
    taken: datetime
    label: bool  # a label close-up


def make_shoot(
    folder: Path,
    products: int = 40,
    *,
    seed: int = 7,
    min_photos: int = 2,
    max_photos: int = 8,
    start: datetime = datetime(2026, 5, 2, 10, 0, 0),
) -> list[ShotPhoto]:
    """Write the shoot into `folder`; the photos in capture order, with their product."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = [_product(rng, n + 1) for n in range(products)]
    shots: list[tuple[Product, datetime, bool]] = []
    taken = start
    session_backdrop = rng.randrange(len(BACKDROPS))
    for index, product in enumerate(catalogue):
        if index:
            taken += timedelta(seconds=_between_products(rng))
        if rng.random() < 0.15:  # the seller moves to another spot now and then
            session_backdrop = rng.randrange(len(BACKDROPS))
        count = rng.randint(min_photos, max_photos)
        label_at = rng.randrange(count) if rng.random() < 0.35 and count >= 3 else -1
        for shot in range(count):
            if shot:
                taken += timedelta(seconds=_within_product(rng))
            shots.append((product, taken, shot == label_at))
    names = [f"IMG_{n + 1:04d}.jpg" for n in range(len(shots))]
    for _ in range(max(1, len(shots) // 100)):  # a few renamed files: name order lies
        a, b = rng.sample(range(len(names)), 2)
        names[a], names[b] = names[b], names[a]
    result = []
    for (product, when, label), name in zip(shots, names, strict=True):
        backdrop = session_backdrop if rng.random() < 0.7 else rng.randrange(len(BACKDROPS))
        if label:
            image = _label_shot(rng, product)
        else:
            image = _product_shot(rng, product, BACKDROPS[backdrop])
        path = folder / name
        with_time = rng.random() > 0.02
        _save(image, path, when if with_time else None, f"product-{product.number:02d}")
        stamp = when.timestamp()
        os.utime(path, (stamp, stamp))
        result.append(ShotPhoto(name, product.number, when, label))
    return result


def truth_by_name(shots: list[ShotPhoto]) -> dict[str, int]:
    return {shot.name: shot.product for shot in shots}


def _between_products(rng: random.Random) -> float:
    if rng.random() < 0.12:
        return rng.uniform(6, 16)  # a quick switch: the next product was already at hand
    return min(600.0, 20 + rng.lognormvariate(math.log(45), 0.7))


def _within_product(rng: random.Random) -> float:
    if rng.random() < 0.06:
        return rng.uniform(30, 120)  # a long pause: fetching the box, wiping a scratch
    return rng.uniform(1.5, 9)


def _product(rng: random.Random, number: int) -> Product:
    hue = rng.random()
    colour = _hsv(hue, rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95))
    accent = _hsv((hue + rng.uniform(0.2, 0.8)) % 1, rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0))
    return Product(
        number,
        rng.choice(SHAPES),
        colour,
        accent,
        rng.choice(TEXTURES),
        rng.uniform(0.5, 1.8),
    )


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _object(product: Product, side: int) -> Image.Image:
    """The product alone on a transparent square, `side` px, before angle and light."""
    width = side if product.aspect >= 1 else round(side * product.aspect)
    height = side if product.aspect < 1 else round(side / product.aspect)
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0 = (side - width) // 2, (side - height) // 2
    box = (x0, y0, x0 + width, y0 + height)
    _shape(draw, product.shape, box)
    body = Image.new("RGBA", (side, side), product.colour + (255,))
    paint = ImageDraw.Draw(body)
    step = max(6, side // 12)
    if product.texture == "stripes":
        for x in range(-side, side * 2, step * 2):
            paint.polygon([(x, 0), (x + step, 0), (x + step - side, side), (x - side, side)],
                          fill=product.accent)  # fmt: skip
    elif product.texture == "dots":
        for x in range(step // 2, side, step * 2):
            for y in range(step // 2, side, step * 2):
                paint.ellipse((x, y, x + step, y + step), fill=product.accent)
    elif product.texture == "checks":
        for x in range(0, side, step):
            for y in range(0, side, step):
                if (x // step + y // step) % 2:
                    paint.rectangle((x, y, x + step, y + step), fill=product.accent)
    else:  # plain, with an accent band (a lid, a logo)
        paint.rectangle((0, side * 2 // 5, side, side * 3 // 5), fill=product.accent)
    layer.paste(body, (0, 0), mask)
    return layer


def _shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse((cx - min(w, h) / 2, cy - min(w, h) / 2, cx + min(w, h) / 2,
                      cy + min(w, h) / 2), fill=255)  # fmt: skip
    elif shape == "box":
        draw.rectangle(box, fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "bottle":
        draw.rectangle((x0 + w * 0.15, y0 + h * 0.35, x1 - w * 0.15, y1), fill=255)
        draw.rectangle((cx - w * 0.12, y0, cx + w * 0.12, y0 + h * 0.4), fill=255)
    elif shape == "ellipse":
        draw.ellipse(box, fill=255)
    elif shape == "hexagon":
        points = [(cx + w / 2 * math.cos(a * math.pi / 3), cy + h / 2 * math.sin(a * math.pi / 3))
                  for a in range(6)]  # fmt: skip
        draw.polygon(points, fill=255)
    elif shape == "cross":
        draw.rectangle((x0, cy - h * 0.17, x1, cy + h * 0.17), fill=255)
        draw.rectangle((cx - w * 0.17, y0, cx + w * 0.17, y1), fill=255)
    else:  # ring
        draw.ellipse(box, fill=255)
        draw.ellipse((x0 + w * 0.3, y0 + h * 0.3, x1 - w * 0.3, y1 - h * 0.3), fill=0)


def _product_shot(
    rng: random.Random, product: Product, backdrop: tuple[int, int, int]
) -> Image.Image:
    """One photo: the object turned, near or far, off-centre (sometimes cut by the frame),
    on `backdrop`, under this shot's light."""
    width, height = SIZE
    floor = tuple(max(0, min(255, c + rng.randint(-18, 18))) for c in backdrop)
    image = Image.new("RGB", SIZE, floor)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 3)):  # clutter at the edges: a cable, a box corner
        x = rng.choice((rng.randint(0, 60), rng.randint(width - 60, width)))
        y = rng.randint(0, height)
        tone = tuple(max(0, min(255, c + rng.randint(-60, 60))) for c in backdrop)
        draw.rectangle((x, y, x + rng.randint(20, 80), y + rng.randint(10, 60)), fill=tone)  # type: ignore[arg-type]
    side = round(min(SIZE) * rng.uniform(0.45, 1.25))  # distance: far to close-up
    obj = _object(product, side).rotate(rng.uniform(-35, 35), expand=True)
    if rng.random() < 0.5:
        obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    squash = rng.uniform(0.75, 1.0)  # seen from above or from the side
    obj = obj.resize((obj.width, max(1, round(obj.height * squash))))
    cx = width / 2 + rng.uniform(-0.2, 0.2) * width
    cy = height / 2 + rng.uniform(-0.15, 0.15) * height
    shadow = Image.new("RGBA", obj.size, (0, 0, 0, 70))
    image.paste(shadow, (round(cx - obj.width / 2) + 8, round(cy - obj.height / 2) + 10), obj)
    image.paste(obj, (round(cx - obj.width / 2), round(cy - obj.height / 2)), obj)
    return _light(rng, image)


def _label_shot(rng: random.Random, product: Product) -> Image.Image:
    """A close-up of the product's label: a white sticker with a barcode and text lines,
    a rim of the product around it."""
    image = Image.new("RGB", SIZE, product.colour)
    draw = ImageDraw.Draw(image)
    width, height = SIZE
    mx, my = rng.randint(20, 90), rng.randint(20, 80)
    draw.rectangle((mx, my, width - mx, height - my), fill=(246, 244, 236))
    x = mx + 30
    bar_bottom = height - my - 40
    while x < width - mx - 30:
        bar = rng.choice((2, 3, 5, 7))
        draw.rectangle((x, my + height // 3, x + bar - 1, bar_bottom), fill=(20, 20, 20))
        x += bar + rng.choice((2, 3, 4, 6))
    for line in range(3):
        y = my + 20 + line * 22
        draw.rectangle((mx + 30, y, mx + 30 + rng.randint(120, 360), y + 10), fill=(40, 40, 40))
    return _light(rng, image.rotate(rng.uniform(-12, 12), fillcolor=product.colour))


def _light(rng: random.Random, image: Image.Image) -> Image.Image:
    """This shot's light: brighter or darker, a warm or cool cast, a shadow across."""
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.15))
    cast = rng.uniform(-0.12, 0.12)  # + warm, - cool
    r, g, b = image.split()
    r = r.point(lambda v: min(255, round(v * (1 + cast))))
    b = b.point(lambda v: min(255, round(v * (1 - cast))))
    image = Image.merge("RGB", (r, g, b))
    if rng.random() < 0.5:  # a shadow falling across one side
        gradient = Image.linear_gradient("L").resize(image.size)
        if rng.random() < 0.5:
            gradient = gradient.rotate(90, expand=False)
        dark = ImageEnhance.Brightness(image).enhance(rng.uniform(0.55, 0.8))
        image = Image.composite(image, dark, gradient)
    return image


def _save(image: Image.Image, path: Path, taken: datetime | None, truth: str) -> None:
    exif = Image.Exif()
    exif[IMAGE_DESCRIPTION] = truth
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = taken.strftime("%Y:%m:%d %H:%M:%S")
    image.save(path, "JPEG", quality=85, exif=exif)
