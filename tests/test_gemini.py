"""The Gemini provider sends what google-genai's `generate_content` would send, byte for byte.

The provider builds the fixed part of a request once per shape and writes the contents
itself (`GeminiProvider._send`, to save the SDK's per-call conversion); these tests hold it
to the SDK's own output on the wire, for every kind of request dealscout makes, and to the
same replies and errors through the real HTTP path against the emulator.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import types
from PIL import Image

from dealscout_cli.errors import KeyRejected, ModelNotFound, ProviderError, RateLimited
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.providers.base import ImagePart, ModelRequest
from dealscout_cli.providers.gemini import GeminiProvider


def picture(kind: str, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, kind)
    return buffer.getvalue()


JPEG, PNG = picture("JPEG", (200, 30, 30)), picture("PNG", (30, 200, 30))
SHAPES = {
    "identify, Gemini 3, two photos": ModelRequest(
        "gemini-3.6-flash",
        "You identify products.",
        "What is this? Notes: «sans marque» 🙂",
        Identification,
        images=(ImagePart(JPEG, "image/jpeg", 768, 576), ImagePart(PNG, "image/png")),
        media_resolution="high",
        thinking_level="low",
    ),
    "price, Gemini 3 lite": ModelRequest(
        "gemini-3.5-flash-lite",
        "You price things.",
        "Price it",
        PriceEstimate,
        max_output_tokens=1024,
        thinking_level="minimal",
    ),
    "Gemini 2, no options, no temperature": ModelRequest(
        "gemini-2.5-flash", "s", "", Identification, temperature=0.0
    ),
    "grounded price": ModelRequest(
        "gemini-3.6-flash", "Search.", "Price it", PriceEstimate, grounded=True
    ),
    "model named with its prefix": ModelRequest("models/gemini-2.5-flash", "s", "p", PriceEstimate),
}


def recording_client(url: str, bodies: list[dict[str, Any]]) -> httpx.AsyncClient:
    async def record(request: httpx.Request) -> None:
        if request.url.path.endswith(":generateContent"):
            bodies.append({"path": request.url.path, **json.loads(request.content)})

    return httpx.AsyncClient(event_hooks={"request": [record]})


async def both_ways(
    url: str, request: ModelRequest, fast: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body the SDK's generate_content sends, and the one the provider sends."""
    sdk_bodies: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    http = recording_client(url, sdk_bodies)
    options = types.HttpOptions(base_url=url, httpx_async_client=http)
    sdk = genai.Client(api_key="k", http_options=options)
    provider = GeminiProvider("k", base_url=url)
    assert provider.fast_path  # this SDK has the private names (see the module docstring)
    provider.fast_path = fast
    provider._http.event_hooks["request"].append(
        recording_client(url, ours).event_hooks["request"][0]
    )
    try:
        await sdk.aio.models.generate_content(
            model=request.model,
            contents=provider._contents(request),
            config=provider._config(request),
        )
        for _ in range(2):  # the second call comes from the cache
            await provider.generate(request)
    finally:
        await provider.aclose()
        await http.aclose()
    assert len(sdk_bodies) == 1 and len(ours) == 2
    assert ours[0] == ours[1]
    return sdk_bodies[0], ours[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_request_body_is_the_sdks_own(emulator: Any, shape: str) -> None:
    expected, sent = asyncio.run(both_ways(emulator.url, SHAPES[shape]))
    assert sent == expected


@pytest.mark.parametrize("shape", ["identify, Gemini 3, two photos", "grounded price"])
def test_without_the_private_names_the_public_call_sends_the_same(
    emulator: Any, shape: str
) -> None:
    """An SDK release that moves the private names turns the fast path off (checked when the
    provider is built): the public `generate_content` then sends the same request."""
    expected, sent = asyncio.run(both_ways(emulator.url, SHAPES[shape], fast=False))
    assert sent == expected


def test_same_fixed_part_different_contents(emulator: Any) -> None:
    """The cache keys on everything but prompt and images: two items never share contents."""
    base = SHAPES["identify, Gemini 3, two photos"]

    async def run() -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = []
        provider = GeminiProvider("k", base_url=emulator.url)
        hook = recording_client(emulator.url, bodies).event_hooks["request"][0]
        provider._http.event_hooks["request"].append(hook)
        try:
            await provider.generate(base)
            other = ModelRequest(
                base.model,
                base.system,
                "another item",
                base.schema,
                images=(ImagePart(picture("JPEG", (1, 2, 3))),),
                media_resolution=base.media_resolution,
                thinking_level=base.thinking_level,
            )
            await provider.generate(other)
            await provider.generate(ModelRequest(base.model, "another system", "p", Identification))
        finally:
            await provider.aclose()
        return bodies

    first, second, third = asyncio.run(run())
    assert first["contents"] != second["contents"]
    assert second["contents"][0]["parts"][1] == {"text": "another item"}
    assert {k: v for k, v in first.items() if k != "contents"} == {
        k: v for k, v in second.items() if k != "contents"
    }
    assert third["systemInstruction"]["parts"][0]["text"] == "another system"
    assert "mediaResolution" not in third["generationConfig"]


def test_replies_come_through(emulator: Any) -> None:
    async def run() -> None:
        provider = GeminiProvider("k", base_url=emulator.url)
        try:
            reply = await provider.generate(SHAPES["identify, Gemini 3, two photos"])
        finally:
            await provider.aclose()
        Identification.model_validate_json(reply.text)
        assert reply.input_tokens and reply.output_tokens and reply.finish_reason == "STOP"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"api_key": "the right key"}, KeyRejected),
        ({"models": ("gemini-2.5-flash",)}, ModelNotFound),
        ({"error_rates": {429: 1.0}}, RateLimited),
        ({"error_rates": {503: 1.0}}, ProviderError),
        ({"malformed_rate": 1.0}, None),  # the text is bad JSON: the pipeline judges it
    ],
)
def test_errors_are_translated_as_before(config: dict[str, Any], error: type | None) -> None:
    from dealscout_cli.emulator import Emulator, EmulatorConfig

    async def run(url: str) -> None:
        provider = GeminiProvider("wrong key", base_url=url)
        try:
            await provider.generate(SHAPES["price, Gemini 3 lite"])
        finally:
            await provider.aclose()

    with Emulator(EmulatorConfig(seed=1, **config)) as emu:
        if error is None:
            asyncio.run(run(emu.url))
            return
        with pytest.raises(error) as caught:
            asyncio.run(run(emu.url))
    assert "wrong key" not in str(caught.value)
