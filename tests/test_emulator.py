"""The Gemini emulator, exercised through the real google-genai client (never mocked)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import jsonschema
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from dealscout_cli.emulator import Emulator, EmulatorConfig, parse_error_rates
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.tokens import image_tokens, text_tokens

MODEL = "gemini-2.5-flash"
JSON = "application/json"


class FakeClock:
    """A clock the test moves by hand, so minute-long windows take no time."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def photo(
    width: int = 640,
    height: int = 480,
    colour: tuple[int, int, int] = (30, 60, 200),
    fmt: str = "JPEG",
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, fmt)
    return buffer.getvalue()


def image_part(data: bytes, mime: str = "image/jpeg") -> types.Part:
    return types.Part.from_bytes(data=data, mime_type=mime)


def as_json(schema: type) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(response_mime_type=JSON, response_schema=schema)


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with a given config (keyword args of EmulatorConfig); all stop after."""
    running: list[Emulator] = []

    def start(clock: Callable[[], float] = time.monotonic, **options: object) -> Emulator:
        emulator = Emulator(EmulatorConfig(**options), clock=clock).start()  # type: ignore[arg-type]
        running.append(emulator)
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator]) -> Emulator:
    return start_emulator()


def client_for(emulator: Emulator, key: str = "test-key", timeout_ms: int = 10_000) -> genai.Client:
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=emulator.url, timeout=timeout_ms)
    )


@pytest.fixture
def client(emulator: Emulator) -> Iterator[genai.Client]:
    with client_for(emulator) as sdk_client:
        yield sdk_client


def identify(
    sdk_client: genai.Client, data: bytes, model: str = MODEL, **config: object
) -> types.GenerateContentResponse:
    return sdk_client.models.generate_content(
        model=model,
        contents=[image_part(data), "Identify this item for a resale listing."],
        config=types.GenerateContentConfig(
            response_mime_type=JSON, response_schema=Identification, **config
        ),
    )  # type: ignore[arg-type]


# --- the happy path -------------------------------------------------------------------------


def test_sync_client_gets_a_parsed_identification(client: genai.Client) -> None:
    response = identify(client, photo(colour=(200, 30, 30)))

    assert isinstance(response.parsed, Identification)
    identification = Identification.model_validate_json(response.text)
    assert identification == response.parsed
    assert len(identification.title) <= 80
    assert {"name": "Color", "value": "Red"} in [a.model_dump() for a in identification.attributes]
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == MODEL
    assert response.response_id


def test_async_client_gets_a_parsed_price_estimate(emulator: Emulator) -> None:
    async def price() -> types.GenerateContentResponse:
        async with client_for(emulator).aio as aio:
            return await aio.models.generate_content(
                model=MODEL,
                contents='{"title": "Sony WH-1000XM4 headphones"}',
                config=as_json(PriceEstimate),
            )

    response = asyncio.run(price())

    estimate = PriceEstimate.model_validate_json(response.text)
    assert response.parsed == estimate
    assert estimate.low <= estimate.suggested <= estimate.high
    assert estimate.currency == "USD"


def test_pricing_text_naming_a_catalogue_item_uses_its_range(client: genai.Client) -> None:
    text = json.dumps({"title": "KitchenAid Artisan KSM150PS Stand Mixer", "brand": "KitchenAid"})
    response = client.models.generate_content(
        model=MODEL, contents=text, config=as_json(PriceEstimate)
    )

    estimate = response.parsed
    assert isinstance(estimate, PriceEstimate)
    assert 120 <= estimate.low <= estimate.suggested <= estimate.high <= 260


def test_async_client_identifies_photos_concurrently(emulator: Emulator) -> None:
    photos = [photo(colour=(i * 40, 100, 50)) for i in range(5)]

    async def identify_all() -> list[types.GenerateContentResponse]:
        async with client_for(emulator).aio as aio:
            return await asyncio.gather(
                *(
                    aio.models.generate_content(
                        model=MODEL,
                        contents=[image_part(p), "What is it?"],
                        config=as_json(Identification),
                    )
                    for p in photos
                )
            )

    responses = asyncio.run(identify_all())

    assert all(isinstance(r.parsed, Identification) for r in responses)
    assert len({r.parsed.title for r in responses}) > 1  # content comes from the photo
    assert sorted(emulator.stats().images_seen.values()) == [1] * 5


def test_json_schema_dialect_with_refs_nullables_and_bounds(client: genai.Client) -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Money": {
                "type": "object",
                "properties": {
                    "low": {"type": "number", "minimum": 0},
                    "suggested": {"type": "number"},
                    "high": {"type": "number", "maximum": 100000},
                    "currency": {"type": "string", "enum": ["USD"]},
                },
                "required": ["low", "suggested", "high", "currency"],
            },
        },
        "properties": {
            "title": {"type": "string", "minLength": 3, "maxLength": 20},
            "brand": {"anyOf": [{"type": "string", "maxLength": 100}, {"type": "null"}]},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 12},
                "minItems": 1,
                "maxItems": 2,
            },
            "count": {"type": "integer", "minimum": 3, "maximum": 5},
            "grade": {"type": "string", "enum": ["A", "B", "C"]},
            "price": {"$ref": "#/$defs/Money"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["title", "brand", "tags", "count", "grade", "price", "confidence"],
    }
    response = client.models.generate_content(
        model=MODEL,
        contents=[image_part(photo()), "Describe it."],
        config=types.GenerateContentConfig(response_mime_type=JSON, response_json_schema=schema),
    )

    answer = json.loads(response.text)
    jsonschema.validate(answer, schema)
    assert answer["price"]["low"] <= answer["price"]["suggested"] <= answer["price"]["high"]


def test_openapi_dialect_with_uppercase_types(client: genai.Client) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "title": {"type": "STRING", "maxLength": "10"},
            "colour": {"type": "STRING"},
            "sizes": {
                "type": "ARRAY",
                "items": {"type": "INTEGER", "minimum": 1, "maximum": 9},
                "maxItems": "2",
            },
            "model": {"type": "STRING", "nullable": True},
        },
        "required": ["title", "colour", "sizes", "model"],
    }
    response = client.models.generate_content(
        model=MODEL,
        contents=[image_part(photo(colour=(40, 150, 60))), "Describe it."],
        config=types.GenerateContentConfig(response_mime_type=JSON, response_schema=schema),
    )

    answer = json.loads(response.text)
    assert len(answer["title"]) <= 10
    assert answer["colour"] == "Green"
    assert 1 <= len(answer["sizes"]) <= 2 and all(1 <= s <= 9 for s in answer["sizes"])


def test_plain_text_answer_without_a_schema(client: genai.Client) -> None:
    response = client.models.generate_content(
        model=MODEL, contents=[image_part(photo()), "What is this?"]
    )
    assert "This looks like" in response.text


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_and_input_give_the_same_answer(start_emulator: Callable[..., Emulator]) -> None:
    data = photo(colour=(120, 50, 160))
    answers = []
    for seed in (7, 7, 8):
        with client_for(start_emulator(seed=seed)) as sdk_client:
            answers.append(identify(sdk_client, data).text)

    assert answers[0] == answers[1]
    assert answers[0] != answers[2]


def test_fault_sequence_replays_for_a_seed(start_emulator: Callable[..., Emulator]) -> None:
    def statuses(seed: int) -> list[int]:
        emulator = start_emulator(seed=seed, error_rates={503: 0.3, 500: 0.2})
        seen = []
        with client_for(emulator) as sdk_client:
            for _ in range(20):
                try:
                    sdk_client.models.generate_content(model=MODEL, contents="hi")
                    seen.append(200)
                except errors.APIError as error:
                    seen.append(error.code)
        return seen

    first = statuses(3)
    assert first == statuses(3)
    assert {200, 500, 503} <= set(first)


# --- keys and paths ----------------------------------------------------------------------------


def test_wrong_key_is_api_key_invalid(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(api_key="right-key")
    with (
        client_for(emulator, key="wrong-key") as sdk_client,
        pytest.raises(errors.ClientError) as caught,
    ):
        sdk_client.models.generate_content(model=MODEL, contents="hi")

    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    with client_for(emulator, key="right-key") as sdk_client:
        assert sdk_client.models.generate_content(model=MODEL, contents="hi").text


def test_missing_key_is_permission_denied(emulator: Emulator) -> None:
    response = httpx.post(
        f"{emulator.url}/v1beta/models/{MODEL}:generateContent",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_both_api_versions_and_key_in_query(emulator: Emulator, version: str) -> None:
    response = httpx.post(
        f"{emulator.url}/{version}/models/{MODEL}:generateContent?key=k",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"]


def test_v1beta_through_the_sdk(emulator: Emulator) -> None:
    options = types.HttpOptions(base_url=emulator.url, api_version="v1beta", timeout=10_000)
    with genai.Client(api_key="test-key", http_options=options) as sdk_client:
        assert isinstance(identify(sdk_client, photo()).parsed, Identification)


def test_snake_case_body_and_urlsafe_base64_are_accepted(emulator: Emulator) -> None:
    data = photo(1024, 768)
    encoded = base64.urlsafe_b64encode(data).decode().rstrip("=")
    body = {
        "contents": [
            {
                "parts": [
                    {"inline_data": {"mime_type": "image/jpeg", "data": encoded}},
                    {"text": "hi"},
                ]
            }
        ],
        "generation_config": {"response_mime_type": JSON},
    }
    response = httpx.post(
        f"{emulator.url}/v1beta/models/{MODEL}:generateContent",
        json=body,
        headers={"x-goog-api-key": "k"},
    )
    assert response.status_code == 200
    assert response.json()["usageMetadata"]["promptTokensDetails"][1] == {
        "modality": "IMAGE",
        "tokenCount": 516,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON payload"),
        (b'{"contents": []}', "contents is not specified"),
        (
            b'{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@"}}]}]}',
            "Base64 decoding failed",
        ),
        (
            b'{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]}',
            "Unable to process input image",
        ),
    ],
)
def test_bad_requests_are_invalid_argument(emulator: Emulator, body: bytes, message: str) -> None:
    response = httpx.post(
        f"{emulator.url}/v1beta/models/{MODEL}:generateContent",
        content=body,
        headers={"x-goog-api-key": "k"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in response.json()["error"]["message"]


def test_unknown_method_is_not_found(emulator: Emulator) -> None:
    response = httpx.post(
        f"{emulator.url}/v1beta/models/{MODEL}:embedContent",
        headers={"x-goog-api-key": "k"},
        json={},
    )
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


# --- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (300, 200, 258),  # both sides <= 384: one flat charge
        (768, 768, 258),  # one 768 tile
        (1024, 768, 516),  # two tiles
        (3000, 4000, 4 * 6 * 258),  # ceil(3000/768) * ceil(4000/768) tiles
    ],
)
def test_image_token_counts(client: genai.Client, width: int, height: int, tokens: int) -> None:
    assert image_tokens(width, height) == tokens
    counted = client.models.count_tokens(model=MODEL, contents=[image_part(photo(width, height))])
    assert counted.total_tokens == tokens
    response = client.models.generate_content(
        model=MODEL, contents=[image_part(photo(width, height))]
    )
    image_detail = [
        d
        for d in response.usage_metadata.prompt_tokens_details
        if d.modality == types.MediaModality.IMAGE
    ]
    assert image_detail[0].token_count == tokens


def test_text_tokens_are_four_characters_each(client: genai.Client) -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcde") == 2
    counted = client.models.count_tokens(model=MODEL, contents="x" * 40)
    assert counted.total_tokens == 10


def test_low_media_resolution_caps_image_tokens(client: genai.Client) -> None:
    response = identify(
        client, photo(3000, 4000), media_resolution=types.MediaResolution.MEDIA_RESOLUTION_LOW
    )
    details = {d.modality: d.token_count for d in response.usage_metadata.prompt_tokens_details}
    assert details[types.MediaModality.IMAGE] == 64


# --- limits ------------------------------------------------------------------------------------


def test_burst_over_rpm_gets_429_with_retry_info(start_emulator: Callable[..., Emulator]) -> None:
    clock = FakeClock()
    emulator = start_emulator(rpm=5, clock=clock)
    outcomes = []
    with client_for(emulator) as sdk_client:
        for _ in range(8):
            try:
                sdk_client.models.generate_content(model=MODEL, contents="hi")
                outcomes.append(200)
            except errors.ClientError as error:
                outcomes.append(error.code)
                last = error
        assert outcomes == [200] * 5 + [429] * 3
        details = {d["@type"].rsplit(".", 1)[1]: d for d in last.details["error"]["details"]}
        assert last.status == "RESOURCE_EXHAUSTED"
        assert details["QuotaFailure"]["violations"][0]["quotaId"] == (
            "GenerateRequestsPerMinutePerProjectPerModel"
        )
        assert details["RetryInfo"]["retryDelay"] == "60s"

        clock.now += 45.5  # the oldest request leaves the window in 14.5 s, rounded up
        with pytest.raises(errors.ClientError) as caught:
            sdk_client.models.generate_content(model=MODEL, contents="hi")
        retry = caught.value.details["error"]["details"][-1]
        assert retry["retryDelay"] == "15s"

        clock.now += 15
        assert sdk_client.models.generate_content(model=MODEL, contents="hi").text
    stats = emulator.stats()
    assert stats.rate_limited == {"rpm": 4}
    assert stats.max_requests_per_window == 9  # arrivals in the busiest minute, 429s included


def test_requests_under_rpm_are_never_limited(start_emulator: Callable[..., Emulator]) -> None:
    clock = FakeClock()
    emulator = start_emulator(rpm=5, clock=clock)
    with client_for(emulator) as sdk_client:
        for _ in range(12):
            sdk_client.models.generate_content(model=MODEL, contents="hi")
            clock.now += 12.5  # 4.8 per minute
    assert emulator.stats().requests_by_status == {200: 12}


def test_rpm_is_per_model(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(rpm=1, clock=FakeClock())
    with client_for(emulator) as sdk_client:
        sdk_client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        sdk_client.models.generate_content(model="gemini-2.5-pro", contents="hi")
        with pytest.raises(errors.ClientError):
            sdk_client.models.generate_content(model="gemini-2.5-pro", contents="hi")


def test_real_clock_window_with_a_short_window(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(rpm=2, window_seconds=0.3)
    with client_for(emulator) as sdk_client:
        sdk_client.models.generate_content(model=MODEL, contents="hi")
        sdk_client.models.generate_content(model=MODEL, contents="hi")
        with pytest.raises(errors.ClientError) as caught:
            sdk_client.models.generate_content(model=MODEL, contents="hi")
        assert caught.value.details["error"]["details"][-1]["retryDelay"] == "1s"
        time.sleep(0.35)
        assert sdk_client.models.generate_content(model=MODEL, contents="hi").text


def test_input_tokens_per_minute(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(tpm=600, clock=FakeClock())
    with client_for(emulator) as sdk_client:
        identify(sdk_client, photo(300, 200))  # ~270 tokens
        identify(sdk_client, photo(300, 200))
        with pytest.raises(errors.ClientError) as caught:
            identify(sdk_client, photo(300, 200))
    violation = caught.value.details["error"]["details"][0]["violations"][0]
    assert violation["quotaId"] == "GenerateContentInputTokensPerModelPerMinute"


def test_requests_per_day_use_the_daily_quota_id(start_emulator: Callable[..., Emulator]) -> None:
    clock = FakeClock()
    emulator = start_emulator(rpd=2, clock=clock)
    with client_for(emulator) as sdk_client:
        for _ in range(2):
            sdk_client.models.generate_content(model=MODEL, contents="hi")
            clock.now += 3600
        with pytest.raises(errors.ClientError) as caught:
            sdk_client.models.generate_content(model=MODEL, contents="hi")
    details = caught.value.details["error"]["details"]
    assert details[0]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert details[-1]["retryDelay"] == f"{86400 - 7200}s"


# --- injected faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception", "google_status"),
    [
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, errors.ServerError, "INTERNAL"),
        (503, errors.ServerError, "UNAVAILABLE"),
        (504, errors.ServerError, "DEADLINE_EXCEEDED"),
    ],
)
def test_injected_errors_reach_the_sdk_as_its_exceptions(
    start_emulator: Callable[..., Emulator], status: int, exception: type, google_status: str
) -> None:
    emulator = start_emulator(error_rates={status: 1.0})
    with client_for(emulator) as sdk_client, pytest.raises(exception) as caught:
        sdk_client.models.generate_content(model=MODEL, contents="hi")
    assert caught.value.code == status
    assert caught.value.status == google_status
    assert emulator.stats().requests_by_status == {status: 1}


def test_injected_429_carries_retry_info(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(error_rates={429: 1.0}, injected_retry_delay=2)
    with client_for(emulator) as sdk_client, pytest.raises(errors.ClientError) as caught:
        sdk_client.models.generate_content(model=MODEL, contents="hi")
    assert caught.value.details["error"]["details"][-1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "2s",
    }


def test_dropped_connection(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(drop_rate=1.0)
    with client_for(emulator) as sdk_client, pytest.raises(Exception) as caught:
        sdk_client.models.generate_content(model=MODEL, contents="hi")
    assert type(caught.value).__name__ == "RemoteProtocolError"
    assert emulator.stats().faults == {"drop": 1}


def test_trickled_body_is_slow_but_complete(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(trickle_rate=1.0, trickle_seconds=0.4)
    with client_for(emulator) as sdk_client:
        started = time.perf_counter()
        response = identify(sdk_client, photo())
        assert time.perf_counter() - started >= 0.35
    assert isinstance(response.parsed, Identification)


def test_trickle_trips_a_short_read_timeout(start_emulator: Callable[..., Emulator]) -> None:
    # The body comes in 20 pieces trickle_seconds/20 apart: 0.15 s gaps beat a 0.1 s read timeout.
    emulator = start_emulator(trickle_rate=1.0, trickle_seconds=3.0)
    with client_for(emulator, timeout_ms=100) as sdk_client, pytest.raises(Exception) as caught:
        sdk_client.models.generate_content(model=MODEL, contents="hi")
    assert "Timeout" in type(caught.value).__name__


def test_malformed_json_in_a_200(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(malformed_rate=1.0)
    with client_for(emulator) as sdk_client:
        response = identify(sdk_client, photo())
    assert response.parsed is None
    with pytest.raises(ValueError):
        json.loads(response.text)


def test_max_tokens_truncates_the_json(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(max_tokens_rate=1.0)
    with client_for(emulator) as sdk_client:
        response = identify(sdk_client, photo())
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.parsed is None
    assert response.text.startswith('{"title"')


def test_max_output_tokens_is_honoured(client: genai.Client) -> None:
    response = identify(client, photo(), max_output_tokens=10)
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count == 10
    assert len(response.text) == 40


def test_safety_block_has_no_candidates(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(safety_rate=1.0)
    with client_for(emulator) as sdk_client:
        response = identify(sdk_client, photo())
    assert not response.candidates
    assert response.text is None
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_fixed_latency(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(latency=0.2)
    with client_for(emulator) as sdk_client:
        started = time.perf_counter()
        sdk_client.models.generate_content(model=MODEL, contents="hi")
        assert time.perf_counter() - started >= 0.2


@pytest.mark.parametrize("dist", ["uniform", "lognormal"])
def test_latency_distributions_spread_around_the_mean(dist: str) -> None:
    config = EmulatorConfig(latency=0.5, latency_dist=dist)
    app = Emulator(config).app
    samples = [app.draw_faults(config)["latency"] for _ in range(2000)]
    assert len(set(samples)) > 1000
    middle = sorted(samples)[1000]
    assert 0.4 < middle < 0.6
    if dist == "uniform":
        assert min(samples) >= 0 and max(samples) <= 1.0


def test_faults_scoped_to_one_model(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(model_overrides={"gemini-2.5-pro": {"error_rates": {503: 1.0}}})
    with client_for(emulator) as sdk_client:
        assert sdk_client.models.generate_content(model="gemini-2.5-flash", contents="hi").text
        with pytest.raises(errors.ServerError):
            sdk_client.models.generate_content(model="gemini-2.5-pro", contents="hi")


# --- stats -------------------------------------------------------------------------------------


def test_stats_endpoint_matches_the_python_snapshot(
    client: genai.Client, emulator: Emulator
) -> None:
    first, second = photo(colour=(1, 2, 3)), photo(colour=(250, 250, 250))
    identify(client, first)
    identify(client, first)
    identify(client, second)

    stats = emulator.stats()
    assert stats.requests == 3
    assert stats.requests_by_model == {MODEL: 3}
    assert sorted(stats.images_seen.values()) == [1, 2]
    assert stats.tokens_in > 3 * 258 and stats.tokens_out > 0
    assert stats.max_requests_per_window == 3
    served = httpx.get(f"{emulator.url}/_emulator/stats").json()
    assert served == json.loads(json.dumps(stats.to_dict()))
    assert served["requests_by_status"] == {"200": 3}


def test_reset_clears_stats_and_windows(start_emulator: Callable[..., Emulator]) -> None:
    emulator = start_emulator(rpm=1, clock=FakeClock())
    with client_for(emulator) as sdk_client:
        sdk_client.models.generate_content(model=MODEL, contents="hi")
        assert httpx.post(f"{emulator.url}/_emulator/reset").status_code == 200
        assert emulator.stats().requests == 0
        sdk_client.models.generate_content(model=MODEL, contents="hi")  # window was cleared
        emulator.reset()
        assert emulator.stats().requests == 0


# --- configuration and lifecycle ---------------------------------------------------------------


def test_parse_error_rates() -> None:
    assert parse_error_rates("429=0.1,503=0.02") == {429: 0.1, 503: 0.02}
    assert parse_error_rates(" 500 = 0.5 ,") == {500: 0.5}
    assert parse_error_rates("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("429", "expected STATUS=RATE"),
        ("abc=0.1", "STATUS must be an integer"),
        ("503=lots", "STATUS must be an integer and RATE a number"),
        ("418=0.1", "cannot inject HTTP 418"),
        ("503=1.5", "between 0 and 1"),
        ("503=0.6,500=0.6", "more than 1"),
        ("503=0.1,503=0.2", "given twice"),
    ],
)
def test_parse_error_rates_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_error_rates(text)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="latency_dist"):
        EmulatorConfig(latency_dist="normal")
    with pytest.raises(ValueError, match="rpm"):
        EmulatorConfig(rpm=0)
    with pytest.raises(ValueError, match="unknown fields"):
        EmulatorConfig(model_overrides={"m": {"rmp": 3}})


def test_start_is_quick_and_stop_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    for _ in range(3):
        started = time.perf_counter()
        emulator = Emulator(EmulatorConfig()).start()
        assert time.perf_counter() - started < 0.5
        assert httpx.get(f"{emulator.url}/_emulator/stats").status_code == 200
        emulator.stop()
        emulator.stop()  # twice is fine
    assert set(threading.enumerate()) == before


def test_import_does_not_load_the_sdk_or_uvicorn() -> None:
    code = (
        "import sys, dealscout_cli.emulator; "
        "print('google.genai' in sys.modules, 'uvicorn' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["False", "False"]


def test_command_line_flags_build_the_same_config() -> None:
    from dealscout_cli.emulator.__main__ import build_parser, main

    args = build_parser().parse_args(
        [
            "--rpm",
            "60",
            "--latency-dist",
            "lognormal",
            "--error-rate",
            "429=0.1",
            "--safety-rate",
            "0.5",
        ]
    )
    assert (args.rpm, args.latency_dist, args.safety_rate) == (60, "lognormal", 0.5)
    with pytest.raises(SystemExit):
        main(["--error-rate", "418=1"])


def test_dealscout_emulator_on_a_busy_port_says_so_in_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "dealscout_cli.cli", "emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "pick another --port (0 picks a free one)"
    )


def test_strings_with_a_pattern_match_it(client: genai.Client) -> None:
    patterns = {
        "sku": r"^DS-[0-9A-F]{10}$",
        "zip": r"^\d{5}(-\d{4})?$",
        "currency": r"^[A-Z]{3}$",  # "USD" by name already matches: kept
        "colour": r"^(red|green|blue)$",
        "email": r"^\w+@\w+\.com$",
        "note": r"[^abc]+x",
    }
    schema = {
        "type": "object",
        "properties": {name: {"type": "string", "pattern": p} for name, p in patterns.items()},
        "required": list(patterns),
    }
    response = client.models.generate_content(
        model=MODEL,
        contents=[image_part(photo()), "Describe it."],
        config=types.GenerateContentConfig(response_mime_type=JSON, response_json_schema=schema),
    )

    answer = json.loads(response.text)
    jsonschema.validate(answer, schema)  # jsonschema checks `pattern` too
    assert answer["currency"] == "USD"


def test_a_pattern_it_cannot_generate_leaves_the_plain_text() -> None:
    import random

    from dealscout_cli.emulator.schema import string_for_pattern

    assert string_for_pattern(r"^(a)\1$", random.Random(1)) is None  # backreference
    assert string_for_pattern(r"(?=x)y", random.Random(1)) is None  # lookahead
    assert string_for_pattern(r"[", random.Random(1)) is None  # not a regex
