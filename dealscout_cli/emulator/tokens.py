"""Token counting the way Google documents it, shared by the emulator and the cost estimator.

Images (Gemini 2.x, https://ai.google.dev/gemini-api/docs/tokens): an image with both
sides at most 384 px costs 258 tokens; a larger one is cropped and scaled into
768x768 tiles, 258 tokens each. `mediaResolution` LOW and MEDIUM cap an image at
64 and 256 tokens (https://ai.google.dev/gemini-api/docs/media-resolution).
Text is about four characters per token.
"""

from __future__ import annotations

import io
import math

TOKENS_PER_TILE = 258
SMALL_IMAGE_MAX_SIDE = 384
TILE_SIDE = 768
CHARS_PER_TOKEN = 4
MEDIA_RESOLUTION_TOKENS = {
    "MEDIA_RESOLUTION_LOW": 64,
    "MEDIA_RESOLUTION_MEDIUM": 256,
}


def image_tokens(width: int, height: int, media_resolution: str | None = None) -> int:
    """Input tokens for one image of `width` x `height` pixels.

    >>> image_tokens(300, 200), image_tokens(1024, 768), image_tokens(3000, 4000)
    (258, 516, 6192)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    capped = MEDIA_RESOLUTION_TOKENS.get((media_resolution or "").upper())
    if capped is not None:
        return capped
    if width <= SMALL_IMAGE_MAX_SIDE and height <= SMALL_IMAGE_MAX_SIDE:
        return TOKENS_PER_TILE
    return math.ceil(width / TILE_SIDE) * math.ceil(height / TILE_SIDE) * TOKENS_PER_TILE


def text_tokens(text: str) -> int:
    """Approximate tokens for `text`: one per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the image header only, or None if Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
