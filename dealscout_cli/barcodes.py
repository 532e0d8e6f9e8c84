"""Barcodes read locally from a seller's photo: UPC/EAN/ISBN for the listing, QR codes as hints.

A barcode found in the photo is the most reliable fact about a product: it goes
to the vision model as a hint and to eBay's UPC/EAN column as it is. Reading is
local (zxing-cpp) and costs nothing.

Barcodes need resolution that the 768 px copy sent to the model does not have:
the fast pass reads a JPEG at the libjpeg draft scale that keeps its long side at
most FAST_SIDE px (2000 px for a 12 MP photo), where a barcode a twentieth of the
frame wide still has two pixels a bar. Decoding the photo a second time for that
costs nearly as much as the model's copy itself, and most photos have no barcode, so
`prepare_and_read` first looks at the decode the copy is shrunk from (1000×750 for
12 MP, half the fast pass's size) for patches dense with sharp light/dark changes
(`look_for_bars`, ~3 ms):

- bars a pixel or two wide there: decode again at FAST_SIDE and read it all (the old
  pass, ~20 ms on 12 MP), and read the decode at hand too if that finds nothing;
- wider, coarser stripes: read the decode at hand (~3 ms);
- nothing: read half of it (~1 ms), where a close-up's wide bars still show.

A 12 MP photo without a barcode costs ~5 ms instead of ~24 (benchmarks/barcodes.py:
the same codes found as the old reader on its set of 40, and three more). A photo
decoded at FAST_SIDE or finer anyway (large `max_side`, PNG, HEIC) is read as it is.
zxing-cpp also tries downscaled copies itself, so close-ups are found in the same
pass. `thorough=True` always decodes again and adds a full-resolution pass when the
fast one finds nothing (~+80 ms on 12 MP), for small barcodes far from the camera.

Every EAN-13/UPC-A/UPC-E/EAN-8 is checked against its check digit, whatever the
decoder says, so a misread never reaches a listing.
"""

from __future__ import annotations

import enum
import functools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zxingcpp
from PIL import Image, ImageChops

from .errors import BadPhoto
from .images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    DEFAULT_QUALITY,
    DecodedPhoto,
    PreparedImage,
    decode_photo,
    finish_photo,
    open_image,
)

FAST_SIDE = 2000  # px: the long side of the first (and usually only) decode
PRODUCT_FORMATS = ("EAN13", "UPCA", "UPCE", "EAN8")  # the ones a marketplace's UPC/EAN column takes
_READ_FORMATS = (
    zxingcpp.BarcodeFormat.EAN13,
    zxingcpp.BarcodeFormat.EAN8,
    zxingcpp.BarcodeFormat.UPCA,
    zxingcpp.BarcodeFormat.UPCE,
    zxingcpp.BarcodeFormat.QRCode,
)
_CORRUPT = "truncated or corrupt image data"
# A GS1 Digital Link QR code (the 2D successor of the retail barcode) carries the GTIN after /01/.
_DIGITAL_LINK = re.compile(r"^https?://[^/?#]+(?:/[^?#]*)?/01/(\d{8,14})(?:[/?#]|$)")


@dataclass(frozen=True)
class Barcode:
    """One barcode: its text (a retail code as UPC-A/EAN-13/EAN-8) and zxing's format name."""

    text: str
    format: str  # "EAN13", "UPCA", "UPCE", "EAN8", "QRCode"

    @property
    def is_product_code(self) -> bool:
        return self.format in PRODUCT_FORMATS

    @property
    def is_isbn(self) -> bool:
        """EAN-13 in the Bookland ranges 978/979: the book's ISBN-13."""
        return self.format == "EAN13" and self.text[:3] in ("978", "979")


@dataclass
class Passes:
    """Photos read by each pass since the process started: tests and the benchmark watch these."""

    looks: int = 0  # cheap looks at the decode made for the model
    full_reads: int = 0  # second decodes at FAST_SIDE, read whole by zxing-cpp


PASSES = Passes()
_passes_lock = threading.Lock()


def read_barcodes(
    path_or_image: Path | str | Image.Image, *, thorough: bool = False
) -> list[Barcode]:
    """Every UPC/EAN/ISBN/QR code in a photo, check digits verified; [] when there is none.

    A path is opened with the same safety checks as `images.prepare_photo` (BadPhoto
    when it cannot be used) and read as `prepare_and_read` reads it; an already-decoded
    image is read at the size given.
    """
    if isinstance(path_or_image, Image.Image):
        return _decode(path_or_image)
    return read_decoded(decode_photo(Path(path_or_image)), thorough=thorough)


