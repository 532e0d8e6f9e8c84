"""The Gemini REST wire format: reading requests, writing answers and Google-shaped errors.

Requests are accepted in camelCase (what the REST docs show) and snake_case (what
google-genai sends inside some objects, e.g. `inline_data.mime_type`), with base64
in either alphabet, padded or not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from dealscout_cli.tokens import THINKING_SPREAD, rule_for

MAX_REQUEST_BYTES = 20 * 1024 * 1024  # Gemini's inline request limit
TROUBLESHOOTING = "https://developers.generativeai.google/guide/troubleshooting"


class BadRequest(Exception):
    """The request cannot be served; carries the HTTP status and Google's error body."""

    def __init__(
        self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = error_body(code, status, message, details or [])


def error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details}}


def invalid_argument(message: str) -> BadRequest:
    return BadRequest(
        400,
        "INVALID_ARGUMENT",
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"description": message}],
            },
        ],
    )


@dataclass
class InlineImage:
    mime_type: str
    data: bytes
    sha256: str
    media_resolution: str | None = None  # the part's own (Gemini 3): overrides the request's


@dataclass
class ModelRequest:
    """The parts of a generateContent / countTokens request the emulator uses."""

    texts: list[str] = field(default_factory=list)
    system_texts: list[str] = field(default_factory=list)
    images: list[InlineImage] = field(default_factory=list)
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    media_resolution: str | None = None
    thinking_level: str | None = None  # generationConfig.thinkingConfig.thinkingLevel
    google_search: bool = False  # tools=[{googleSearch: {}}]: answer with groundingMetadata

    @property
    def image_hashes(self) -> list[str]:
        return [image.sha256 for image in self.images]


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def decode_base64(text: str, where: str) -> bytes:
    cleaned = text.strip().translate(str.maketrans("-_", "+/"))
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for \"{text[:20]}\""
        ) from None


def parse_request(body: bytes) -> ModelRequest:
    """Read a generateContent (or countTokens) JSON body; raise BadRequest when Google would."""
    if len(body) > MAX_REQUEST_BYTES:
        raise invalid_argument(
            f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."
        )
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument("Invalid JSON payload received. Unexpected token.") from None
    return parse_payload(payload)


def parse_payload(payload: Any) -> ModelRequest:
    """A decoded generateContent request (also one inlined request of a batch)."""
    if not isinstance(payload, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    inner = _get(payload, "generateContentRequest", "generate_content_request")
    if isinstance(inner, dict):  # countTokens may wrap a whole generateContent request
        payload = inner
    request = ModelRequest()
    contents = payload.get("contents")
    if not contents or not isinstance(contents, list):
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        _read_parts(content, f"contents[{i}]", request, request.texts)
    system = _get(payload, "systemInstruction", "system_instruction")
    if isinstance(system, dict):
        _read_parts(system, "system_instruction", request, request.system_texts)
    config = _get(payload, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise invalid_argument("Invalid value at 'generation_config': expected an object")
    _read_config(config, request)
    tools = payload.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_argument("Invalid value at 'tools': expected a list")
    for tool in tools:
        if isinstance(tool, dict) and _get(tool, "googleSearch", "google_search") is not None:
            request.google_search = True
    if request.google_search and request.response_mime_type == "application/json":
        raise invalid_argument(
            "Tool use with a response mime type: 'application/json' is unsupported"
        )  # Gemini 2.x's answer; 3.x accepts some pairs
    return request


def _read_parts(content: Any, where: str, request: ModelRequest, texts: list[str]) -> None:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(
            f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
        )
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise invalid_argument(f"Invalid value at '{where}.parts[{j}]': expected an object")
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
            continue
        inline = _get(part, "inlineData", "inline_data")
        if isinstance(inline, dict):
            place = f"{where}.parts[{j}].inline_data.data"
            data = decode_base64(str(inline.get("data", "")), place)
            mime = str(_get(inline, "mimeType", "mime_type") or "")
            if not mime:
                raise invalid_argument(
                    f"* GenerateContentRequest.{where}.parts[{j}].inline_data"
                    ".mime_type: mime_type is not specified"
                )
            digest = hashlib.sha256(data).hexdigest()
            own = _get(part, "mediaResolution", "media_resolution")
            level = own.get("level") if isinstance(own, dict) else own
            request.images.append(InlineImage(mime, data, digest, level or None))


def _read_config(config: dict[str, Any], request: ModelRequest) -> None:
    request.response_mime_type = _get(config, "responseMimeType", "response_mime_type")
    schema = _get(config, "responseJsonSchema", "response_json_schema")
    if schema is None:
        schema = _get(config, "responseSchema", "response_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise invalid_argument("Invalid value at 'generation_config.response_schema'")
        if request.response_mime_type not in ("application/json", "text/x.enum"):
            raise invalid_argument(
                "* GenerateContentRequest.generation_config.response_schema:"
                " only supported with response_mime_type "
                "'application/json' or 'text/x.enum'."
            )
        request.response_schema = schema
    temperature = config.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 2
    ):
        raise invalid_argument(
            "* GenerateContentRequest.generation_config.temperature: "
            "must be in the range [0.0, 2.0]"
        )
    limit = _get(config, "maxOutputTokens", "max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise invalid_argument(
                "* GenerateContentRequest.generation_config.max_output_tokens:"
                " must be a positive integer"
            )
        request.max_output_tokens = limit
    request.media_resolution = _get(config, "mediaResolution", "media_resolution")
    thinking = _get(config, "thinkingConfig", "thinking_config")
    if isinstance(thinking, dict):
        request.thinking_level = _get(thinking, "thinkingLevel", "thinking_level")


def usage_details(
    model: str, request: ModelRequest, sizes: list[tuple[int, int] | None]
) -> dict[str, int]:
    """Prompt tokens by modality, by `model`'s rule in `dealscout_cli.tokens` (Gemini 3: a
    fixed budget per image by its part's or the request's media resolution, HIGH by default;
    Gemini 2.x: tiles)."""
    rule = rule_for(model)
    text = sum(rule.text_tokens(t) for t in request.texts + request.system_texts)
    image = 0
    for part, size in zip(request.images, sizes, strict=True):
        # A non-image inline part (e.g. PDF page) is billed like one image of unknown size.
        image += (
            rule.image_tokens(*size, request.media_resolution, part.media_resolution)
            if size
            else rule.unsized_image_tokens(part.media_resolution or request.media_resolution)
        )
    details = {"TEXT": text}
    if request.images:
        details["IMAGE"] = image
    return details


def thought_tokens(model: str, request: ModelRequest, seed: int) -> int:
    """Thought tokens of one answer: 0 for a family that does not think by default; on
    Gemini 3, drawn (seeded by the request, so a rerun bills the same) around the level's
    expected count in `tokens.THINKING_TOKENS`, uniformly within `tokens.THINKING_SPREAD`."""
    expected = rule_for(model).thought_tokens(request.thinking_level)
    if expected == 0:
        return 0
    key = "|".join([str(seed), model, *request.texts, *request.image_hashes])
    draw = random.Random(hashlib.sha256(key.encode()).hexdigest()).uniform(
        1 - THINKING_SPREAD, 1 + THINKING_SPREAD
    )
    return max(1, round(expected * draw))


def modality_list(details: dict[str, int]) -> list[dict[str, Any]]:
    return [{"modality": modality, "tokenCount": count} for modality, count in details.items()]
