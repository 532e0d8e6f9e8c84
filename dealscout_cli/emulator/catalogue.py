"""The emulator's "knowledge": plausible resale items, colour names, and facts read from images.

An answer is built from one catalogue entry picked by the request's hash, plus what
the image itself shows (size, dominant colours), so different photos get different
but stable answers.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueItem:
    """One kind of thing people resell, with a typical used price range in USD."""

    name: str
    brand: str
    model: str
    category: str
    price_low: float
    price_high: float
    material: str


CATALOGUE: tuple[CatalogueItem, ...] = (
    CatalogueItem(
        "Wireless Noise Cancelling Headphones",
        "Sony",
        "WH-1000XM4",
        "Electronics > Portable Audio & Headphones > Headphones",
        90,
        180,
        "Plastic",
    ),
    CatalogueItem(
        "Stand Mixer",
        "KitchenAid",
        "Artisan KSM150PS",
        "Home & Garden > Kitchen > Small Kitchen Appliances > Mixers",
        120,
        260,
        "Metal",
    ),
    CatalogueItem(
        "Running Shoes",
        "Nike",
        "Air Zoom Pegasus 38",
        "Clothing, Shoes & Accessories > Men > Men's Shoes > Athletic Shoes",
        35,
        80,
        "Mesh",
    ),
    CatalogueItem(
        "Digital Camera",
        "Canon",
        "PowerShot G7 X Mark II",
        "Cameras & Photo > Digital Cameras",
        280,
        480,
        "Aluminium",
    ),
    CatalogueItem(
        "Handheld Game Console",
        "Nintendo",
        "Switch Lite",
        "Video Games & Consoles > Video Game Consoles",
        110,
        170,
        "Plastic",
    ),
    CatalogueItem(
        "Denim Jacket",
        "Levi's",
        "Trucker Jacket 72334",
        "Clothing, Shoes & Accessories > Men > Men's Clothing > Coats & Jackets",
        30,
        75,
        "Cotton Denim",
    ),
    CatalogueItem(
        "Cast Iron Dutch Oven",
        "Le Creuset",
        "Signature 5.5 qt",
        "Home & Garden > Kitchen > Cookware > Dutch Ovens",
        150,
        300,
        "Enamelled Cast Iron",
    ),
    CatalogueItem(
        "Smartwatch",
        "Apple",
        "Watch Series 6 44mm",
        "Cell Phones & Accessories > Smart Watches",
        120,
        220,
        "Aluminium",
    ),
    CatalogueItem(
        "Cordless Drill",
        "DeWalt",
        "DCD777C2",
        "Home & Garden > Tools & Workshop Equipment > Power Tools > Drills",
        60,
        120,
        "Plastic",
    ),
    CatalogueItem(
        "Leather Handbag",
        "Coach",
        "Tabby Shoulder Bag 26",
        "Clothing, Shoes & Accessories > Women > Women's Bags & Handbags",
        90,
        220,
        "Leather",
    ),
    CatalogueItem(
        "Vinyl Record", "Columbia", "Kind of Blue LP", "Music > Vinyl Records", 18, 45, "Vinyl"
    ),
    CatalogueItem(
        "Espresso Machine",
        "Breville",
        "Barista Express BES870XL",
        "Home & Garden > Kitchen > Small Kitchen Appliances > Coffee Makers",
        250,
        450,
        "Stainless Steel",
    ),
    CatalogueItem(
        "Mechanical Keyboard",
        "Logitech",
        "G915 TKL",
        "Computers/Tablets & Networking > Keyboards, Mice & Pointers > Keyboards",
        70,
        140,
        "Aluminium",
    ),
    CatalogueItem(
        "Building Set",
        "LEGO",
        "Millennium Falcon 75257",
        "Toys & Hobbies > Building Toys > LEGO Building Toys > LEGO Complete Sets",
        60,
        130,
        "ABS Plastic",
    ),
    CatalogueItem(
        "Table Lamp",
        "IKEA",
        "Tertial",
        "Home & Garden > Lamps, Lighting & Ceiling Fans > Lamps",
        10,
        30,
        "Steel",
    ),
    CatalogueItem(
        "Road Bike Helmet",
        "Giro",
        "Syntax MIPS",
        "Sporting Goods > Cycling > Helmets & Protective Gear",
        40,
        90,
        "Polycarbonate",
    ),
    CatalogueItem(
        "Tablet",
        "Apple",
        "iPad Air 4th Gen 64GB",
        "Computers/Tablets & Networking > Tablets & eBook Readers",
        220,
        380,
        "Aluminium",
    ),
    CatalogueItem(
        "Wool Sweater",
        "Patagonia",
        "Recycled Wool Crewneck",
        "Clothing, Shoes & Accessories > Men > Men's Clothing > Sweaters",
        35,
        70,
        "Wool",
    ),
    CatalogueItem(
        "Blender",
        "Vitamix",
        "E310 Explorian",
        "Home & Garden > Kitchen > Small Kitchen Appliances > Blenders",
        150,
        280,
        "Plastic",
    ),
    CatalogueItem(
        "Acoustic Guitar",
        "Yamaha",
        "FG800",
        "Musical Instruments & Gear > Guitars & Basses > Acoustic Guitars",
        110,
        190,
        "Spruce",
    ),
)

COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Black", (20, 20, 20)),
    ("White", (240, 240, 240)),
    ("Gray", (128, 128, 128)),
    ("Silver", (192, 192, 192)),
    ("Red", (200, 30, 30)),
    ("Orange", (240, 140, 30)),
    ("Yellow", (235, 215, 40)),
    ("Green", (40, 150, 60)),
    ("Blue", (40, 90, 210)),
    ("Navy", (20, 30, 90)),
    ("Purple", (120, 50, 160)),
    ("Pink", (240, 150, 190)),
    ("Brown", (110, 70, 35)),
    ("Beige", (220, 200, 160)),
    ("Teal", (20, 140, 140)),
)

DEFECTS = (
    "light scuffs on the corners",
    "minor scratches on the surface",
    "small mark near the base",
    "slight fading from sun exposure",
    "wear on the edges",
    "missing original box",
)


@dataclass(frozen=True)
class ImageFacts:
    """What the emulator 'sees': size and up to two dominant colour names."""

    width: int
    height: int
    colours: tuple[str, ...]


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb

    def distance(colour: tuple[str, tuple[int, int, int]]) -> int:
        cr, cg, cb = colour[1]
        return (cr - r) ** 2 + (cg - g) ** 2 + (cb - b) ** 2

    return min(COLOURS, key=distance)[0]


_FACTS_CACHE: OrderedDict[str, ImageFacts | None] = OrderedDict()
_FACTS_CACHE_SIZE = 1024


def image_facts(data: bytes, sha256: str) -> ImageFacts | None:
    """Facts about an image, cached by its sha256 (the same photo is often sent again)."""
    try:
        _FACTS_CACHE.move_to_end(sha256)
        return _FACTS_CACHE[sha256]
    except KeyError:
        pass
    facts = _read_image_facts(data)
    _FACTS_CACHE[sha256] = facts
    if len(_FACTS_CACHE) > _FACTS_CACHE_SIZE:
        _FACTS_CACHE.popitem(last=False)
    return facts


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the image header only, or None if Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _read_image_facts(data: bytes) -> ImageFacts | None:
    """Size from the header; colours from a tiny draft decode. None if not an image."""
    size = image_size(data)
    if size is None:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale, cheap for big photos
            small = image.convert("RGB").resize((16, 16))
    except (OSError, ValueError):
        return ImageFacts(size[0], size[1], ("Multicolor",))
    counts: dict[str, int] = {}
    raw = small.tobytes()
    for i in range(0, len(raw), 3):
        name = nearest_colour((raw[i], raw[i + 1], raw[i + 2]))
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts, key=lambda n: (-counts[n], n))
    return ImageFacts(size[0], size[1], tuple(ranked[:2]))


def find_named_item(text: str) -> CatalogueItem | None:
    """The catalogue entry whose name or model appears in `text` (the pricing call's input)."""
    lowered = text.lower()
    for item in CATALOGUE:
        if item.model.lower() in lowered or item.name.lower() in lowered:
            return item
    return None


def shoot_truth(folder: str | os.PathLike[str]) -> dict[str, str]:
    """A generated shoot's truth as the emulator sees a boundary question: the sha256 of
    each photo's thumbnail (`grouping.thumbnail`, exactly what `--confirm-groups` sends) →
    the product its EXIF ImageDescription names (tests/shoot_factory.py writes it there)."""
    import hashlib
    from pathlib import Path

    from PIL import Image

    from dealscout_cli.grouping import thumbnail

    truth = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        with Image.open(path) as image:
            product = image.getexif().get(0x010E)
        if product:
            truth[hashlib.sha256(thumbnail(path).data).hexdigest()] = str(product)
    return truth
