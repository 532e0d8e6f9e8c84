"""One item from photos to listing: prepare images, identify, price.

`Pipeline.process(item, checkpoints)` owns an item's attempt. The stages are
checkpoints: a finished identification is saved (`Checkpoints`) before pricing starts,
so a pricing failure never pays for identification again. The local store keeps the
checkpoints on one machine (`jobs.StoreCheckpoints`), Redis on a Celery worker
(`distributed.tasks`). Every model call attempt is handed to `record_call` (tokens,
latency, status, cost), the failed ones included. Retries of one call happen here, by
`retry.RetryPolicy`; what to do with an item whose calls all failed is `jobs.outcome_of`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
from pydantic import BaseModel, ValidationError

from dealscout_cli import prompts
from dealscout_cli.barcodes import Barcode, prepare_and_read, product_codes
from dealscout_cli.config import (
    DEFAULT_IDENTIFY_THINKING,
    DEFAULT_MEDIA_RESOLUTION,
    DEFAULT_PRICE_THINKING,
    stage_options,
)
from dealscout_cli.costs import (
    ModelPrice,
    call_cost_micros,
    estimate_request_tokens,
    grounding_fee_micros,
)
from dealscout_cli.errors import BadModelOutput, BadPhoto, ProviderError, RateLimited
from dealscout_cli.images import PreparedImage
from dealscout_cli.jobs import call_outcome
from dealscout_cli.limits import Limits, waiting_for_permit
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.providers.base import ImagePart, ModelReply, ModelRequest, Provider
from dealscout_cli.records import CallRecord, ItemRecord, Stage
from dealscout_cli.retry import RetryPolicy

if TYPE_CHECKING:
    from dealscout_cli.limits import Outcome as LimiterOutcome
    from dealscout_cli.limits import RateLimits

RecordCall = Callable[[CallRecord], Awaitable[None]]


@dataclass(frozen=True)
class PipelineConfig:
    vision_model: str
    pricing_model: str
    max_side: int
    offline: bool = False
    read_barcodes: bool = True
    grounded_prices: bool = (
        False  # pricing searches the web (Google Search tool), billed per request
    )
    media_resolution: str = DEFAULT_MEDIA_RESOLUTION  # Gemini 3 only (config.stage_options)
    identify_thinking: str = DEFAULT_IDENTIFY_THINKING
    price_thinking: str = DEFAULT_PRICE_THINKING


@dataclass(frozen=True)
class PreparedItem:
    """An item's photos ready to send: images, their quality warnings, the barcodes read."""

    images: list[PreparedImage]
    warnings: list[str] = field(default_factory=list)
    barcodes: list[str] = field(default_factory=list)


class Checkpoints(Protocol):
    """Where an attempt keeps what it has finished, so a retry does not pay for it again."""

    async def identification(self) -> Identification | None: ...

    async def save_identification(self, identification: Identification) -> None: ...

    async def save_facts(self, warnings: list[str], barcodes: list[str]) -> None: ...

    async def save_grounded_price(self, output: str) -> None: ...


