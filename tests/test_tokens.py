"""Token counting rules per model family, and the layering they sit in: the core counts
tokens without the emulator, which only ever imports the core."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from dealscout_cli.costs import estimate_request_tokens
from dealscout_cli.models import Identification
from dealscout_cli.providers.base import ImagePart, ModelRequest
from dealscout_cli.tokens import DEFAULT_RULE, GEMINI_2, image_tokens, rule_for, text_tokens

CORE_MODULES = [
    "costs", "tokens", "estimate", "limits", "pipeline", "models", "store", "records",
    "budget", "images", "scan", "export", "prompts", "providers.base", "providers.gemini",
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "rule"),
    [
        ("gemini-2.5-flash", GEMINI_2),
        ("models/gemini-2.5-flash-lite", GEMINI_2),
        ("gemini-3.6-flash-001", GEMINI_2),  # Gemini 3 counts like 2.x until its rule lands
        ("some-other-model", DEFAULT_RULE),
        (None, DEFAULT_RULE),
    ],
)
def test_each_model_family_has_its_rule(model: str | None, rule: object) -> None:
    assert rule_for(model) is rule


def test_images_are_counted_in_tiles_and_text_in_four_characters() -> None:
    assert image_tokens(300, 200) == 258
    assert image_tokens(1024, 768, model="gemini-3.6-flash") == 516
    assert image_tokens(3000, 4000, "MEDIA_RESOLUTION_LOW") == 64
    assert text_tokens("abcde", model="gemini-2.5-flash") == 2


def test_request_estimate_counts_unknown_image_sizes_as_one_tile() -> None:
    request = ModelRequest(
        model="gemini-3.6-flash",
        system="s" * 8,
        prompt="p" * 5,
        schema=Identification,
        images=(ImagePart(b"", width=1024, height=768), ImagePart(b"")),
    )
    assert estimate_request_tokens(request) == 516 + 258 + 2 + 2


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_not_import_the_emulator(module: str) -> None:
    name = f"dealscout_cli.{module}"
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} does not exist in this tree")
    code = f"import sys, {name}; print('dealscout_cli.emulator' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {name} imported the emulator"
