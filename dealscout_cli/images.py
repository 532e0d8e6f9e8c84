"""Pillow work on one photo: open it safely, turn it upright, shrink it, strip it, check it.

`prepare_photo` is what the pipeline sends to the model: a JPEG no larger than
`max_side` a side, with every byte of metadata (EXIF, GPS, ICC, XMP, comments)
gone, because a seller's location must never leave the machine. It runs in
worker threads, so it touches no global Pillow or `warnings` state.

`quality_warnings` are cheap local checks (blur, exposure, resolution) that
tell a seller to reshoot before paying for a model call.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from PIL import (
    GifImagePlugin,  # noqa: F401  (registers the format with Image.OPEN)
    Image,
    ImageChops,
    ImageFilter,
    ImageStat,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

from .errors import BadPhoto

DEFAULT_MAX_SIDE = 768
DEFAULT_MAX_PIXELS = (
    50_000_000  # well under Pillow's own bomb limit (~89 MP), above any phone camera
)
DEFAULT_QUALITY = 85
MIN_SIDE = 32
# A 50-megapixel photo is ~25 MB as JPEG and ~150 MB as 16-bit PNG: nothing a seller shoots is
# bigger. A larger file is refused by its size, before any of it is read into memory.
MAX_PHOTO_BYTES = 256 * 1024 * 1024
LOW_RESOLUTION_SIDE = 500

# Formats we decode; anything else is "not an image" to us. HEIF comes from pillow-heif.
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF")
_NOT_AN_IMAGE = "not an image (content is not JPEG/PNG/WebP/GIF/HEIC)"
_CORRUPT = "truncated or corrupt image data"

# EXIF orientation tag (0x0112) → the transpose that makes the photo upright.
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Blur is judged on the photo as sent (at most SHARPNESS_SIDE a side), by how much of its
# edge energy a further 1-pixel blur takes away (see `sharpness`). Calibrated on
# test_images/make_blur_set.py (plain shapes on plain backgrounds, busy photos, the same
# blurred at radius 2-4) and the tests/photo_factory.py products: sharp photos score
# 0.50-0.98, blurred ones 0-0.34 (one radius-2 blur of a 1600 px photo, 0.58, is hardly
# soft once shrunk to 768 px, and is not flagged).
BLUR_THRESHOLD = 0.45
SHARPNESS_SIDE = 768
DARK_MEAN = 45.0
BRIGHT_MEAN = 235.0

BLURRY = "blurry: reshoot with steady focus"
TOO_DARK = "too dark: reshoot in more light"
TOO_BRIGHT = "too bright: overexposed, reshoot with less direct light"


@dataclass(frozen=True)
class PreparedImage:
    """A photo ready for the model: stripped JPEG bytes and where they came from."""

    data: bytes
    mime_type: str
    width: int
    height: int
    source_path: str
    source_sha256: str
    warnings: tuple[str, ...] = ()  # quality_warnings of the prepared copy, when asked for


def register_heif() -> None:
    """Teach Pillow to open HEIC/HEIF (iPhone photos). Safe to call many times."""
    if "HEIF" in Image.OPEN:
        return
    import pillow_heif

    pillow_heif.register_heif_opener()


def prepare_photo(
    path: Path,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    expected_sha256: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    quality: int = DEFAULT_QUALITY,
    check_quality: bool = False,
) -> PreparedImage:
    """Read, check, orient, downscale and re-encode one photo; BadPhoto if it cannot be used.

    With `check_quality`, `warnings` holds `quality_warnings` of the prepared copy (judged
    on the pixels already in memory; the copy is never upscaled, so a low-resolution
    original still shows as one).
    """
    decoded = decode_photo(
        path, max_side=max_side, expected_sha256=expected_sha256, max_pixels=max_pixels
    )
    return finish_photo(decoded, max_side=max_side, quality=quality, check_quality=check_quality)


@dataclass(frozen=True)
class DecodedPhoto:
    """A photo's bytes and its pixels as decoded for the model, before they are shrunk.

    A JPEG is decoded by libjpeg at the smallest draft scale (1/2, 1/4, 1/8) still at least
    `max_side` a side, so `image` is up to twice `max_side`; other formats at full size.
    `barcodes` looks at these pixels before deciding whether to decode the photo again."""

    name: str
    data: bytes
    sha256: str
    format: str  # Pillow's: "JPEG", "MPO", "PNG", ...
    full_size: tuple[int, int]  # as stored, before EXIF orientation
    orientation: int
    image: Image.Image  # RGB or RGBA, stored orientation


def decode_photo(
    path: Path,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    expected_sha256: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedPhoto:
    """Read, check and decode one photo at the size `finish_photo` needs; BadPhoto if it cannot."""
    name = display_path(path)
    data = read_photo_bytes(path)
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise BadPhoto(name, "changed on disk since it was scanned; run snap again to rescan")
    image = open_image(data, name, max_pixels=max_pixels)
    orientation = _orientation(image)
    full_size, fmt = image.size, image.format or ""
    try:
        if image.format in ("JPEG", "MPO"):  # MPO: camera JPEGs with a preview
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: most of the speed on big photos.
            # Ask for the final size, not a max_side square: a 4000×3000 photo then decodes
            # at 1/4 (1000×750) instead of 1/2, and the resize after it has 4× fewer pixels.
            image.draft("RGB", _fitted(image.size, max_side))
        image.load()
        image = _to_rgb_or_rgba(image)
    except BadPhoto:
        raise
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise BadPhoto(name, _CORRUPT) from exc
    return DecodedPhoto(name, data, sha256, fmt, full_size, orientation, image)


def finish_photo(
    decoded: DecodedPhoto,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    quality: int = DEFAULT_QUALITY,
    check_quality: bool = False,
) -> PreparedImage:
    """Shrink, strip, orient and re-encode a decoded photo (see `prepare_photo`)."""
    image = decoded.image
    try:
        if max(image.size) > max_side:
            image = image.copy()  # thumbnail works in place; the decode may be looked at again
            image.thumbnail((max_side, max_side))
    except Exception as exc:  # Pillow's decoders raise many types on hostile input
        raise BadPhoto(decoded.name, _CORRUPT) from exc
    clean = _fresh_rgb(image)
    if decoded.orientation in _TRANSPOSE:
        clean = clean.transpose(_TRANSPOSE[decoded.orientation])
    out = io.BytesIO()
    clean.save(out, "JPEG", quality=quality, optimize=False)
    return PreparedImage(
        data=out.getvalue(),
        mime_type="image/jpeg",
        width=clean.width,
        height=clean.height,
        source_path=decoded.name,
        source_sha256=decoded.sha256,
        warnings=tuple(quality_warnings(clean)) if check_quality else (),
    )


def quality_warnings(
    path_or_image: Path | str | Image.Image,
    *,
    original_size: tuple[int, int] | None = None,
) -> list[str]:
    """Local checks a seller can act on: blur, exposure, low resolution.

    Give a path (opened cheaply at reduced size) or an already-decoded image; pass
    `original_size` when the image is a downscaled copy of the real photo.
    """
    if isinstance(path_or_image, Image.Image):
        image = path_or_image
        size = original_size or image.size
    else:
        name = display_path(path_or_image)
        image = open_image(read_photo_bytes(Path(path_or_image)), name)
        size = original_size or image.size
        if _orientation(image) in (5, 6, 7, 8):
            size = (size[1], size[0])
        try:
            if image.format in ("JPEG", "MPO"):  # MPO: camera JPEGs with a preview
                image.draft("L", (SHARPNESS_SIDE, SHARPNESS_SIDE))
            image.load()
        except Exception as exc:  # Pillow's decoders raise many types on hostile input
            raise BadPhoto(name, _CORRUPT) from exc
    gray = _to_rgb_or_rgba(image)
    if gray.mode == "RGBA":
        gray = _fresh_rgb(gray)
    gray = gray.convert("L")
    gray.thumbnail((SHARPNESS_SIDE, SHARPNESS_SIDE))

    warnings: list[str] = []
    if sharpness(gray) < BLUR_THRESHOLD:
        warnings.append(BLURRY)
    mean = ImageStat.Stat(gray).mean[0]
    if mean < DARK_MEAN:
        warnings.append(TOO_DARK)
    elif mean > BRIGHT_MEAN:
        warnings.append(TOO_BRIGHT)
    if max(size) < LOW_RESOLUTION_SIDE:
        warnings.append(f"low resolution ({size[0]}×{size[1]}): reshoot closer or at full size")
    return warnings


def sharpness(gray: Image.Image) -> float:
    """How sharp a grayscale photo's edges are, 0 (soft) to 1 (crisp), whatever their number.

    A sharp edge's energy (the sum of squared differences between neighbouring pixels) is
    packed into a pixel or two, so blurring it by one more pixel takes most of it away; an
    edge that is already soft loses little. The share lost does not depend on how many edges
    there are or their contrast, so one plain object on a plain background is judged as
    sharp as a busy shelf (the variance of a Laplacian, used before, counts edges and called
    31 of 57 such photos blurry). Two filters on the ≤768 px copy: cheap on every photo.
    """
    energy = _edge_energy(gray)
    if energy < gray.width * gray.height * _FEATURELESS:
        return 0.0  # no edge anywhere: nothing in the photo is in focus
    return max(0.0, 1.0 - _edge_energy(gray.filter(ImageFilter.GaussianBlur(1))) / energy)


# Mean squared neighbour difference below which a photo has no edge at all (a sharp edge
# of contrast 20 across a 768 px photo is 40 times more).
_FEATURELESS = 0.05


def _edge_energy(gray: Image.Image) -> float:
    """Sum of squared differences between horizontal and vertical neighbours (exact: no
    kernel, so nothing is clipped to 0..255)."""
    width, height = gray.size
    across = ImageChops.difference(
        gray.crop((1, 0, width, height)), gray.crop((0, 0, width - 1, height))
    )
    down = ImageChops.difference(
        gray.crop((0, 1, width, height)), gray.crop((0, 0, width, height - 1))
    )
    return float(ImageStat.Stat(across).sum2[0] + ImageStat.Stat(down).sum2[0])


def display_path(path: Path | str) -> str:
    """A printable form of a path, even when its file name is not valid UTF-8."""
    text = os.fspath(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_photo_bytes(path: Path) -> bytes:
    """All of a photo file's bytes, or BadPhoto saying why they cannot be read."""
    name = display_path(path)
    try:
        # O_NONBLOCK: a FIFO named like a photo must fail, not hang the worker.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BadPhoto(name, "file no longer exists (moved or deleted after scanning)") from None
    except PermissionError:
        raise BadPhoto(name, "permission denied (cannot read the file)") from None
    except OSError as exc:
        raise BadPhoto(name, f"cannot open the file ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a device or pipe"
        raise BadPhoto(name, f"not a regular file ({kind} named like a photo)")
    with open(fd, "rb") as file:
        try:
            size = os.fstat(fd).st_size
            head = file.read(16)
            _judge_before_reading(name, size, head)
            data = head + file.read()
        except OSError as exc:
            raise BadPhoto(name, f"cannot read the file ({exc.strerror})") from None
    return data


def _judge_before_reading(name: str, size: int, head: bytes) -> None:
    """Memory must not depend on what a file claims to be: judge it by its size and its
    first bytes before reading it whole."""
    if not head:
        raise BadPhoto(name, "empty file (0 bytes)")
    if size > MAX_PHOTO_BYTES:
        raise BadPhoto(
            name,
            f"file too large ({size / 2**20:,.0f} MiB; photos are at most "
            f"{MAX_PHOTO_BYTES // 2**20} MiB)",
        )
    register_heif()
    for fmt in _FORMATS:
        _factory, accept = Image.OPEN[fmt]
        accepted = accept(head) if accept else True
        if accepted and not isinstance(accepted, str):
            return
    raise BadPhoto(name, _NOT_AN_IMAGE)


def open_image(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open (not decode) image bytes, refusing unknown formats, tiny images and decompression bombs.

    Pillow's own `Image.open` runs its bomb check itself and warns, which our
    tests treat as an error and which would need thread-unsafe `warnings`
    filters to silence; so we call the registered format openers directly and
    check width × height ourselves before anything is decoded.
    """
    register_heif()
    prefix = data[:16]
    for fmt in _FORMATS:
        factory, accept = Image.OPEN[fmt]
        accepted = accept(prefix) if accept else True
        if not accepted or isinstance(accepted, str):
            continue
        try:
            image = factory(io.BytesIO(data), name)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise BadPhoto(name, f"image too large to decode safely ({exc})") from None
        except Exception as exc:  # Pillow's decoders raise many types on hostile input
            raise BadPhoto(name, _CORRUPT) from exc
        width, height = image.size
        if width * height > max_pixels:
            raise BadPhoto(
                name,
                f"image too large ({width}×{height} px = {width * height / 1e6:.0f} megapixels; "
                f"the limit is {max_pixels / 1e6:.0f} megapixels)",
            )
        if min(width, height) < MIN_SIDE:
            raise BadPhoto(
                name,
                f"too small ({width}×{height} px); the model needs at least {MIN_SIDE} px a side",
            )
        return image
    raise BadPhoto(name, _NOT_AN_IMAGE)


def _fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size `thumbnail` gives `size` for a `max_side` box (aspect kept, never larger)."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8; anything missing, broken or out of range counts as upright."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not cost the photo
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to 8-bit RGB, or RGBA when it has transparency."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode in ("LA", "La", "PA", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    ):
        return image.convert("RGBA")
    if mode.startswith("I") or mode == "F":
        # 16-bit and float greys: scale to 0..255 instead of letting convert() clip them.
        wide = image.convert("F")
        top = float(wide.getextrema()[1])  # type: ignore[arg-type]  # one band: (min, max)
        if top > 255:
            wide = wide.point(lambda value: value * (255.0 / top))
        return wide.convert("L").convert("RGB")
    return image.convert("RGB")


def _fresh_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image holding only the pixels: no info dict, EXIF, ICC, XMP or comments.

    Transparent areas are composited on white, as a seller's photo would be shown.
    """
    clean = Image.new("RGB", image.size, "white")
    if image.mode == "RGBA":
        clean.paste(image, mask=image.getchannel("A"))
    else:
        clean.paste(image)
    return clean
