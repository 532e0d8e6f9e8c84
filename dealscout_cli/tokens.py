"""How many input tokens a request costs, counted the way Google documents it, per model family.

One home for the counting rules: the limiter's estimate before a call (`costs`), the
`estimate` command, and the emulator that plays Google all import them from here.

Images (Gemini 2.x, https://ai.google.dev/gemini-api/docs/tokens): an image with both
sides at most 384 px costs 258 tokens; a larger one is cropped and scaled into
768x768 tiles, 258 tokens each. `mediaResolution` LOW and MEDIUM cap an image at
64 and 256 tokens (https://ai.google.dev/gemini-api/docs/media-resolution).
Text is about four characters per token.

Gemini 3 models are counted by the same rule for now; when their own rule lands, it
changes `RULES["gemini-3"]` and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class TokenRule:
    """One model family's counting rule for images and text."""

    tokens_per_tile: int = 258
    small_image_max_side: int = 384
    tile_side: int = 768
    chars_per_token: int = 4
    media_resolution_tokens: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(
            {"MEDIA_RESOLUTION_LOW": 64, "MEDIA_RESOLUTION_MEDIUM": 256}
        )
    )

    def image_tokens(self, width: int, height: int, media_resolution: str | None = None) -> int:
        """Input tokens for one image of `width` x `height` pixels.

        >>> GEMINI_2.image_tokens(300, 200), GEMINI_2.image_tokens(1024, 768)
        (258, 516)
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        capped = self.media_resolution_tokens.get((media_resolution or "").upper())
        if capped is not None:
            return capped
        if width <= self.small_image_max_side and height <= self.small_image_max_side:
            return self.tokens_per_tile
        tiles = math.ceil(width / self.tile_side) * math.ceil(height / self.tile_side)
        return tiles * self.tokens_per_tile

    def text_tokens(self, text: str) -> int:
        """Approximate tokens for `text`: one per `chars_per_token` characters, rounded up."""
        return math.ceil(len(text) / self.chars_per_token)


GEMINI_2 = TokenRule()

RULES: Mapping[str, TokenRule] = MappingProxyType(
    {  # model-name prefix: rule (the longest matching prefix wins)
        "gemini-3": GEMINI_2,  # same arithmetic as 2.x until Gemini 3's own rule is written
        "gemini-2": GEMINI_2,
    }
)
DEFAULT_RULE = GEMINI_2  # a model of no known family, or none named


def rule_for(model: str | None) -> TokenRule:
    """The counting rule of `model`'s family (`models/` prefix and version suffix ignored)."""
    name = (model or "").removeprefix("models/")
    matches = [prefix for prefix in RULES if name.startswith(prefix)]
    return RULES[max(matches, key=len)] if matches else DEFAULT_RULE


def image_tokens(
    width: int, height: int, media_resolution: str | None = None, *, model: str | None = None
) -> int:
    """Input tokens for one image, by `model`'s rule.

    >>> image_tokens(300, 200), image_tokens(1024, 768), image_tokens(3000, 4000)
    (258, 516, 6192)
    """
    return rule_for(model).image_tokens(width, height, media_resolution)


def text_tokens(text: str, *, model: str | None = None) -> int:
    """Approximate input tokens for `text`, by `model`'s rule."""
    return rule_for(model).text_tokens(text)
