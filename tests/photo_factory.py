"""Product photos drawn with Pillow, for tests, fixtures, examples and benchmarks.

Importable from tests as `from photo_factory import ...` (pytest puts tests/ on
sys.path), and from scripts after adding tests/ to sys.path.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

PRODUCTS = ("mug", "sneaker", "book", "lamp", "handbag")

ORIENTATION = 0x0112
GPS_IFD = 0x8825


def product_image(
    kind: str = "mug",
    size: tuple[int, int] = (1024, 768),
    *,
    seed: int = 0,
    color: tuple[int, int, int] | None = None,
    angle: int = 0,
) -> Image.Image:
    """An RGB picture of a simple product on a table, with a little sensor-like noise."""
    rng = random.Random(f"{kind}-{seed}")
    width, height = size
    color = color or (rng.randrange(40, 220), rng.randrange(40, 220), rng.randrange(40, 220))
    wall = (rng.randrange(200, 240),) * 3
    image = Image.new("RGB", size, wall)
    draw = ImageDraw.Draw(image)
    table_top = int(height * 0.72)
    draw.rectangle((0, table_top, width, height), fill=(150, 110, 80))
    for x in range(0, width, max(8, width // 40)):  # wood grain: detail a camera would see
        draw.line((x, table_top, x + width // 20, height), fill=(130, 95, 70), width=2)
    s = min(width, height) / 768
    cx, base = width // 2 + int(angle * s), table_top + int(20 * s)
    _DRAWERS[kind](draw, cx, base, s, color)
    noise = Image.effect_noise(size, 18).convert("RGB")
    return Image.blend(image, noise, 0.06)


def _mug(draw: ImageDraw.ImageDraw, cx: int, base: int, s: float, color: tuple) -> None:
    w, h = int(180 * s), int(230 * s)
    draw.rectangle((cx - w // 2, base - h, cx + w // 2, base), fill=color, outline=(30, 30, 30))
    draw.arc(
        (cx + w // 2 - 40 * s, base - h * 0.8, cx + w // 2 + 70 * s, base - h * 0.25),
        -90,
        90,
        fill=color,
        width=int(22 * s),
    )
    draw.ellipse(
        (cx - w // 2, base - h - 20 * s, cx + w // 2, base - h + 20 * s), fill=(60, 40, 20)
    )


def _sneaker(draw: ImageDraw.ImageDraw, cx: int, base: int, s: float, color: tuple) -> None:
    draw.polygon(
        [
            (cx - 260 * s, base),
            (cx - 250 * s, base - 120 * s),
            (cx - 60 * s, base - 170 * s),
            (cx + 40 * s, base - 90 * s),
            (cx + 260 * s, base - 60 * s),
            (cx + 270 * s, base),
        ],
        fill=color,
        outline=(20, 20, 20),
    )
    draw.rectangle((cx - 270 * s, base - 25 * s, cx + 275 * s, base), fill=(245, 245, 245))
    for i in range(5):
        x = cx - 120 * s + i * 30 * s
        draw.line(
            (x, base - 150 * s + i * 10 * s, x + 40 * s, base - 140 * s + i * 10 * s),
            fill=(250, 250, 250),
            width=int(6 * s),
        )


def _book(draw: ImageDraw.ImageDraw, cx: int, base: int, s: float, color: tuple) -> None:
    draw.rectangle(
        (cx - 160 * s, base - 380 * s, cx + 160 * s, base), fill=color, outline=(10, 10, 10)
    )
    draw.rectangle(
        (cx - 120 * s, base - 330 * s, cx + 120 * s, base - 250 * s), fill=(240, 230, 200)
    )
    for i in range(4):
        y = base - 310 * s + i * 15 * s
        draw.line((cx - 100 * s, y, cx + 100 * s, y), fill=(20, 20, 20), width=int(4 * s))


def _lamp(draw: ImageDraw.ImageDraw, cx: int, base: int, s: float, color: tuple) -> None:
    draw.ellipse((cx - 110 * s, base - 30 * s, cx + 110 * s, base), fill=(40, 40, 40))
    draw.line(
        (cx, base - 15 * s, cx - 60 * s, base - 260 * s), fill=(60, 60, 60), width=int(14 * s)
    )
    draw.line(
        (cx - 60 * s, base - 260 * s, cx + 80 * s, base - 380 * s),
        fill=(60, 60, 60),
        width=int(14 * s),
    )
    draw.polygon(
        [
            (cx + 40 * s, base - 420 * s),
            (cx + 200 * s, base - 330 * s),
            (cx + 120 * s, base - 270 * s),
        ],
        fill=color,
        outline=(10, 10, 10),
    )


def _handbag(draw: ImageDraw.ImageDraw, cx: int, base: int, s: float, color: tuple) -> None:
    draw.arc(
        (cx - 120 * s, base - 380 * s, cx + 120 * s, base - 160 * s),
        180,
        360,
        fill=(50, 30, 20),
        width=int(16 * s),
    )
    draw.rounded_rectangle(
        (cx - 220 * s, base - 270 * s, cx + 220 * s, base),
        radius=int(40 * s),
        fill=color,
        outline=(20, 20, 20),
        width=3,
    )
    draw.rectangle((cx - 30 * s, base - 220 * s, cx + 30 * s, base - 180 * s), fill=(212, 175, 55))


_DRAWERS = {"mug": _mug, "sneaker": _sneaker, "book": _book, "lamp": _lamp, "handbag": _handbag}


def exif_with(orientation: int | None = None, gps: bool = False) -> Image.Exif:
    """An EXIF block with an orientation tag and/or a fake GPS position (Paris)."""
    exif = Image.Exif()
    exif[0x010F] = "DealscoutCam"  # Make
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return exif


def exif_with_text_orientation() -> bytes:
    """Raw EXIF whose orientation tag is ASCII text instead of a number (seen from broken apps)."""
    entry = struct.pack("<HHI4s", ORIENTATION, 2, 4, b"top\x00")  # tag, type ASCII, count, value
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    return b"Exif\x00\x00" + tiff


def save_jpeg(
    image: Image.Image,
    path: Path,
    *,
    orientation: int | None = None,
    gps: bool = False,
    quality: int = 85,
) -> Path:
    """Save as JPEG, optionally with EXIF orientation and a GPS position."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = exif_with(orientation, gps) if orientation is not None or gps else None
    if exif is not None:
        image.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    else:
        image.save(path, "JPEG", quality=quality)
    return path


