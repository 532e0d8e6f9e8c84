"""`snap --batch`: the queue through Gemini Batch Mode (half price, answers within 24 h).

Each run does two things and exits; cron runs it again later:

1. collect: poll every open batch. When one has SUCCEEDED, take its items back
   (`Store.claim_batched`: a fresh lease, so the usual fencing holds), validate each
   inlined answer with the same pydantic schema as the online path, record each as a
   call at the batch price, and save it: an identify answer saves the identify stage
   and the item goes into a pricing batch; a price answer writes the listing
   (`Store.complete`). A bad answer fails that item only. A batch that FAILED,
   was CANCELLED or EXPIRED gives its items back to the queue.
2. submit: claim the queued items, prepare their photos (`Pipeline.prepare`) and
   send one identify request per item as batches to the vision model (items whose
   identification is already saved go straight to a pricing batch).

While its request is in a batch, an item's job is in state `batched` (see
`records.BATCHED`) with `jobs.batch_id` set: no claim takes it, and a normal run does
not wait for it. Nothing is lost if a run dies: a batch is recorded in the same
transaction that parks its items, and items claimed but not yet parked come back
when their lease expires.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from dealscout_cli.costs import ModelPrice, call_cost_micros, grounding_fee_micros
from dealscout_cli.errors import BadPhoto, ProviderError
from dealscout_cli.jobs import JobLifecycle, StopKind, call_outcome, done
from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.pipeline import Pipeline, grounded_price_output, parse_answer
from dealscout_cli.providers.base import ModelReply, ModelRequest
from dealscout_cli.records import BATCHED, CallRecord, Lease, Stage

if TYPE_CHECKING:
    from dealscout_cli.config import Settings
    from dealscout_cli.providers.gemini import GeminiProvider

BATCH_LEASE_SECONDS = 900.0  # held while photos are prepared and the batch is sent
MAX_BATCH_BYTES = 15 * 1024 * 1024  # inlined batches must stay under 20 MB of request
MAX_BATCH_REQUESTS = 1000


@dataclass
class BatchReport:
    """What a pass did with batches; the items' outcomes are in the run's `RunSummary`."""

    submitted: list[dict[str, Any]] = field(default_factory=list)  # stage, name, items
    pending: list[dict[str, Any]] = field(default_factory=list)  # batches still running
    collected: list[dict[str, Any]] = field(default_factory=list)  # batches read this run
    requeued: int = 0  # items given back because their batch failed or was not accepted
    errors: list[str] = field(default_factory=list)  # submission/poll problems (run again)


class BatchRun:
    """One `snap --batch` pass over the store: collect finished batches, submit new ones."""

    def __init__(
        self,
        lifecycle: JobLifecycle,
        pipeline: Pipeline,
        provider: GeminiProvider,
        prices: dict[str, ModelPrice],
    ) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.pipeline = pipeline
        self.provider = provider
        self.prices = prices
        self.owner = lifecycle.owner
        self.run_id = lifecycle.run_id
        self.offline = lifecycle.stamp.offline
        self.prompt_version = lifecycle.stamp.prompt_version
        self.clock = lifecycle.clock
        self.report = BatchReport()

    @property
    def vision_model(self) -> str:
        return self.pipeline.config.vision_model

    @property
    def pricing_model(self) -> str:
        return self.pipeline.config.pricing_model

    async def run(self, *, wait: float = 0.0, poll_interval: float = 0.2) -> BatchReport:
        """Collect, then submit. `wait` > 0 keeps polling until every batch is collected
        (used offline, where the emulator lives only as long as this process)."""
        await self.collect()
        await self.submit()
        deadline = time.monotonic() + wait
        while wait and self.store.open_batches() and time.monotonic() < deadline:
            await anyio.sleep(poll_interval)
            await self.collect()
        self.report.pending = [_brief(batch) for batch in self.store.open_batches()]
        return self.report

    # ------------------------------------------------------------ collect

    async def collect(self) -> None:
        for batch in self.store.open_batches():
            try:
                status = await self.provider.batch_get(batch["name"], batch["model"])
            except ProviderError as exc:
                self.report.errors.append(f"{batch['name']}: could not poll ({exc})")
                self.report.pending.append(_brief(batch))
                continue
            now = self.clock()
            self.store.batch_polled(
                batch["id"], status.state, now=now, done=status.done, error=status.error
            )
            if not status.done:
                self.report.pending.append({**_brief(batch), "state": status.state})
                continue
            leases = self.store.claim_batched(
                batch["id"], self.owner, now=now, lease_seconds=BATCH_LEASE_SECONDS
            )
            if status.state != "succeeded":
                for lease in leases.values():
                    self.store.release(
                        lease, now=now, reason=f"batch {batch['name']} {status.state}"
                    )
                    self.report.requeued += 1
                self.report.errors.append(
                    f"{batch['name']} ended {status.state}"
                    + (f" ({status.error})" if status.error else "")
                    + f"; its {len(leases)} items are queued again"
                )
            else:
                await self._collect_results(batch, status.results or (), leases)
            self.store.batch_collected(batch["id"], now=self.clock())
            self.report.collected.append({**_brief(batch), "state": status.state})

    async def _collect_results(
        self, batch: dict[str, Any], results: Sequence[Any], leases: dict[int, Lease]
    ) -> None:
        stage = Stage(batch["stage"])
        to_price: list[tuple[Lease, Identification]] = []
        for index, item_id in enumerate(batch["item_ids"]):
            result = results[index] if index < len(results) else None
            if result is None:
                result = ProviderError(f"{batch['name']}: no answer for request {index}")
            lease = leases.get(item_id)
            identification = None
            if stage == Stage.PRICE:
                saved = self.store.saved_stage(item_id, Stage.IDENTIFY)
                identification = Identification.model_validate(saved["output"]) if saved else None
            grounded = bool(batch["grounded"])
            parsed, error = self._parse(result, stage, batch["model"], grounded)
            if error is None and stage == Stage.PRICE and identification is None:
                error = ProviderError("identification missing for a pricing answer")
            self._record(batch, item_id, lease, stage, result, error, grounded)
            if lease is None:
                continue  # taken over by another run since: its answer is not ours to save
            if error is not None:
                self._apply_error(lease, error)
                continue
            now = self.clock()
            if stage == Stage.IDENTIFY:
                self.store.save_stage(
                    lease,
                    Stage.IDENTIFY,
                    parsed.model_dump_json(),
                    model=batch["model"],
                    prompt_version=self.prompt_version,
                    offline=self.offline,
                    now=now,
                )
                to_price.append((lease, parsed))
            else:
                assert identification is not None and isinstance(result, ModelReply)
                self._complete(lease, identification, parsed, result, grounded)
        if to_price:
            await self._submit_price(to_price)

    def _parse(
        self,
        result: Any,
        stage: Stage,
        model: str,
        grounded: bool,
    ) -> tuple[Any, ProviderError | None]:
        """Validated like the online path (`pipeline.parse_answer`): the same schemas."""
        if isinstance(result, ProviderError):
            return None, result
        if not isinstance(result, ModelReply):
            return None, ProviderError(f"{model}: unexpected batch result {type(result).__name__}")
        schema = Identification if stage == Stage.IDENTIFY else PriceEstimate
        request = ModelRequest(model=model, system="", prompt="", schema=schema, grounded=grounded)
        try:
            return parse_answer(request, result.text), None
        except ProviderError as exc:
            return None, exc

    def _record(
        self,
        batch: dict[str, Any],
        item_id: int,
        lease: Lease | None,
        stage: Stage,
        result: Any,
        error: ProviderError | None,
        grounded: bool,
    ) -> None:
        reply = result if isinstance(result, ModelReply) else None
        now = self.clock()
        cost: int | None = None
        if reply is not None and self.offline:
            cost = 0  # the built-in emulator bills nobody
        elif reply is not None:
            cost = call_cost_micros(
                self.prices, batch["model"], reply.input_tokens, reply.output_tokens, batch=True
            )
            if cost is not None and grounded:
                cost += grounding_fee_micros(batch["model"], reply.search_queries)
        call = CallRecord(
            item_id=item_id,
            stage=stage.value,
            model=batch["model"],
            attempt=lease.attempt if lease else 0,
            started_epoch=batch["created_epoch"],
            latency_ms=round((now - batch["created_epoch"]) * 1000),  # the batch's turnaround
            outcome=call_outcome(error, answered=True),
            http_status=200 if reply is not None else (error.status if error else None),
            input_tokens=reply.input_tokens if reply else None,
            output_tokens=reply.output_tokens if reply else None,
            cost_micro_usd=cost,
            error=str(error)[:500] if error else None,
            offline=self.offline,
        )
        self.lifecycle.record_call(call, batch_id=batch["id"])

    def _complete(
        self,
        lease: Lease,
        identification: Identification,
        price: PriceEstimate,
        reply: ModelReply,
        grounded: bool,
    ) -> None:
        if grounded:
            self._save_price_stage(lease, price, reply)
        self.lifecycle.apply(lease, self.store.item(lease.item_id), done(identification, price))

    def _save_price_stage(self, lease: Lease, price: PriceEstimate, reply: ModelReply) -> None:
        self.store.save_stage(
            lease,
            Stage.PRICE,
            grounded_price_output(price, reply),
            model=self.pricing_model,
            prompt_version=self.prompt_version,
            offline=self.offline,
            now=self.clock(),
        )

    def _apply_error(self, lease: Lease, error: ProviderError | BadPhoto) -> None:
        outcome = self.lifecycle.judge(error, lease)
        self.lifecycle.apply(lease, self.store.item(lease.item_id), outcome)

    # ------------------------------------------------------------ submit

    async def submit(self) -> None:
        leases: list[Lease] = []
        waiting = self.store.counts().get(BATCHED, 0) if self.lifecycle.budget else 0
        while self._budget_allows_next_item(claimed=len(leases), waiting=waiting):
            lease = self.store.claim_next_job(
                self.owner, now=self.clock(), lease_seconds=BATCH_LEASE_SECONDS
            )
            if lease is None:
                break
            leases.append(lease)
        if not leases:
            return
        to_identify: list[tuple[Lease, ModelRequest]] = []
        to_price: list[tuple[Lease, Identification]] = []

        async def prepare(lease: Lease) -> None:
            item = self.store.item(lease.item_id)
            saved = self.store.saved_stage(item.id, Stage.IDENTIFY)
            if saved is not None:
                to_price.append((lease, Identification.model_validate(saved["output"])))
                return
            try:
                prepared = await self.pipeline.prepare_item(item)
            except BadPhoto as exc:
                self._apply_error(lease, exc)
                return
            self.store.set_item_facts(
                item.id, quality_warnings=prepared.warnings, barcodes=prepared.barcodes
            )
            request = self.pipeline.identify_request(item, prepared.images, prepared.barcodes)
            to_identify.append((lease, request))

        async with anyio.create_task_group() as tg:
            for lease in leases:
                tg.start_soon(prepare, lease)
        to_identify.sort(key=lambda pair: pair[0].item_id)
        for chunk in _chunks(to_identify):
            await self._send(Stage.IDENTIFY, self.vision_model, chunk, grounded=False)
        if to_price:
            await self._submit_price(to_price)

    def _budget_allows_next_item(self, *, claimed: int, waiting: int) -> bool:
        """--max-cost: the `waiting` items in batches are paid when collected, so they count
        as in flight, with the items claimed for this submission."""
        reason = self.lifecycle.budget_refusal(in_flight=claimed + waiting)
        if reason is None:
            return True
        if self.store.counts()["queued"] > 0:  # only a stop when work is actually held back
            self.lifecycle.stop(reason, StopKind.BUDGET)
        return False

    async def _submit_price(self, items: list[tuple[Lease, Identification]]) -> None:
        pairs = [(lease, self.pipeline.price_request(ident)) for lease, ident in items]
        grounded = self.pipeline.config.grounded_prices
        for chunk in _chunks(sorted(pairs, key=lambda pair: pair[0].item_id)):
            await self._send(Stage.PRICE, self.pricing_model, chunk, grounded=grounded)

    async def _send(
        self,
        stage: Stage,
        model: str,
        chunk: list[tuple[Lease, ModelRequest]],
        *,
        grounded: bool,
    ) -> None:
        leases = [lease for lease, _ in chunk]
        display = f"dealscout-{stage.value}-{len(leases)}-items"
        try:
            name = await self.provider.batch_submit(model, [r for _, r in chunk], display)
        except ProviderError as exc:
            for lease in leases:  # nothing was sent: the items wait for the next run
                self.store.release(lease, now=self.clock(), reason=f"batch not accepted: {exc}")
                self.report.requeued += 1
            self.report.errors.append(f"{stage.value} batch of {len(leases)} not accepted: {exc}")
            return
        batch_id, lost = self.store.hand_to_batch(
            leases,
            name=name,
            model=model,
            stage=stage,
            now=self.clock(),
            run_id=self.run_id,
            offline=self.offline,
            grounded=grounded,
        )
        self.report.submitted.append(
            {"id": batch_id, "name": name, "stage": stage.value, "items": len(leases) - len(lost)}
        )


def _chunks(
    pairs: list[tuple[Lease, ModelRequest]],
) -> list[list[tuple[Lease, ModelRequest]]]:
    """Split into batches that stay under the inlined request size limit (base64 images)."""
    chunks: list[list[tuple[Lease, ModelRequest]]] = []
    current: list[tuple[Lease, ModelRequest]] = []
    size = 0
    for pair in pairs:
        request = pair[1]
        weight = (
            sum(len(i.data) * 4 // 3 for i in request.images)
            + len(request.prompt)
            + len(request.system)
            + 2048
        )
        if current and (size + weight > MAX_BATCH_BYTES or len(current) >= MAX_BATCH_REQUESTS):
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += weight
    if current:
        chunks.append(current)
    return chunks


def _brief(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": batch["id"],
        "name": batch["name"],
        "stage": batch["stage"],
        "items": len(batch["item_ids"]),
        "state": batch["state"],
        "created_at": batch["created_at"],
    }


async def run_batch(lifecycle: JobLifecycle, settings: Settings, wait: float) -> BatchReport:
    """One pass: collect finished batches, submit the queue (`wait`: poll until collected)."""
    from dealscout_cli.costs import load_prices
    from dealscout_cli.engines import IMAGE_THREADS, pipeline_config
    from dealscout_cli.providers import open_provider

    provider = open_provider(settings)
    try:
        prices = load_prices(settings.prices_file)
        pipeline = Pipeline(
            provider,
            pipeline_config(settings),
            prices,
            _no_calls,
            policy=lifecycle.policy,
            image_limiter=anyio.CapacityLimiter(IMAGE_THREADS),
        )
        return await BatchRun(lifecycle, pipeline, provider, prices).run(wait=wait)
    finally:
        await provider.aclose()


async def _no_calls(call: CallRecord) -> None:
    raise AssertionError("Batch Mode makes no online calls; its answers are recorded per batch")