class Pipeline:
    """Runs the stages of one item against a provider; stateless between items."""

    def __init__(
        self,
        provider: Provider | None,
        config: PipelineConfig,
        prices: dict[str, ModelPrice],
        record_call: RecordCall,
        *,
        policy: RetryPolicy,
        limits: RateLimits | None = None,
        image_limiter: anyio.CapacityLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = (
            provider  # None: this pipeline only prepares photos (the fleet's coordinator)
        )
        self.config = config
        self.prices = prices
        self.record_call = record_call
        self.policy = policy
        self.limits = limits
        self.image_limiter = image_limiter
        self.clock = clock

    async def process(
        self,
        item: ItemRecord,
        checkpoints: Checkpoints,
        *,
        attempt: int,
        prepared: PreparedItem | None = None,
    ) -> tuple[Identification, PriceEstimate]:
        """One attempt at an item: identify it (unless a checkpoint has it), then price it.
        `prepared`: photos already prepared elsewhere (a worker gets them from the coordinator)."""
        identification = await checkpoints.identification()
        if identification is None:
            if prepared is None:
                prepared = await self.prepare_item(item)
                await checkpoints.save_facts(prepared.warnings, prepared.barcodes)
            identification, _text = await self.identify(
                item, prepared.images, attempt=attempt, barcodes=prepared.barcodes
            )
            await checkpoints.save_identification(identification)
        price, reply = await self.price(item, identification, attempt=attempt)
        if self.config.grounded_prices:
            await checkpoints.save_grounded_price(grounded_price_output(price, reply))
        return identification, price

    async def prepare_item(self, item: ItemRecord) -> PreparedItem:
        images, warnings, barcodes = await self.prepare(item)
        return PreparedItem(images, warnings, product_codes(barcodes))

    # ------------------------------------------------------------ stages

    async def prepare(
        self, item: ItemRecord
    ) -> tuple[list[PreparedImage], list[str], list[Barcode]]:
        """Prepared images (deduplicated by content), the photo-quality warnings and the
        barcodes read from the same decode (a bonus, never a failure; none when not asked).

        A photo that cannot be used (not an image, corrupt, vanished) is left out and named
        in the warnings; the item fails only when none of its photos can be used."""
        images: list[PreparedImage] = []
        warnings: list[str] = []
        barcodes: list[Barcode] = []
        left_out: list[BadPhoto] = []
        seen: set[str] = set()
        for photo in item.photos:
            if photo.sha256 in seen:
                continue
            seen.add(photo.sha256)
            name = Path(photo.path).name
            try:
                image, found = await anyio.to_thread.run_sync(
                    functools.partial(
                        prepare_and_read,
                        Path(photo.path),
                        max_side=self.config.max_side,
                        expected_sha256=photo.sha256,
                        check_quality=True,
                        read=self.config.read_barcodes,
                    ),
                    abandon_on_cancel=True,
                    limiter=self.image_limiter,
                )
            except BadPhoto as exc:
                left_out.append(exc)
                warnings.append(f"{name}: left out, {exc.reason}")
                continue
            images.append(image)
            barcodes += found
            warnings.extend(f"{name}: {w}" for w in image.warnings)
        if not images and len(left_out) == 1:
            raise left_out[0]  # its one bad photo's own error
        if not images:
            reasons = "; ".join(f"{Path(bad.path).name}: {bad.reason}" for bad in left_out)
            raise BadPhoto(
                item.label,
                f"none of its {len(left_out)} photos can be used ({reasons})"
                if left_out
                else "item has no photos",
            )
        return images, warnings, barcodes

    async def identify(
        self,
        item: ItemRecord,
        images: list[PreparedImage],
        *,
        attempt: int,
        barcodes: Sequence[str] = (),
    ) -> tuple[Identification, str]:
        request = self.identify_request(item, images, barcodes)
        parsed, reply = await self._call(request, Stage.IDENTIFY, item.id, attempt)
        assert isinstance(parsed, Identification)
        return parsed, reply.text

    async def price(
        self, item: ItemRecord, identification: Identification, *, attempt: int
    ) -> tuple[PriceEstimate, ModelReply]:
        request = self.price_request(identification)
        parsed, reply = await self._call(request, Stage.PRICE, item.id, attempt)
        assert isinstance(parsed, PriceEstimate)
        return parsed, reply

    # ------------------------------------------------------------ the requests (online and batch)

    def identify_request(
        self, item: ItemRecord, images: list[PreparedImage], barcodes: Sequence[str] = ()
    ) -> ModelRequest:
        options = stage_options(
            self.config.vision_model, self.config.media_resolution, self.config.identify_thinking
        )
        return ModelRequest(
            model=self.config.vision_model,
            system=prompts.IDENTIFY_SYSTEM,
            prompt=prompts.identify_prompt(item.notes, barcodes),
            schema=Identification,
            images=tuple(ImagePart(i.data, i.mime_type, i.width, i.height) for i in images),
            media_resolution=options.media_resolution,
            thinking_level=options.thinking_level,
        )

    def price_request(self, identification: Identification) -> ModelRequest:
        grounded = self.config.grounded_prices
        options = stage_options(self.config.pricing_model, None, self.config.price_thinking)
        return ModelRequest(
            model=self.config.pricing_model,
            system=prompts.price_system(grounded=grounded),
            prompt=prompts.price_prompt(identification, grounded=grounded),
            schema=PriceEstimate,
            max_output_tokens=1024,
            grounded=grounded,
            thinking_level=options.thinking_level,
        )

    # ------------------------------------------------------------ one call, with retries

    async def ask(self, request: ModelRequest, stage: Stage) -> BaseModel:
        """A call about no one item (`--confirm-groups`), retried and recorded like the rest."""
        parsed, _reply = await self._call(request, stage, None, 1)
        return parsed

    async def _call(
        self, request: ModelRequest, stage: Stage, item_id: int | None, item_attempt: int
    ) -> tuple[BaseModel, ModelReply]:
        """One call, retried by the policy's tenacity loop; every attempt is recorded."""
        async for attempt in self.policy.call_retrying(sleep=self._backoff):
            with attempt:
                return await self._attempt(
                    request, stage, item_id, attempt.retry_state.attempt_number
                )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _backoff(self, seconds: float) -> None:
        if isinstance(self.limits, Limits):
            await self.limits.backoff(seconds)  # a stop wakes it; off the soft time limit
        else:
            await anyio.sleep(seconds)

    async def _attempt(
        self, request: ModelRequest, stage: Stage, item_id: int | None, call_attempt: int
    ) -> tuple[BaseModel, ModelReply]:
        if self.provider is None:
            raise RuntimeError("this pipeline only prepares photos; it has no provider")
        limiter = self.limits.for_model(request.model) if self.limits is not None else None
        with waiting_for_permit():  # the quota's time, not the item's: off its soft limit
            permit = await limiter.acquire(estimate_request_tokens(request)) if limiter else None
        started = self.clock()
        mono = time.monotonic()
        reply: ModelReply | None = None
        error: ProviderError | None = None
        outcome: LimiterOutcome = "error"  # cancelled or crashed unless proven otherwise
        try:
            reply = await self.provider.generate(request)
            parsed = parse_answer(request, reply.text)
            outcome = "ok"
            return parsed, reply
        except ProviderError as exc:
            error = exc
            outcome = "rate_limited" if isinstance(exc, RateLimited) else "error"
            raise
        finally:
            latency = time.monotonic() - mono
            if limiter is not None and permit is not None:
                limiter.record(
                    permit,
                    actual_tokens=reply.input_tokens if reply else None,
                    outcome=outcome,
                    latency=latency,
                    retry_after=getattr(error, "retry_after", None),
                )
            with anyio.CancelScope(
                shield=True
            ):  # cancelled calls may still be billed: record them too
                await self._record(
                    request, stage, item_id, call_attempt, started, latency, reply, error
                )

    def _cost(self, request: ModelRequest, reply: ModelReply | None) -> int | None:
        if reply is None:
            return None
        if self.config.offline:
            return 0  # the built-in emulator bills nobody
        cost = call_cost_micros(self.prices, request.model, reply.input_tokens, reply.output_tokens)
        if cost is not None and request.grounded:
            cost += grounding_fee_micros(request.model, reply.search_queries)
        return cost

    async def _record(
        self,
        request: ModelRequest,
        stage: Stage,
        item_id: int | None,
        attempt: int,
        started: float,
        latency: float,
        reply: ModelReply | None,
        error: ProviderError | None,
    ) -> None:
        input_tokens = reply.input_tokens if reply else None
        output_tokens = reply.output_tokens if reply else None
        await self.record_call(
            CallRecord(
                item_id=item_id,
                stage=stage.value,
                model=request.model,
                attempt=attempt,
                started_epoch=started,
                latency_ms=round(latency * 1000),
                outcome=call_outcome(error, answered=reply is not None),
                http_status=(reply.http_status if reply else None)
                if error is None
                else error.status,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_micro_usd=self._cost(request, reply),
                error=str(error)[:500] if error else None,
                offline=self.config.offline,
            )
        )


def grounded_price_output(price: BaseModel, reply: ModelReply) -> str:
    """The price stage of a grounded answer: the estimate plus the web pages it was based on."""
    output = json.loads(price.model_dump_json())
    output["grounding_sources"] = list(reply.grounding_uris)
    output["search_queries"] = reply.search_queries
    return json.dumps(output)


def parse_answer(request: ModelRequest, text: str) -> BaseModel:
    """The reply checked against the request's schema. A grounded answer is JSON in plain
    text (JSON mode is off with tools), often inside a ```json fence: that is stripped first."""
    if request.grounded:
        text = strip_code_fence(text)
    return _validate(request.schema, text, request.model)


def strip_code_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped.strip()


def _validate(schema: type[BaseModel], text: str, model: str) -> BaseModel:
    """Check the model's JSON ourselves: the SDK's `response.parsed` is silently None when it is bad."""
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "answer"
        kind = "not JSON" if first.get("type") == "json_invalid" else f"{where}: {first.get('msg')}"
        raise BadModelOutput(
            f"{model} answered with output that does not fit {schema.__name__} ({kind})",
            raw_text=text[:2000],
        ) from None