def make_jpeg(
    path: Path,
    size: tuple[int, int] = (640, 480),
    *,
    kind: str = "mug",
    seed: int = 0,
    color: tuple[int, int, int] | None = None,
    **exif: object,
) -> Path:
    """A product photo saved as JPEG at `path`; returns the path."""
    return save_jpeg(product_image(kind, size, seed=seed, color=color), path, **exif)  # type: ignore[arg-type]


def make_large_jpeg(path: Path, megapixels: float = 12, *, seed: int = 0) -> Path:
    """A camera-sized 4:3 JPEG (12 MP → 4000×3000) with realistic noise, for benchmarks."""
    width = int((megapixels * 1_000_000 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    return make_jpeg(
        path, (width, height), kind=PRODUCTS[seed % len(PRODUCTS)], seed=seed, quality=90
    )


def blurred(image: Image.Image, radius: float = 4) -> Image.Image:
    """The same photo out of focus."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def make_fixture_set(folder: Path) -> dict[str, Path]:
    """The good-but-awkward photo formats the preparer must handle; returns name → path."""
    import pillow_heif

    folder.mkdir(parents=True, exist_ok=True)
    photo = product_image("mug", (800, 600), seed=1)
    made: dict[str, Path] = {}
    sideways = photo.transpose(Image.Transpose.ROTATE_90)  # as a phone stores it
    made["oriented_gps.jpg"] = save_jpeg(
        sideways, folder / "oriented_gps.jpg", orientation=6, gps=True
    )
    made["plain.png"] = _saved(photo, folder / "plain.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    made["alpha.png"] = _saved(rgba, folder / "alpha.png")
    made["photo.webp"] = _saved(photo, folder / "photo.webp", quality=80)
    made["animated.gif"] = make_animated_gif(folder / "animated.gif")
    heif = pillow_heif.from_pillow(photo)
    heif.save(folder / "photo.heic", quality=70)
    made["photo.heic"] = folder / "photo.heic"
    made["cmyk.jpg"] = _saved(photo.convert("CMYK"), folder / "cmyk.jpg", quality=85)
    made["gray16.png"] = make_16bit_png(folder / "gray16.png")
    made["small.jpg"] = make_jpeg(folder / "small.jpg", (300, 200), kind="book", seed=2)
    return made


def make_animated_gif(path: Path, size: tuple[int, int] = (320, 240)) -> Path:
    """A three-frame palette GIF; the first frame is the product."""
    frames = [
        product_image(kind, size, seed=3).convert("P", palette=Image.Palette.ADAPTIVE)
        for kind in ("handbag", "mug", "book")
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=200, loop=0)
    return path


def make_16bit_png(path: Path, size: tuple[int, int] = (400, 300)) -> Path:
    """A 16-bit greyscale PNG (mode I;16) with a full-range gradient."""
    gradient = Image.linear_gradient("L").resize(size).convert("I")
    wide = gradient.point(lambda v: v * 257)  # 0..255 → 0..65535
    wide.convert("I;16").save(path)
    return path


def _saved(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def make_png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG of a few dozen bytes whose header claims width × height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


def make_truncated_jpeg(path: Path, keep: int = 4000) -> Path:
    """A product JPEG cut off after `keep` bytes, as an interrupted copy leaves it."""
    make_jpeg(path)
    path.write_bytes(path.read_bytes()[:keep])
    return path
