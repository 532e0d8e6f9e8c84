"""Gemini through google-genai's async client.

SDK traps handled here (google-genai 3.x):
- it imports slowly (~1 s), so it is imported when a provider is built, never
  for `--help` or `status`;
- its default timeout is none: we always pass one (HttpOptions.timeout is in ms);
- it switches to aiohttp when that is importable: we hand it our own httpx client;
- it does no retries unless told, and ignores RetryInfo on 429: we retry in
  `pipeline`, reading `retryDelay` from the error details here;
- `response.parsed` is silently None on bad JSON: we validate `response.text`
  ourselves in `pipeline`;
- `generate_content` rebuilds the whole request through its types on every call (~2-3 ms
  of CPU): `_send` has the SDK build the fixed part once per request shape and sends with
  the SDK's own API client. That leans on private names (`_api_client`,
  `models._GenerateContentParameters_to_mldev`, `_from_response`); tests/test_gemini.py
  compares the body with `generate_content`'s, so an SDK upgrade that moves them fails there.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import re
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from pydantic import BaseModel

from dealscout_cli.config import NO_API_KEY
from dealscout_cli.errors import (
    BadResponse,
    Blocked,
    KeyRejected,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    QuotaExhausted,
    RateLimited,
    UsageError,
)
from dealscout_cli.providers.base import BatchStatus, ModelReply, ModelRequest

if TYPE_CHECKING:  # the SDK itself is imported when a provider is built (see above)
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

_DELAY = re.compile(r"^\s*([0-9.]+)s\s*$")


class GeminiProvider:
    """The real client. `base_url` points it at the emulator or a proxy."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 64,
    ) -> None:
        if not api_key:
            raise UsageError(NO_API_KEY)
        from google import genai
        from google.genai import types

        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        options = types.HttpOptions(
            base_url=base_url, timeout=int(timeout * 1000), httpx_async_client=self._http
        )
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._key = api_key
        self._timeout = timeout
        self._bodies: dict[ModelRequest, dict[str, object]] = {}  # `_fixed_body` by shape
        # The fast path leans on the SDK's private names; an SDK without them (a later
        # release may move them) gets the public `generate_content`, slower but the same.
        self.fast_path = _sdk_has_fast_path(self._client)

    async def generate(self, request: ModelRequest) -> ModelReply:
        from google.genai import errors as genai_errors

        try:
            # httpx's timeout is per read: a server trickling bytes would never trip it.
            with anyio.fail_after(self._timeout):
                response = await self._send(request)
        except TimeoutError:
            raise ProviderTimeout(
                f"{request.model}: no full answer within {self._timeout:g} s"
            ) from None
        except genai_errors.APIError as exc:
            raise self._translate(exc, request.model) from None
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(
                f"{request.model}: no answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise ProviderError(
                f"{request.model}: connection failed ({type(exc).__name__}: {self._scrub(str(exc))})",
                retryable=True,
            ) from None
        except Exception as exc:  # the SDK could not read the answer: whatever it raised
            raise self._unreadable(exc, request.model) from None
        try:
            return self._reply(response, request.model)
        except ProviderError:
            raise
        except Exception as exc:  # a 200 whose shape is not a GenerateContentResponse
            raise self._unreadable(exc, request.model) from None

    async def _send(self, request: ModelRequest) -> types.GenerateContentResponse:
        """`models.generate_content` without its per-call request building.

        The SDK converts the whole request (config and image bytes included) through its
        pydantic types on every call: ~2 ms of CPU a call, as much as the HTTP round trip.
        The part that is the same for every item (system text, generation config, tools,
        the model's path) is converted by the SDK's own code once per request shape
        (`_fixed_body`); only the contents, a list of text and base64 parts, are written
        here, in the SDK's wire form. The SDK's API client still sends it (base URL, key,
        headers, timeout) and raises its `APIError`s; its response types still read the
        answer."""
        from google.genai import models, types

        if not self.fast_path:
            return await self._client.aio.models.generate_content(
                model=request.model, contents=self._contents(request), config=self._config(request)
            )
        shape = _shape(request)
        fixed = self._bodies.get(shape)
        if fixed is None:
            fixed = self._bodies[shape] = self._fixed_body(shape)
        body: dict[str, object] = {"contents": _wire_contents(request), **fixed}
        path = f"{body.pop('_url')}:generateContent"
        answer = await self._client.aio._api_client.async_request("post", path, body)
        raw = json.loads(answer.body) if answer.body else {}
        return types.GenerateContentResponse._from_response(
            response=models._GenerateContentResponse_from_mldev(raw), kwargs={}
        )

    def _fixed_body(self, shape: ModelRequest) -> dict[str, object]:
        """Everything in a request's JSON but its contents, as the SDK writes it."""
        from google.genai import _common, models, types

        api = self._client.aio._api_client
        params = types._GenerateContentParameters(
            model=shape.model, contents="-", config=self._config(shape)
        )
        body = models._GenerateContentParameters_to_mldev(api, params, None, params)
        body.pop("config", None)
        body.pop("contents", None)
        body["_url"] = body["_url"]["model"]
        return dict(_common.encode_unserializable_types(_common.convert_to_dict(body)))

    def _unreadable(self, exc: Exception, model: str) -> BadResponse:
        """Anything else the network sends (an HTML page with 200, a truncated body, another
        API's JSON) is one defined kind of failure for this call, never a crash of the run."""
        what = self._scrub(str(exc)).replace("\n", " ")[:160]
        return BadResponse(
            f"{model}: the answer is not the Gemini API's ({type(exc).__name__}: {what}); "
            "a proxy or captive portal may be in the way, or --base-url points elsewhere"
        )

    def _config(self, request: ModelRequest) -> types.GenerateContentConfig:
        from google.genai import types

        # Gemini 3 settings, only when the request carries them (`config.stage_options` sets
        # them for Gemini 3 models alone: Gemini 2.x requests go out as they always did).
        gemini_3: dict[str, Any] = {}
        if request.media_resolution:
            gemini_3["media_resolution"] = types.MediaResolution(
                "MEDIA_RESOLUTION_" + request.media_resolution.upper()
            )
        if request.thinking_level:
            gemini_3["thinking_config"] = types.ThinkingConfig(
                thinking_level=types.ThinkingLevel(request.thinking_level.upper())
            )
        if request.grounded:
            # Search grounding and JSON mode do not mix on most models: the prompt asks for
            # JSON and `pipeline` validates the text (code fences stripped) itself.
            return types.GenerateContentConfig(
                system_instruction=request.system,
                tools=[types.Tool(google_search=types.GoogleSearch())],
                temperature=request.temperature,
                max_output_tokens=request.max_output_tokens,
                **gemini_3,
            )
        return types.GenerateContentConfig(
            system_instruction=request.system,
            response_mime_type="application/json",
            # A JSON Schema dict, built once: given the pydantic class itself, the SDK rebuilds
            # and converts its schema on every call (~8 ms of CPU each, a quarter of our
            # per-item overhead on a fast link). responseJsonSchema takes $defs/$ref as they are.
            response_json_schema=_json_schema(request.schema),
            temperature=request.temperature,
            max_output_tokens=request.max_output_tokens,
            **gemini_3,
        )

    # ------------------------------------------------------------ Batch Mode

    async def batch_submit(
        self, model: str, requests: list[ModelRequest], display_name: str
    ) -> str:
        """Send `requests` as one inlined batch job; returns its name (`batches/...`)."""
        from google.genai import errors as genai_errors
        from google.genai import types

        src = [
            types.InlinedRequest(
                contents=self._contents(request),
                config=self._config(request),
                metadata={"index": str(i)},
            )
            for i, request in enumerate(requests)
        ]
        try:
            with anyio.fail_after(self._timeout):
                job = await self._client.aio.batches.create(
                    model=model, src=src, config={"display_name": display_name}
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"{model}: batch not accepted within {self._timeout:g} s"
            ) from None
        except genai_errors.APIError as exc:
            raise self._translate(exc, model) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"{model}: batch submission failed ({type(exc).__name__})", retryable=True
            ) from None
        except Exception as exc:  # an answer the SDK cannot read (a portal's page)
            raise self._unreadable(exc, model) from None
        if not job.name:
            raise ProviderError(f"{model}: the batch was accepted without a name", retryable=True)
        return job.name

    async def batch_get(self, name: str, model: str) -> BatchStatus:
        """Poll one batch job; once it succeeded, each inlined response as a reply or an error."""
        from google.genai import errors as genai_errors

        try:
            with anyio.fail_after(self._timeout):
                job = await self._client.aio.batches.get(name=name)
        except TimeoutError:
            raise ProviderTimeout(f"{name}: no status within {self._timeout:g} s") from None
        except genai_errors.APIError as exc:
            if getattr(exc, "code", None) == 404:  # not "model not found": the batch is gone
                return BatchStatus(name, "lost", None, "the server no longer has this batch")
            raise self._translate(exc, model) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"{name}: polling failed ({type(exc).__name__})", retryable=True
            ) from None
        except Exception as exc:  # an answer the SDK cannot read (a portal's page)
            raise self._unreadable(exc, model) from None
        try:
            return self._batch_status(name, model, job)
        except ProviderError:
            raise
        except Exception as exc:  # a SUCCEEDED job whose shape is not the API's
            raise self._unreadable(exc, model) from None

    def _batch_status(self, name: str, model: str, job: types.BatchJob) -> BatchStatus:
        state = _batch_state(job.state)
        error = None
        if job.error is not None:
            error = f"{job.error.code}: {job.error.message}"
        if state != "succeeded":
            return BatchStatus(name, state, None, error)
        responses = list(job.dest.inlined_responses or []) if job.dest else []
        ordered: list[types.InlinedResponse | None] = [None] * len(responses)
        for position, inlined in enumerate(responses):  # metadata says which request; else order
            index = (inlined.metadata or {}).get("index")
            slot = int(index) if index is not None and index.isdigit() else position
            ordered[slot if slot < len(ordered) else position] = inlined
        results: list[ModelReply | Exception] = []
        for entry in ordered:
            if entry is None:
                results.append(ProviderError(f"{model}: batch returned no answer for this request"))
            elif entry.error is not None:
                code = int(entry.error.code or 0)
                results.append(
                    ProviderError(
                        f"{model}: {code} {self._scrub(entry.error.message or '')}".strip()[:300],
                        status=code or None,
                        retryable=code in (408, 429, 500, 502, 503, 504),
                    )
                )
            elif entry.response is None:
                results.append(ProviderError(f"{model}: batch returned an empty entry"))
            else:
                try:
                    results.append(self._reply(entry.response, model))
                except ProviderError as exc:
                    results.append(exc)
        return BatchStatus(name, state, tuple(results), error)

    def _contents(self, request: ModelRequest) -> list[types.Content]:
        """The images, then the prompt, as one user turn."""
        from google.genai import types

        parts: list[types.Part] = [
            types.Part.from_bytes(data=image.data, mime_type=image.mime_type)
            for image in request.images
        ]
        parts.append(types.Part.from_text(text=request.prompt))
        return [types.Content(role="user", parts=parts)]

    async def aclose(self) -> None:
        await self._http.aclose()
        self._client.close()

    # ------------------------------------------------------------------

    def _reply(self, response: types.GenerateContentResponse, model: str) -> ModelReply:
        usage = response.usage_metadata
        input_tokens = usage.prompt_token_count if usage else None
        # Gemini 3 bills its thinking as output: count it, or recorded costs come out low.
        output_tokens = (
            (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
            if usage
            else None
        )
        if not response.candidates and not response.prompt_feedback and not usage:
            # A 200 with JSON of some other shape (a proxy, another API): nothing says the
            # model blocked anything, so it is not a (final) block but an unreadable answer.
            raise BadResponse(
                f"{model}: the answer is not the Gemini API's (a 200 with no candidates, no "
                "promptFeedback and no usageMetadata); a proxy or --base-url may point elsewhere"
            )
        if not response.candidates:
            feedback = response.prompt_feedback
            reason = getattr(feedback, "block_reason", None) if feedback else None
            raise Blocked(
                f"{model}: the model returned no answer (blocked: {reason or 'no reason given'})"
            )
        candidate = response.candidates[0]
        finish = str(candidate.finish_reason.value) if candidate.finish_reason else None
        if finish in ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"):
            raise Blocked(f"{model}: answer withheld by the model (finish reason {finish})")
        text = response.text or ""
        uris: list[str] = []
        grounding = candidate.grounding_metadata
        for chunk in (grounding.grounding_chunks or []) if grounding else []:
            if chunk.web is not None and chunk.web.uri and chunk.web.uri not in uris:
                uris.append(chunk.web.uri)
        queries = {q for q in (grounding.web_search_queries or []) if q} if grounding else set()
        return ModelReply(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model_version=response.model_version,
            finish_reason=finish,
            grounding_uris=tuple(uris),
            search_queries=len(queries),
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "[api key]") if self._key else text

    def _translate(self, exc: genai_errors.APIError, model: str) -> ProviderError:
        code = int(getattr(exc, "code", 0) or 0)
        status = getattr(exc, "status", None) or ""
        message = self._scrub(str(getattr(exc, "message", "") or ""))[:300]
        details = _details(exc)
        if code == 429:
            retry_after = _retry_delay(details)
            if _is_daily_quota(details):
                return QuotaExhausted(
                    f"{model}: daily quota exhausted ({message}); resume after the quota resets",
                    retry_after=retry_after,
                )
            return RateLimited(f"{model}: rate limited (429 {status})", retry_after=retry_after)
        if code in (400, 403) and _reason(details) in ("API_KEY_INVALID", "API_KEY_MISSING"):
            return KeyRejected(
                f"the API key was rejected ({code} {status}); check GEMINI_API_KEY / GOOGLE_API_KEY",
                status=code,
            )
        if code == 404:
            return ModelNotFound(
                f"model {model} not found (404); choose another with --vision-model/--pricing-model"
            )
        retryable = code in (408, 500, 502, 503, 504)
        return ProviderError(
            f"{model}: {code} {status} {message}".strip(), status=code, retryable=retryable
        )


def _sdk_has_fast_path(client: genai.Client) -> bool:
    """Whether this google-genai has the private names `GeminiProvider._send` uses."""
    from google.genai import _common, models, types

    api = getattr(client.aio, "_api_client", None)
    return (
        callable(getattr(api, "async_request", None))
        and hasattr(models, "_GenerateContentParameters_to_mldev")
        and hasattr(models, "_GenerateContentResponse_from_mldev")
        and hasattr(types, "_GenerateContentParameters")
        and hasattr(types.GenerateContentResponse, "_from_response")
        and hasattr(_common, "encode_unserializable_types")
        and hasattr(_common, "convert_to_dict")
    )


def _shape(request: ModelRequest) -> ModelRequest:
    """The request without what changes per item: the key of `GeminiProvider._bodies`.
    A run has a few shapes (identify, price, per model)."""
    return dataclasses.replace(request, prompt="", images=())


def _wire_contents(request: ModelRequest) -> list[dict[str, object]]:
    """`_contents` as the SDK puts it on the wire (bytes as URL-safe base64)."""
    parts: list[dict[str, object]] = [
        {
            "inlineData": {
                "data": base64.urlsafe_b64encode(image.data).decode("ascii"),
                "mime_type": image.mime_type,
            }
        }
        for image in request.images
    ]
    parts.append({"text": request.prompt})
    return [{"parts": parts, "role": "user"}]


@functools.cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _details(exc: genai_errors.APIError) -> list[dict[str, Any]]:
    body = getattr(exc, "details", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        found = error.get("details") if isinstance(error, dict) else None
        if isinstance(found, list):
            return [d for d in found if isinstance(d, dict)]
    return []


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _is_daily_quota(details: list[dict[str, Any]]) -> bool:
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations", []):
                quota_id = str(violation.get("quotaId", "")) + str(violation.get("quotaMetric", ""))
                if "PerDay" in quota_id or "per_day" in quota_id.lower():
                    return True
    return False


def _reason(details: list[dict[str, Any]]) -> str | None:
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail.get("reason")
    return None


def _batch_state(state: types.JobState | None) -> str:
    """JOB_STATE_SUCCEEDED / BATCH_STATE_SUCCEEDED -> "succeeded"."""
    text = str(getattr(state, "value", state) or "JOB_STATE_UNSPECIFIED")
    short = text.removeprefix("JOB_STATE_").removeprefix("BATCH_STATE_").lower()
    return {"queued": "pending", "unspecified": "pending", "paused": "pending"}.get(short, short)
