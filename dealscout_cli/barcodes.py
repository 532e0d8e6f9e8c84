"""Barcodes read locally from a seller's photo: UPC/EAN/ISBN for the listing, QR codes as hints.

A barcode found in the photo is the most reliable fact about a product: it goes
to the vision model as a hint and to eBay's UPC/EAN column as it is. Reading is
local (zxing-cpp) and costs nothing.

Barcodes need resolution that the 768 px copy sent to the model does not have,
so the original is decoded again: a JPEG at a libjpeg draft scale that keeps its
long side at most FAST_SIDE px (2000 px for a 12 MP photo: ~30 ms in all), where a
barcode a twentieth of the frame wide still has two pixels a bar. zxing-cpp also
tries downscaled copies itself, so close-ups of a barcode are found in the same
pass. `thorough=True` adds a full-resolution pass when the fast one finds
nothing (~+80 ms on 12 MP), for small barcodes far from the camera.

Every EAN-13/UPC-A/UPC-E/EAN-8 is checked against its check digit, whatever the
decoder says, so a misread never reaches a listing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zxingcpp
from PIL import Image

from .errors import BadPhoto
from .images import display_path, open_image, read_photo_bytes

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


def read_barcodes(
    path_or_image: Path | str | Image.Image, *, thorough: bool = False
) -> list[Barcode]:
    """Every UPC/EAN/ISBN/QR code in a photo, check digits verified; [] when there is none.

    A path is opened with the same safety checks as `images.prepare_photo` (BadPhoto
    when it cannot be used); an already-decoded image is read at the size given.
    """
    if isinstance(path_or_image, Image.Image):
        return _decode(path_or_image)
    name = display_path(path_or_image)
    image = open_image(read_photo_bytes(Path(path_or_image)), name)
    full_size = image.size
    try:
        if image.format in ("JPEG", "MPO"):
            scale = _draft_scale(full_size, FAST_SIDE)
            image.draft("L", (full_size[0] // scale, full_size[1] // scale))
        image.load()
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise BadPhoto(name, _CORRUPT) from exc
    found = _decode(image)
    if found or not thorough or image.size == full_size:
        return found
    image = open_image(read_photo_bytes(Path(path_or_image)), name)
    try:
        image.draft("L", image.size)  # grayscale straight from libjpeg: half the decode time
        image.load()
    except Exception as exc:
        raise BadPhoto(name, _CORRUPT) from exc
    # The fast pass already looked at every smaller scale.
    return _decode(image, try_downscale=False)


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
