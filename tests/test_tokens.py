"""Token counting rules per model family, and the layering they sit in: the core counts
tokens without the emulator, which only ever imports the core."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dealscout_cli.costs import estimate_request_tokens
from dealscout_cli.models import Identification
from dealscout_cli.providers.base import ImagePart, ModelRequest
from dealscout_cli.tokens import (
    DEFAULT_RULE,
    GEMINI_2,
    GEMINI_3,
    THINKING_TOKENS,
    family_of,
    image_tokens,
    rule_for,
    text_tokens,
)

CORE_MODULES = [
    "costs", "tokens", "estimate", "limits", "pipeline", "models", "store", "records",
    "budget", "images", "scan", "export", "prompts", "providers.base", "providers.gemini",
    "jobs", "retry", "events", "config", "text", "engines", "engines.local", "engines.batch",
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "rule"),
    [
        ("gemini-2.5-flash", GEMINI_2),
        ("models/gemini-2.5-flash-lite", GEMINI_2),
        ("gemini-3.6-flash-001", GEMINI_3),
        ("models/Gemini-3.5-Flash-Lite", GEMINI_3),
        ("some-other-model", DEFAULT_RULE),
        (None, DEFAULT_RULE),
    ],
)
def test_each_model_family_has_its_rule(model: str | None, rule: object) -> None:
    assert rule_for(model) is rule


def test_images_are_counted_in_tiles_and_text_in_four_characters() -> None:
    assert image_tokens(300, 200) == 258
    assert image_tokens(1024, 768, model="gemini-2.5-flash") == 516
    assert image_tokens(3000, 4000, "MEDIA_RESOLUTION_LOW") == 64
    assert text_tokens("abcde", model="gemini-2.5-flash") == 2


def test_request_estimate_counts_unknown_image_sizes_as_one_tile() -> None:
    request = ModelRequest(
        model="gemini-2.5-flash",
        system="s" * 8,
        prompt="p" * 5,
        schema=Identification,
        images=(ImagePart(b"", width=1024, height=768), ImagePart(b"")),
    )
    assert estimate_request_tokens(request) == 516 + 258 + 2 + 2


@pytest.mark.parametrize(
    ("size", "resolution", "tokens"),
    [
        ((16, 16), None, 1120),  # HIGH when the request does not say, whatever the size
        ((8000, 6000), None, 1120),
        ((3000, 4000), "MEDIA_RESOLUTION_LOW", 280),
        ((300, 200), "medium", 560),
        ((300, 200), "High", 1120),
        ((300, 200), "MEDIA_RESOLUTION_UNSPECIFIED", 1120),
    ],
)
def test_gemini_3_images_cost_their_resolution_budget_whatever_their_size(
    size: tuple[int, int], resolution: str | None, tokens: int
) -> None:
    assert image_tokens(*size, resolution, model="gemini-3.6-flash") == tokens


def test_a_parts_own_resolution_overrides_the_requests_on_gemini_3() -> None:
    assert GEMINI_3.image_tokens(4000, 3000, "low", part_resolution="high") == 1120
    assert GEMINI_3.image_tokens(4000, 3000, "high", part_resolution="MEDIA_RESOLUTION_LOW") == 280
    assert GEMINI_3.image_tokens(4000, 3000, "medium", part_resolution=None) == 560


def test_gemini_2_keeps_the_tile_rule_at_high_resolution() -> None:
    assert image_tokens(3000, 4000, "high", model="gemini-2.5-flash") == 6192
    assert image_tokens(3000, 4000, "medium", model="gemini-2.5-flash") == 256


def test_unknown_family_is_said_and_counted_by_the_nearest_rule() -> None:
    assert family_of("gemma-4-27b") is None
    assert family_of("") is None
    assert family_of("gemini-2.5-flash") == "gemini-2"
    assert family_of("models/gemini-3.6-flash-001") == "gemini-3"
    assert image_tokens(1024, 768, model="gemma-4-27b") == 516


def test_thinking_is_expected_per_level_on_gemini_3_only() -> None:
    assert GEMINI_3.thought_tokens("minimal") == THINKING_TOKENS["minimal"]
    assert GEMINI_3.thought_tokens("HIGH") == THINKING_TOKENS["high"]
    assert GEMINI_3.thought_tokens(None) == THINKING_TOKENS["high"]  # the server's default
    assert list(THINKING_TOKENS.values()) == sorted(THINKING_TOKENS.values())
    assert GEMINI_2.thought_tokens("high") == 0


def test_request_estimate_uses_the_requests_media_resolution_on_gemini_3() -> None:
    request = ModelRequest(
        model="gemini-3.6-flash",
        system="s" * 8,
        prompt="p" * 5,
        schema=Identification,
        images=(ImagePart(b"", width=4000, height=3000), ImagePart(b"")),
        media_resolution="medium",
    )
    assert estimate_request_tokens(request) == 560 + 560 + 2 + 2


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_not_import_the_emulator(module: str) -> None:
    name = f"dealscout_cli.{module}"
    code = f"import sys, {name}; print('dealscout_cli.emulator' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {name} imported the emulator"
