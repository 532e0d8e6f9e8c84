"""The Protocol every model provider meets, and the values that cross it.

A provider sends one request (a system text, a prompt, some images, a response
schema) and returns the model's JSON text with its token usage, or raises one
of the `ProviderError` classes in `dealscout_cli.errors`. It does no retries
and no rate limiting: those belong to `limits` and `pipeline`, so every attempt
is seen and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel


@dataclass(frozen=True)
class ImagePart:
    data: bytes
    mime_type: str = "image/jpeg"
    width: int = 0  # known sizes let the limiter estimate tokens before sending
    height: int = 0


@dataclass(frozen=True)
class ModelRequest:
    model: str
    system: str
    prompt: str
    schema: type[BaseModel]
    images: tuple[ImagePart, ...] = ()
    temperature: float = 0.2
    max_output_tokens: int = 2048
    grounded: bool = False  # add the Google Search tool; the answer is then JSON in plain text
    # Gemini 3 only (None: not sent, the server's default): "low"/"medium"/"high" for images,
    # "minimal".."high" for thinking (billed as output). See `tokens`.
    media_resolution: str | None = None
    thinking_level: str | None = None


@dataclass(frozen=True)
class ModelReply:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    http_status: int = 200
    model_version: str | None = None
    finish_reason: str | None = None
    grounding_uris: tuple[str, ...] = ()  # web sources a grounded answer used
    search_queries: int = 0  # distinct non-empty web searches it ran (Gemini 3 bills each)


class Provider(Protocol):
    """What a model backend must do. Errors are `ProviderError` subclasses."""

    async def generate(self, request: ModelRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------- Batch Mode

# "lost": the server no longer knows the batch (deleted, or past its retention); its
# items go back to the queue like a failed batch's.
BATCH_DONE_STATES = ("succeeded", "failed", "cancelled", "expired", "lost")


@dataclass(frozen=True)
class BatchStatus:
    """A batch job as last polled. `results` (one per request, in order) once it succeeded:
    a ModelReply, or the ProviderError that request ended with."""

    name: str
    state: str  # pending, running, succeeded, failed, cancelled, expired, lost
    results: tuple[ModelReply | Exception, ...] | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in BATCH_DONE_STATES
