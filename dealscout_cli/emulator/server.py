"""The HTTP side: a raw ASGI app speaking Gemini's REST API, and the uvicorn runners.

Routes:
    POST /{v1,v1beta,v1alpha}/models/{model}:generateContent
    POST /{v1,v1beta,v1alpha}/models/{model}:countTokens
    POST /{v1,v1beta,v1alpha}/models/{model}:batchGenerateContent   inlined requests only
    GET  /{v1,v1beta,v1alpha}/batches/{id}   PENDING, then SUCCEEDED with inlined responses
                                             `batch_seconds` after creation
    GET  /_emulator/stats       the StatsSnapshot as JSON
    POST /_emulator/reset       clear stats and quota windows, re-seed the faults

A generateContent request goes: key check → body check → arrival counted →
inside a 429 storm? → injected error? → quota (per day, per minute, tokens per
minute) → latency → answer, possibly spoiled (safety block, MAX_TOKENS,
malformed) → delivered, possibly dropped half-way or trickled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import answers
from .catalogue import ImageFacts, image_facts
from .config import INJECTABLE_STATUSES, EmulatorConfig
from .quota import Denial, ModelQuota
from .stats import StatsRecorder, StatsSnapshot
from .wire import (
    TROUBLESHOOTING,
    BadRequest,
    ModelRequest,
    error_body,
    invalid_argument,
    modality_list,
    parse_payload,
    parse_request,
    thought_tokens,
    usage_details,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Clock = Callable[[], float]

JSON_HEADERS = [(b"content-type", b"application/json; charset=UTF-8")]
API_VERSIONS = ("v1", "v1beta", "v1alpha")
RATE_LIMIT_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
INJECTED_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    500: f"An internal error has occurred. Please retry or report in {TROUBLESHOOTING}",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


class EmulatorApp:
    """The ASGI application. `clock` is injectable so tests move time instead of sleeping."""

    def __init__(self, config: EmulatorConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.stats = StatsRecorder(config.window_seconds)
        self._configs: dict[str, EmulatorConfig] = {}
        self._batches: dict[str, Batch] = {}  # jobs outlive reset(), like Google's
        self.reset()

    def reset(self) -> None:
        """Forget stats and quota windows, and replay the same fault sequence from the start."""
        self.stats.reset()
        self._quotas: dict[str, ModelQuota] = {}
        self._faults = random.Random(self.config.seed)
        self._served = 0
        self._started = self.clock()  # the origin of `EmulatorConfig.storm`

    def config_for(self, model: str) -> EmulatorConfig:
        config = self._configs.get(model)
        if config is None:
            config = self._configs[model] = self.config.for_model(model)
        return config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_emulator/"):
            await self.admin(method, path, send)
            return
        version, _, rest = path.lstrip("/").partition("/")
        if version in API_VERSIONS and rest.startswith("batches/"):
            await self.batch_get(method, rest, scope, receive, send)
            return
        model, _, action = rest.removeprefix("models/").partition(":")
        if version not in API_VERSIONS or not rest.startswith("models/") or not model:
            await respond(send, 404, error_body(404, "NOT_FOUND", f"Unknown path {path}", []))
            return
        if method != "POST" or action not in (
            "generateContent",
            "countTokens",
            "batchGenerateContent",
        ):
            await respond(
                send,
                404,
                error_body(
                    404,
                    "NOT_FOUND",
                    f"Method {action or '(none)'} on models/{model} is not found "
                    f"for API version {version}, or is not supported.",
                    [],
                ),
            )
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        if action == "batchGenerateContent":
            await self.batch_create(model, scope, body, send)
            return
        try:
            self.check_key(scope)
            self.check_model(model, version, action)
            request = parse_request(body)
            facts = self.look_at(request)
        except BadRequest as problem:
            if action == "generateContent":
                self.stats.status(model, problem.code)
            await respond(send, problem.code, problem.body)
            return
        if action == "countTokens":
            await self.count_tokens(model, request, facts, send)
        else:
            await self.generate(model, request, facts, send, receive)

    async def admin(self, method: str, path: str, send: Send) -> None:
        if path == "/_emulator/stats" and method == "GET":
            await respond(send, 200, self.stats.snapshot().to_dict())
        elif path == "/_emulator/reset" and method == "POST":
            self.reset()
            await respond(send, 200, {})
        else:
            await respond(send, 404, error_body(404, "NOT_FOUND", f"Unknown path {path}", []))

    def check_model(self, model: str, version: str, action: str) -> None:
        """With `EmulatorConfig.models` set, an unknown model name is a 404, worded as Google's."""
        known = self.config.models
        if known is not None and model not in known:
            raise BadRequest(
                404,
                "NOT_FOUND",
                f"models/{model} is not found for API version {version}, or is "
                f"not supported for {action}. Call ListModels to see the list of available "
                "models and their supported methods.",
            )

    def check_key(self, scope: Scope) -> None:
        key = None
        for name, value in scope["headers"]:
            if name == b"x-goog-api-key":
                key = value.decode("latin-1")
                break
        if key is None and scope.get("query_string"):
            from urllib.parse import parse_qs

            key = (parse_qs(scope["query_string"].decode("latin-1")).get("key") or [None])[0]
        if not key:
            raise BadRequest(
                403,
                "PERMISSION_DENIED",
                (
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to call "
                    "this API."
                ),
                [api_key_error("API_KEY_MISSING")],
            )
        if self.config.api_key is not None and key != self.config.api_key:
            raise BadRequest(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [api_key_error("API_KEY_INVALID")],
            )

    def look_at(self, request: ModelRequest) -> list[ImageFacts | None]:
        facts = []
        for i, image in enumerate(request.images):
            seen = image_facts(image.data, image.sha256)
            if seen is None and image.mime_type.startswith("image/"):
                raise invalid_argument(
                    f"Unable to process input image (part {i}). Please retry or report in "
                    f"{TROUBLESHOOTING}"
                )
            facts.append(seen)
        return facts

    async def count_tokens(
        self, model: str, request: ModelRequest, facts: list[ImageFacts | None], send: Send
    ) -> None:
        self.stats.count_tokens_call()
        details = usage_details(model, request, [_size(f) for f in facts])
        await respond(
            send,
            200,
            {"totalTokens": sum(details.values()), "promptTokensDetails": modality_list(details)},
        )

    async def generate(
        self,
        model: str,
        request: ModelRequest,
        facts: list[ImageFacts | None],
        send: Send,
        receive: Receive,
    ) -> None:
        config = self.config_for(model)
        now = self.clock()
        self.stats.arrival(model, now, request.image_hashes, "\n".join(request.texts))
        draws = self.draw_faults(config)
        details = usage_details(model, request, [_size(f) for f in facts])
        prompt_tokens = sum(details.values())

        storm = self.storm_left(config, now)
        if storm > 0:
            self.stats.fault("storm")
            self.stats.rate_limited("rpm")
            self.stats.status(model, 429)
            until_calm = Denial("rpm", config.rpm or 0, max(1, math.ceil(storm)))
            await respond(send, 429, quota_error(until_calm, model))
            return
        injected = pick_status(config.error_rates, draws["error"])
        if injected is None:
            quota = self._quotas.get(model)
            if quota is None:
                quota = self._quotas[model] = ModelQuota(config)
            denial = quota.check(config, now, prompt_tokens)
            if denial is not None:
                self.stats.rate_limited(denial.kind)
                self.stats.status(model, 429)
                await respond(send, 429, quota_error(denial, model))
                return
        if draws["latency"] > 0:
            await asyncio.sleep(draws["latency"])
        if injected is not None:
            self.stats.fault(f"injected_{injected}")
            self.stats.status(model, injected)
            await respond(send, injected, injected_error(injected, model, config))
            return
        payload = self.answer_payload(model, request, facts, details, config, draws)
        await self.deliver(model, payload, config, draws, send, receive)

    def storm_left(self, config: EmulatorConfig, now: float) -> float:
        """Seconds until the 429 storm ends, when `now` is inside it; else 0."""
        if config.storm is None:
            return 0.0
        start, end = config.storm
        elapsed = now - self._started
        return end - elapsed if start <= elapsed < end else 0.0

    # ------------------------------------------------------------ Batch Mode

    async def batch_create(self, model: str, scope: Scope, body: bytes, send: Send) -> None:
        """Accept inlined requests; their answers are drawn now and revealed when the job is done."""
        try:
            self.check_key(scope)
            self.check_model(model, "v1beta", "batchGenerateContent")
            entries = _inlined_requests(body)
            parsed = []
            for i, entry in enumerate(entries):
                try:
                    request = parse_payload(entry.get("request"))
                    parsed.append((entry.get("metadata"), request, self.look_at(request)))
                except BadRequest as problem:
                    raise invalid_argument(f"batch.input_config.requests[{i}]: {problem}") from None
        except BadRequest as problem:
            await respond(send, problem.code, problem.body)
            return
        config = self.config_for(model)
        outputs = [
            self.batch_answer(model, metadata, request, facts, config)
            for metadata, request, facts in parsed
        ]
        self.stats.batch_created(
            model, len(parsed), [h for _, request, _ in parsed for h in request.image_hashes]
        )
        batch_id = hashlib.sha256(f"{config.seed}:batch:{len(self._batches)}".encode()).hexdigest()[
            :16
        ]
        display = (_json_object(body).get("batch") or {}).get("displayName") or batch_id
        batch = Batch(
            f"batches/{batch_id}", model, str(display), self.clock(), time.time(), outputs
        )
        self._batches[batch_id] = batch
        await respond(send, 200, self.batch_body(batch, fresh=True))

    def batch_answer(
        self,
        model: str,
        metadata: Any,
        request: ModelRequest,
        facts: list[ImageFacts | None],
        config: EmulatorConfig,
    ) -> dict[str, Any]:
        """One inlined response: a GenerateContentResponse, or a per-request error status."""
        draws = self.draw_faults(config)
        out: dict[str, Any] = {"metadata": metadata} if metadata else {}
        injected = pick_status(config.error_rates, draws["error"])
        if injected is not None:
            self.stats.fault(f"injected_{injected}")
            message = INJECTED_MESSAGES.get(injected, RATE_LIMIT_MESSAGE)
            return {**out, "error": {"code": injected, "message": message}}
        details = usage_details(model, request, [_size(f) for f in facts])
        return {
            **out,
            "response": self.answer_payload(model, request, facts, details, config, draws),
        }

    async def batch_get(
        self, method: str, rest: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        await read_body(receive)
        batch_id = rest.removeprefix("batches/")
        try:
            self.check_key(scope)
        except BadRequest as problem:
            await respond(send, problem.code, problem.body)
            return
        batch = self._batches.get(batch_id)
        if method != "GET" or batch is None:
            await respond(
                send,
                404,
                error_body(
                    404, "NOT_FOUND", f"Requested entity was not found: batches/{batch_id}", []
                ),
            )
            return
        self.stats.batch_polled()
        await respond(send, 200, self.batch_body(batch))

    def batch_body(self, batch: Batch, *, fresh: bool = False) -> dict[str, Any]:
        """The long-running operation Google returns for create and get (GenerateContentBatch)."""
        elapsed = self.clock() - batch.created
        done = not fresh and elapsed >= self.config_for(batch.model).batch_seconds
        failed = sum("error" in o for o in batch.outputs)
        stamp = _rfc3339(batch.wall)
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "model": f"models/{batch.model}",
            "displayName": batch.display_name,
            "name": batch.name,
            "createTime": stamp,
            "updateTime": _rfc3339(time.time()),
            "batchStats": {
                "requestCount": str(len(batch.outputs)),
                "successfulRequestCount": str(len(batch.outputs) - failed) if done else "0",
                "failedRequestCount": str(failed) if done else "0",
                "pendingRequestCount": "0" if done else str(len(batch.outputs)),
            },
            "state": "BATCH_STATE_SUCCEEDED"
            if done
            else ("BATCH_STATE_PENDING" if fresh else "BATCH_STATE_RUNNING"),
        }
        body: dict[str, Any] = {"name": batch.name, "metadata": metadata, "done": done}
        if done:
            output = {"inlinedResponses": {"inlinedResponses": batch.outputs}}
            metadata["endTime"] = _rfc3339(batch.wall + elapsed)
            metadata["output"] = output
            body["response"] = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                "GenerateContentBatchOutput",
                **output,
            }
        return body

    def draw_faults(self, config: EmulatorConfig) -> dict[str, float]:
        """The same number of draws per request, so a seed replays the same fault sequence."""
        rng = self._faults
        self._served += 1
        error, output, transport, spread = rng.random(), rng.random(), rng.random(), rng.random()
        gauss = rng.gauss(0.0, 1.0)
        if config.latency_dist == "uniform":
            latency = config.latency * 2 * spread
        elif config.latency_dist == "lognormal":
            latency = config.latency * math.exp(config.latency_sigma * gauss)
        else:
            latency = config.latency
        return {"error": error, "output": output, "transport": transport, "latency": latency}

    def answer_payload(
        self,
        model: str,
        request: ModelRequest,
        facts: list[ImageFacts | None],
        details: dict[str, int],
        config: EmulatorConfig,
        draws: dict[str, float],
    ) -> dict[str, Any]:
        prompt_tokens = sum(details.values())
        base = {
            "modelVersion": model,
            "responseId": response_id(config.seed, self._served),
        }
        output = draws["output"]
        if output < config.safety_rate:
            self.stats.fault("safety")
            return {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS},
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "totalTokenCount": prompt_tokens,
                    "promptTokensDetails": modality_list(details),
                },
                **base,
            }
        subject = answers.subject_for(request, [f for f in facts if f is not None], config.seed)
        result = answers.answer(request, subject, config.group_truth)
        if output < config.safety_rate + config.max_tokens_rate:
            self.stats.fault("max_tokens")
            result = answers.truncated(result)
        elif output < config.safety_rate + config.max_tokens_rate + config.malformed_rate:
            self.stats.fault("malformed")
            result = answers.malformed(result)
        elif (
            output
            < config.safety_rate + config.max_tokens_rate + config.malformed_rate + config.odd_rate
        ):
            self.stats.fault("odd")
            result = answers.odd(result, subject.rng)
        # Gemini 3 thinks first and bills the thoughts as output (thoughtsTokenCount).
        thoughts = thought_tokens(model, request, config.seed)
        self.stats.answered(
            model, prompt_tokens, result.output_tokens + thoughts, request.image_hashes
        )
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": result.text}], "role": "model"},
            "finishReason": result.finish_reason,
            "index": 0,
        }
        if request.google_search:
            self.stats.grounded()
            candidate["groundingMetadata"] = answers.grounding_metadata(subject)
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": result.output_tokens,
                **({"thoughtsTokenCount": thoughts} if thoughts else {}),
                "totalTokenCount": prompt_tokens + result.output_tokens + thoughts,
                "promptTokensDetails": modality_list(details),
            },
            **base,
        }

    async def deliver(
        self,
        model: str,
        payload: dict[str, Any],
        config: EmulatorConfig,
        draws: dict[str, float],
        send: Send,
        receive: Receive,
    ) -> None:
        body = json.dumps(payload).encode()
        transport = draws["transport"]
        self.stats.status(model, 200)
        if transport < config.drop_rate:
            self.stats.fault("drop")
            await send_head(send, 200, len(body))
            await send(
                {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
            )
            return  # uvicorn closes the connection: the client sees a truncated body
        if transport < config.drop_rate + config.trickle_rate:
            self.stats.fault("trickle")
            await send_head(send, 200, len(body))
            await trickle(send, receive, body, config.trickle_seconds)
            return
        await respond_bytes(send, 200, body)


@dataclass
class Batch:
    name: str
    model: str
    display_name: str
    created: float  # the app's clock, which decides when it is done
    wall: float  # unix seconds, for createTime
    outputs: list[dict[str, Any]]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(payload, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    return payload


def _inlined_requests(body: bytes) -> list[dict[str, Any]]:
    """batch.inputConfig.requests.requests[] of a batchGenerateContent body."""
    batch = _json_object(body).get("batch")
    config = (
        batch.get("inputConfig", batch.get("input_config")) if isinstance(batch, dict) else None
    )
    holder = config.get("requests") if isinstance(config, dict) else None
    entries = holder.get("requests") if isinstance(holder, dict) else None
    if isinstance(config, dict) and ("fileName" in config or "file_name" in config):
        raise invalid_argument("The emulator supports inlined batch requests only, not files.")
    if not isinstance(entries, list) or not entries:
        raise invalid_argument(
            "* BatchGenerateContentRequest.batch.input_config: requests is not specified"
        )
    if not all(isinstance(e, dict) for e in entries):
        raise invalid_argument("Invalid value at 'batch.input_config.requests.requests'")
    return entries


def _rfc3339(unix: float) -> str:
    from datetime import UTC, datetime

    return (
        datetime.fromtimestamp(unix, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
]


def _size(facts: ImageFacts | None) -> tuple[int, int] | None:
    return (facts.width, facts.height) if facts else None


def pick_status(rates: Any, draw: float) -> int | None:
    edge = 0.0
    for status, rate in rates.items():
        edge += rate
        if draw < edge:
            return int(status)
    return None


def response_id(seed: int, served: int) -> str:
    digest = hashlib.sha256(f"{seed}:{served}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:17]).decode().rstrip("=")


def api_key_error(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def quota_error(denial: Denial, model: str) -> dict[str, Any]:
    return error_body(
        429,
        "RESOURCE_EXHAUSTED",
        RATE_LIMIT_MESSAGE,
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": denial.quota_metric,
                        "quotaId": denial.quota_id,
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": f"{denial.limit:g}",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{denial.retry_after}s",
            },
        ],
    )


def injected_error(status: int, model: str, config: EmulatorConfig) -> dict[str, Any]:
    if status == 429:
        return quota_error(Denial("rpm", config.rpm or 0, config.injected_retry_delay), model)
    return error_body(status, INJECTABLE_STATUSES[status], INJECTED_MESSAGES[status], [])


async def trickle(
    send: Send, receive: Receive, body: bytes, seconds: float, pieces: int = 20
) -> None:
    """Send `body` in `pieces` parts spread over `seconds`; stop if the client hangs up."""
    gone = asyncio.ensure_future(receive())  # completes with http.disconnect
    try:
        step = max(1, math.ceil(len(body) / pieces))
        for start in range(0, len(body), step):
            await asyncio.sleep(seconds / pieces)
            if gone.done():
                return
            await send(
                {
                    "type": "http.response.body",
                    "body": body[start : start + step],
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()


async def read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_head(send: Send, status: int, length: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(length).encode())],
        }
    )


async def respond_bytes(send: Send, status: int, body: bytes) -> None:
    await send_head(send, status, len(body))
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    await respond_bytes(send, status, json.dumps(payload).encode())


class _QuietDrops(logging.Filter):
    """Drops are deliberate; keep uvicorn from logging each one as an application error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


_QUIET = _QuietDrops()


def _uvicorn_server(app: EmulatorApp, log_level: str = "warning") -> Any:
    import uvicorn

    class QuickServer(uvicorn.Server):
        """uvicorn polls for exit every 0.1 s and naps 0.1 s on shutdown; tests start
        dozens of emulators, so wake on request and poll connections finely instead."""

        _loop: asyncio.AbstractEventLoop | None = None
        _wake: asyncio.Event | None = None

        async def main_loop(self) -> None:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                counter += 10  # on_tick refreshes the Date header when counter % 10 == 0

        def request_exit(self) -> None:
            self.should_exit = True
            if self._loop is not None and self._wake is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    self._loop.call_soon_threadsafe(self._wake.set)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            # uvicorn types it optional; _uvicorn_server always sets it (1 s).
            deadline = time.monotonic() + (self.config.timeout_graceful_shutdown or 0)
            while (
                self.server_state.connections or self.server_state.tasks
            ) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            for task in self.server_state.tasks:
                task.cancel()
            for server in self.servers:
                await server.wait_closed()

    logging.getLogger("uvicorn.error").addFilter(_QUIET)  # idempotent for the same filter
    config = uvicorn.Config(
        app,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
        backlog=4096,
    )
    return QuickServer(config)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Emulator:
    """The emulator on a background thread: `with Emulator(cfg) as emu: emu.url ...`."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self.port = port
        self.app = EmulatorApp(self.config, clock)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL for google-genai's `HttpOptions(base_url=...)`."""
        if self._socket is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def start(self) -> Emulator:
        """Listen and serve in a daemon thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        self._server = _uvicorn_server(self.app)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"gemini-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start on {self.host}:{self.port}")
            time.sleep(0.001)
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (safe to call twice)."""
        if self._server is not None:
            self._server.request_exit()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def stats(self) -> StatsSnapshot:
        return self.app.stats.snapshot()

    def reset(self) -> None:
        self.app.reset()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8089,
    *,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until Ctrl-C (what `dealscout emulator` runs). OSError when the
    address cannot be bound; `on_ready(url)` once it is (port 0 picks a free port)."""
    app = EmulatorApp(config or EmulatorConfig())
    sock = _bind(host, port)
    if on_ready is not None:
        bound = sock.getsockname()[1]
        on_ready(f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}")
    try:
        _uvicorn_server(app, log_level).run(sockets=[sock])
    finally:
        sock.close()
