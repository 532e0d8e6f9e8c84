"""The baseline contender: what a developer writes in an afternoon instead of dealscout.

asyncio + tenacity on the same google-genai client: every photo in a folder is one item,
sent as it is (no resizing) to the vision model, then its answer to the pricing model;
a semaphore caps the calls in flight, `--rpm` spaces request starts per model, and
tenacity retries 429 and 5xx with random exponential backoff (5 attempts). No database,
no resume, no budget: results go to a JSONL file.

    python benchmarks/bare_script.py PHOTOS --base-url URL [--concurrency 16] [--rpm 300]

Prints one JSON line: items, ok, failed, seconds to the first request and the first result
(from process start, imports included), wall seconds, CPU seconds of this process, and
bytes uploaded. `benchmarks/speed.py` runs it beside dealscout.
"""

from __future__ import annotations

import time

T0 = time.monotonic()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from google import genai  # noqa: E402
from google.genai import errors, types  # noqa: E402
from tenacity import (  # noqa: E402
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

VISION, PRICING = "gemini-3.6-flash", "gemini-3.5-flash-lite"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
stats = {"first_request": None, "first_result": None, "bytes": 0, "calls": 0}


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, errors.APIError) and (exc.code == 429 or exc.code >= 500)


class Spacer:
    """Request starts at most `rpm` a minute: one slot every 60/rpm seconds."""

    def __init__(self, rpm: float | None) -> None:
        self.gap, self.next = (60.0 / rpm if rpm else 0.0), 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        start, self.next = max(now, self.next), max(now, self.next) + self.gap
        await asyncio.sleep(start - now)


async def call(client: genai.Client, spacer: Spacer, model: str, contents: list) -> str:
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=wait_random_exponential(multiplier=1, max=30),
        stop=stop_after_attempt(5),
        reraise=True,
    ):
        with attempt:
            await spacer.wait()
            stats["first_request"] = stats["first_request"] or time.monotonic() - T0
            stats["calls"] += 1
            config = types.GenerateContentConfig(response_mime_type="application/json")
            answer = await client.aio.models.generate_content(
                model=model, contents=contents, config=config
            )
    return answer.text or ""


async def item(client, spacers, gate, photo: Path, out) -> bool:
    async with gate:
        try:
            data = photo.read_bytes()
            stats["bytes"] += len(data)
            mime = "image/png" if photo.suffix.lower() == ".png" else "image/jpeg"
            prompt = "Identify this product for a marketplace listing. Answer JSON."
            part = types.Part.from_bytes(data=data, mime_type=mime)
            what = await call(client, spacers[VISION], VISION, [part, prompt])
            ask = f"Suggest a used price in USD for: {what[:500]}"
            price = await call(client, spacers[PRICING], PRICING, [ask])
        except Exception as exc:  # noqa: BLE001 - a failed item is counted, not fatal
            out.write(json.dumps({"photo": str(photo), "error": repr(exc)[:200]}) + "\n")
            return False
        stats["first_result"] = stats["first_result"] or time.monotonic() - T0
        out.write(json.dumps({"photo": str(photo), "item": what, "price": price}) + "\n")
        return True


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path(os.devnull))
    args = parser.parse_args()
    photos = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    options = types.HttpOptions(base_url=args.base_url, timeout=60_000)
    client = genai.Client(api_key=os.environ.get("GEMINI_API_KEY", "x"), http_options=options)
    spacers = {VISION: Spacer(args.rpm), PRICING: Spacer(args.rpm)}
    gate = asyncio.Semaphore(args.concurrency)
    with args.out.open("w") as out:
        done = await asyncio.gather(*(item(client, spacers, gate, p, out) for p in photos))
    cpu = time.process_time()
    summary = {"items": len(photos), "ok": sum(done), "failed": len(done) - sum(done)}
    summary |= {"first_request_s": stats["first_request"], "first_result_s": stats["first_result"]}
    summary |= {"wall_s": time.monotonic() - T0, "cpu_s": cpu, "calls": stats["calls"]}
    summary |= {"bytes_uploaded": stats["bytes"]}
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
