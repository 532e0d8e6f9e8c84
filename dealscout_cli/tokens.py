"""How many tokens a request costs, counted the way Google documents it, per model family.

One home for the counting rules: the limiter's estimate before a call (`costs`), the
`estimate` command, `--max-cost`, Batch Mode's budget and the emulator that plays Google
all import them from here.

Gemini 2.x (https://ai.google.dev/gemini-api/docs/tokens): an image with both sides at
most 384 px costs 258 tokens; a larger one is cropped and scaled into 768x768 tiles,
258 tokens each. A request-wide `mediaResolution` LOW or MEDIUM caps an image at 64 or
256 tokens.

Gemini 3 (Google's "Media resolution" page, ai.google.dev/gemini-api/docs/media-resolution,
section "Token counts"): an image costs a fixed budget whatever its pixel size, by its
media resolution: LOW 280, MEDIUM 560, HIGH 1,120 tokens; HIGH when the request does not
say. A part's own `media_resolution` overrides the request's. Gemini 3 also thinks by
default and bills the thoughts as output; `thinking_level` (MINIMAL..HIGH) sets how much.
Google publishes no thought counts, so `THINKING_TOKENS` is our estimate per level.

A model of no known family (`family_of` is None) is counted by the Gemini 2 tile rule,
the closest guess; callers that must not guess ask `family_of` first.
Text is about four characters per token in every family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MEDIA_RESOLUTIONS = ("low", "medium", "high")
THINKING_LEVELS = ("minimal", "low", "medium", "high")

# Our estimate of the thought tokens one dealscout call spends per thinking level on
# Gemini 3 Flash models (billed as output). Not Google's numbers: Google documents the
# levels, not their counts; the emulator draws around these means.
THINKING_TOKENS: Mapping[str, int] = MappingProxyType(
    {"minimal": 40, "low": 320, "medium": 900, "high": 2000}
)

# How far one call's thoughts stray from the level's expectation (the emulator draws
# uniformly within it; a budget plans for its top).
THINKING_SPREAD = 0.2


def media_resolution_name(value: str | None) -> str | None:
    """`low`/`medium`/`high` from any spelling (`MEDIA_RESOLUTION_LOW`, `Low`); None when
    unset or unspecified."""
    if not value:
        return None
    name = str(value).strip().lower().removeprefix("media_resolution_")
    return name if name in MEDIA_RESOLUTIONS else None


def thinking_level_name(value: str | None) -> str | None:
    """`minimal`..`high` from any spelling (`MINIMAL`, `Low`); None when unset."""
    if not value:
        return None
    name = str(value).strip().lower().removeprefix("thinking_level_")
    return name if name in THINKING_LEVELS else None


@dataclass(frozen=True)
class TokenRule:
    """One model family's counting rule for images, text and thinking."""

    family: str | None = "gemini-2"
    tokens_per_tile: int = 258
    small_image_max_side: int = 384
    tile_side: int = 768
    chars_per_token: int = 4
    # Gemini 2.x: a request-wide LOW/MEDIUM caps each image; HIGH or none is the tile rule.
    media_resolution_tokens: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({"low": 64, "medium": 256})
    )
    # Gemini 3: every image costs its resolution's budget; None means the tile rule.
    image_budgets: Mapping[str, int] | None = None
    default_media_resolution: str | None = None
    # Thinking: expected thought tokens per level, None when the family takes no level.
    thinking_tokens: Mapping[str, int] | None = None
    default_thinking_level: str | None = None

    @property
    def takes_settings(self) -> bool:
        """True when requests to this family carry `media_resolution` and `thinking_level`."""
        return self.image_budgets is not None

    def image_tokens(
        self,
        width: int,
        height: int,
        media_resolution: str | None = None,
        part_resolution: str | None = None,
    ) -> int:
        """Input tokens for one image of `width` x `height` pixels, at the request's
        `media_resolution` unless the part has its own (`part_resolution`, Gemini 3).

        >>> GEMINI_2.image_tokens(300, 200), GEMINI_2.image_tokens(1024, 768)
        (258, 516)
        >>> GEMINI_3.image_tokens(300, 200), GEMINI_3.image_tokens(4000, 3000, "low")
        (1120, 280)
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if self.image_budgets is not None:
            chosen = media_resolution_name(part_resolution) or media_resolution_name(
                media_resolution
            )
            return self.image_budgets[chosen or self.default_media_resolution or "high"]
        capped = self.media_resolution_tokens.get(media_resolution_name(media_resolution) or "")
        if capped is not None:
            return capped
        if width <= self.small_image_max_side and height <= self.small_image_max_side:
            return self.tokens_per_tile
        tiles = math.ceil(width / self.tile_side) * math.ceil(height / self.tile_side)
        return tiles * self.tokens_per_tile

    def unsized_image_tokens(self, media_resolution: str | None = None) -> int:
        """An image whose size is unknown: one full tile, or the resolution's budget."""
        return self.image_tokens(self.tile_side, self.tile_side, media_resolution)

    def text_tokens(self, text: str) -> int:
        """Approximate tokens for `text`: one per `chars_per_token` characters, rounded up."""
        return math.ceil(len(text) / self.chars_per_token)

    def thought_tokens(self, thinking_level: str | None) -> int:
        """Expected thought tokens of one call (our estimate; 0 for a family that does not
        think by default)."""
        if self.thinking_tokens is None:
            return 0
        level = thinking_level_name(thinking_level) or self.default_thinking_level or "high"
        return self.thinking_tokens[level]


GEMINI_2 = TokenRule()
GEMINI_3 = TokenRule(
    family="gemini-3",
    image_budgets=MappingProxyType({"low": 280, "medium": 560, "high": 1120}),
    default_media_resolution="high",
    thinking_tokens=THINKING_TOKENS,
    default_thinking_level="high",  # Gemini 3 Flash thinks dynamically (high) unless told
)
UNKNOWN_FAMILY = TokenRule(family=None)  # counted like 2.x: the nearest guess

RULES: Mapping[str, TokenRule] = MappingProxyType(
    {  # model-name prefix: rule (the longest matching prefix wins)
        "gemini-3": GEMINI_3,
        "gemini-2": GEMINI_2,
    }
)
DEFAULT_RULE = UNKNOWN_FAMILY  # a model of no known family, or none named


def rule_for(model: str | None) -> TokenRule:
    """The counting rule of `model`'s family (`models/` prefix and version suffix ignored)."""
    name = (model or "").strip().lower().removeprefix("models/")
    matches = [prefix for prefix in RULES if name.startswith(prefix)]
    return RULES[max(matches, key=len)] if matches else DEFAULT_RULE


def family_of(model: str | None) -> str | None:
    """`gemini-3`, `gemini-2`, or None for a model of no family we know."""
    return rule_for(model).family


def image_tokens(
    width: int, height: int, media_resolution: str | None = None, *, model: str | None = None
) -> int:
    """Input tokens for one image, by `model`'s rule.

    >>> image_tokens(300, 200), image_tokens(1024, 768), image_tokens(3000, 4000)
    (258, 516, 6192)
    >>> image_tokens(3000, 4000, model="gemini-3.6-flash")
    1120
    """
    return rule_for(model).image_tokens(width, height, media_resolution)


def text_tokens(text: str, *, model: str | None = None) -> int:
    """Approximate input tokens for `text`, by `model`'s rule."""
    return rule_for(model).text_tokens(text)