def prepare_and_read(
    path: Path,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    expected_sha256: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    quality: int = DEFAULT_QUALITY,
    check_quality: bool = False,
    read: bool = True,
) -> tuple[PreparedImage, list[Barcode]]:
    """`images.prepare_photo` and, with `read`, the photo's barcodes, from one decode.

    BadPhoto when the photo cannot be prepared; a photo that can be prepared but not
    decoded again for its barcodes just has none (they are a bonus, never a failure)."""
    decoded = decode_photo(
        path, max_side=max_side, expected_sha256=expected_sha256, max_pixels=max_pixels
    )
    prepared = finish_photo(
        decoded, max_side=max_side, quality=quality, check_quality=check_quality
    )
    if not read:
        return prepared, []
    try:
        return prepared, read_decoded(decoded)
    except BadPhoto:
        return prepared, []


def read_decoded(decoded: DecodedPhoto, *, thorough: bool = False) -> list[Barcode]:
    """The barcodes of a photo already decoded for the model (see the module docstring)."""
    scale = _draft_scale(decoded.full_size, FAST_SIDE) if decoded.format in ("JPEG", "MPO") else 1
    fast_width = -(-decoded.full_size[0] // scale)  # libjpeg rounds a scaled size up
    look = decoded.image
    if look.width >= fast_width:
        return _decode(look)  # the decode is as fine as the fast pass's own: read it
    if look.width * 2 < fast_width or thorough:
        return _read_again(decoded, scale, thorough=thorough)  # too coarse to look at
    with _passes_lock:
        PASSES.looks += 1
    gray = look.convert("L")
    seen = look_for_bars(gray)
    if seen is Bars.FINE:
        # Decoded again for the bars too fine here; a code only readable here is kept too.
        return _read_again(decoded, scale, thorough=False) or _decode(gray)
    if seen is Bars.COARSE:
        return _decode(gray)
    # Nothing barcode-like at this size: only a close-up, whose bars are too wide to look
    # dense even here, may be there. Half this size is enough to read it.
    return _decode(gray.reduce(2))


def _read_again(decoded: DecodedPhoto, scale: int, *, thorough: bool) -> list[Barcode]:
    """The photo decoded again at 1/`scale`, in grey, and read whole (then at full size too,
    when `thorough` and nothing was found)."""
    with _passes_lock:
        PASSES.full_reads += 1
    image = open_image(decoded.data, decoded.name)
    full_size = image.size
    try:
        if scale > 1:
            image.draft("L", (full_size[0] // scale, full_size[1] // scale))
        image.load()
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise BadPhoto(decoded.name, _CORRUPT) from exc
    found = _decode(image)
    if found or not thorough or image.size == full_size:
        return found
    image = open_image(decoded.data, decoded.name)
    try:
        image.draft("L", image.size)  # grayscale straight from libjpeg: half the decode time
        image.load()
    except Exception as exc:
        raise BadPhoto(decoded.name, _CORRUPT) from exc
    # The fast pass already looked at every smaller scale.
    return _decode(image, try_downscale=False)


class Bars(enum.Enum):
    """What the cheap look saw."""

    NONE = "none"  # nothing but a close-up's wide bars could be there
    COARSE = "coarse"  # stripes readable at the size looked at
    FINE = "fine"  # bars a pixel or two wide: decode the photo again to read them


def look_for_bars(gray: Image.Image) -> Bars:
    """Whether a grey image has a patch dense with sharp light/dark changes, like a
    barcode's bars or a QR code's modules, and how fine they are (see `_LOOK_BLOCK`)."""
    width, height = gray.size
    width -= 1 + (width - 1) % _LOOK_BLOCK  # whole blocks, one pixel to spare for the steps
    height -= 1 + (height - 1) % _LOOK_BLOCK
    if width < 2 * _LOOK_BLOCK or height < 2 * _LOOK_BLOCK:
        return Bars.FINE  # too small to judge: read it as before
    base = gray.crop((0, 0, width, height))
    right = gray.crop((1, 0, width + 1, height))
    down = gray.crop((0, 1, width, height + 1))
    steps = (
        ImageChops.difference(base, right),
        ImageChops.difference(base, down),
        ImageChops.difference(base, gray.crop((1, 1, width + 1, height + 1))),
        ImageChops.difference(right, down),
    )
    across = functools.reduce(ImageChops.lighter, (step.reduce(_LOOK_BLOCK) for step in steps))
    means = base.reduce(_LOOK_BLOCK).resize(base.size, Image.Resampling.NEAREST)
    spread = ImageChops.difference(base, means).reduce(_LOOK_BLOCK)
    strong = across.point(lambda v: 255 if v >= _LOOK_MIN_CHANGE else 0)
    for density, seen in ((_FINE_DENSITY, Bars.FINE), (_COARSE_DENSITY, Bars.COARSE)):
        # across ≥ density × spread, i.e. spread × density − across clips to 0
        scaled = spread.point(lambda v, d=density: min(255, round(v * d)))
        dense = ImageChops.subtract(scaled, across).point(lambda v: 255 if v == 0 else 0)
        if _two_by_two(ImageChops.darker(strong, dense)):
            return seen
    return Bars.NONE


def _two_by_two(blocks: Image.Image) -> bool:
    """True when four blocks in a square are all set: an object's outline is a chain one
    block wide, a barcode's bars an area."""
    w, h = blocks.size
    pairs = ImageChops.darker(blocks.crop((0, 0, w - 1, h)), blocks.crop((1, 0, w, h)))
    squares = ImageChops.darker(pairs.crop((0, 0, w - 1, h - 1)), pairs.crop((0, 1, w - 1, h)))
    return squares.getbbox() is not None


# The cheap look, made on the decode the model's copy is shrunk from (1000×750 for a 12 MP
# photo: half the fast pass's 2000 px, so a bar the fast pass can read is a pixel or more).
# Per 8×8 block it takes `across`, the mean change between neighbouring pixels in the
# direction where it is largest (of →, ↓, ↘, ↙: bars at any angle), and `spread`, the mean
# distance from the block's mean. For stripes of contrast C, spread ≈ C/2 and across ≈ C ×
# edges per pixel, so across/spread ≈ 2 × edges per pixel: 1.4-1.8 on a barcode's bars a
# pixel or two wide, ~1 on bars 3 px wide, ~0.5 on a book's title lines, ~0.25 on an
# object's outline. A block counts when across ≥ 12 (8-bit levels: well above a phone's
# sensor noise at this scale) and across/spread ≥ 0.9 (FINE) or 0.6 (COARSE); it takes two
# blocks by two. Calibrated on benchmarks/barcodes.py's set: no photo without a code has a
# square of either (none has a FINE one even at across ≥ 4); every code the fast pass reads
# is FINE, or COARSE and readable at the look's size, but one: a code in grey on beige (50
# levels apart) with bars half a pixel wide here (see benchmarks/README.md).
_LOOK_BLOCK = 8
_LOOK_MIN_CHANGE = 12
_FINE_DENSITY = 0.9
_COARSE_DENSITY = 0.6


def product_codes(barcodes: Iterable[Barcode]) -> list[str]:
    """UPC/EAN/ISBN strings for a listing, first seen first, each once.

    A GS1 Digital Link QR code counts too: its GTIN is a product code like any other.
    """
    codes: dict[str, None] = {}
    for barcode in barcodes:
        if barcode.is_product_code:
            codes.setdefault(barcode.text)
        elif barcode.format == "QRCode":
            match = _DIGITAL_LINK.match(barcode.text)
            gtin = _short_gtin(match.group(1)) if match else None
            if gtin is not None:
                codes.setdefault(gtin)
    return list(codes)


def valid_gtin(digits: str) -> bool:
    """True when `digits` is an EAN-8, UPC-A, EAN-13 or GTIN-14 with a correct check digit."""
    if not digits.isascii() or not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        return False
    # GS1 mod-10: weights 3, 1, 3, ... from the digit left of the check digit.
    body = [int(d) for d in reversed(digits[:-1])]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(body))
    return (10 - total % 10) % 10 == int(digits[-1])


def _decode(image: Image.Image, *, try_downscale: bool = True) -> list[Barcode]:
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    found: dict[Barcode, None] = {}
    # The stubs want a BarcodeFormats; a tuple is what zxing-cpp 2.3 takes without a warning.
    formats = _READ_FORMATS
    for result in zxingcpp.read_barcodes(image, formats=formats, try_downscale=try_downscale):  # type: ignore[arg-type]
        barcode = _normalised(result.text, result.format.name)
        if barcode is not None:
            found.setdefault(barcode)
    return list(found)


def _normalised(text: str, format_name: str) -> Barcode | None:
    """A retail code in its shortest standard form (UPC-A keeps 12 digits); None when invalid."""
    if format_name == "QRCode":
        return Barcode(text, format_name) if text else None
    if format_name not in PRODUCT_FORMATS:
        return None
    gtin = _short_gtin(text)
    if gtin is None:
        return None
    if format_name == "EAN13" and len(gtin) == 12:  # zxing reads a UPC-A as EAN-13 with a leading 0
        format_name = "UPCA"
    return Barcode(gtin, format_name)


def _short_gtin(digits: str) -> str | None:
    """A valid GTIN as printed on packs: EAN-8, UPC-A (12) or EAN-13; None when the check fails."""
    if not valid_gtin(digits) or not digits.strip("0"):
        return None
    if len(digits) == 8:
        return digits
    digits = digits.lstrip("0").rjust(12, "0")  # GTIN-14/13 with leading zeros → UPC-A or EAN-13
    if len(digits) > 13:
        return None  # a real GTIN-14 (case code): not a unit a buyer gets
    return digits


def _draft_scale(size: tuple[int, int], max_side: int) -> int:
    """The smallest libjpeg scale (1, 2, 4, 8) that brings the long side to `max_side` or less."""
    for scale in (1, 2, 4):
        if max(size) / scale <= max_side:
            return scale
    return 8
