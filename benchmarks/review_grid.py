"""`dealscout review` on 10,000 items: how long until the seller sees the first grid page.

    python benchmarks/review_grid.py              # 10,000 items (first run builds the database, ~1-2 min)
    python benchmarks/review_grid.py --items 2000

The database is made once (cached beside the benchmark photos) through the store's own
calls, as a run would make it: every item scanned, enqueued, claimed and completed with a
varied listing (confidence 0.2-1, some wide price ranges, some without a price), one in
ten edited by the seller, one in twenty approved, one in fifty failed. Then the real
command runs as a subprocess (`dealscout review --no-browser`) and this script times, over
HTTP on 127.0.0.1:

- start: from starting the process to its URL on stdout (the port is listening then);
- first page: the first GET of the grid (the first 60 items), cold; the headline is the two
  added, what a seller waits from Enter to the grid;
- warm pages: the median of 5 GETs each of the grid, needs attention, sort by title,
  a text search, the last page, an item page;
- thumbnails: the first page's 60 photos made from the files (cold), then from the cache;
- grid query CPU: `Store.grid` in this process, CPU seconds per call (median of 5).

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from quota import CACHE, small_photos  # noqa: E402

from dealscout_cli.models import Condition, Identification, PriceEstimate  # noqa: E402
from dealscout_cli.scan import scan  # noqa: E402
from dealscout_cli.store import Store  # noqa: E402
from dealscout_cli.store.reviews import Decision, GridQuery, GridSort  # noqa: E402


def build_database(items: int) -> Path:
    db = CACHE / f"review-{items}.db"
    if db.exists():
        return db
    photos = small_photos(items)
    found = scan([photos]).items
    rng = random.Random(1)
    partial = db.with_name(db.name + ".partial")
    for leftover in partial.parent.glob(partial.name + "*"):
        leftover.unlink()
    with Store.open(partial) as store:
        store.enqueue(found, now=time.time())
        for n in range(len(found)):
            lease = store.claim_next_job("bench", now=time.time(), lease_seconds=600)
            assert lease is not None
            if n % 50 == 49:
                store.fail(
                    lease, now=time.time(), kind="bad_output", error="no JSON", retryable=False
                )
                continue
            ident, price = _listing(rng, n)
            store.complete(
                lease,
                now=time.time(),
                run_id=None,
                identification=ident,
                price=price,
                prompt_version="bench",
                vision_model="gemini-bench",
                pricing_model="gemini-bench",
                offline=n % 3 == 0,
            )
            if n % 10 == 1:
                edited = ident.model_copy(update={"title": ident.title[:60] + " (seller)"})
                store.save_seller_revision(lease.item_id, edited, price, now=time.time())
            if n % 20 == 2:
                store.decide(lease.item_id, Decision.APPROVED, now=time.time())
    for suffix in ("", "-wal", "-shm"):
        source = partial.with_name(partial.name + suffix)
        if source.exists():
            shutil.move(source, db.with_name(db.name + suffix))
    return db


def _listing(rng: random.Random, n: int) -> tuple[Identification, PriceEstimate | None]:
    kind = rng.choice(["Cast iron pot", "Leather handbag", "Desk lamp", "Running shoes", "Mug"])
    brand = rng.choice(["Le Creuset", "Staub", "Coach", "IKEA", "Nike", None])
    ident = Identification(
        title=f"{brand or 'Unbranded'} {kind} #{n}",
        description=f"A {kind.lower()} in good condition. " * 4,
        category="Home & Garden > Kitchen",
        brand=brand,
        condition=rng.choice(list(Condition)),
        confidence=round(rng.uniform(0.2, 1.0), 2),
    )
    if n % 7 == 0:
        return ident, None
    low = round(rng.uniform(5, 100), 2)
    suggested = round(low * rng.uniform(1.1, 1.6), 2)
    high = round(suggested * rng.choice([1.2, 1.4, 3.5]), 2)
    return ident, PriceEstimate(
        low=low, suggested=suggested, high=high, currency="USD", rationale="recent sales"
    )


def fetch(url: str, cookie: str) -> tuple[float, bytes]:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as reply:
        body = reply.read()
    return time.perf_counter() - started, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    db = build_database(args.items)
    thumbs = db.with_name(db.name + "-thumbnails")
    shutil.rmtree(thumbs, ignore_errors=True)  # cold thumbnails every run

    with Store.open(db) as store:
        cpu = []
        for _ in range(5):
            started = time.process_time()
            page = store.grid(GridQuery())
            cpu.append(time.process_time() - started)
        total = page.total

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dealscout_cli.cli", "review", "--db", str(db), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        start_s = time.perf_counter() - started
        base, token = url.split("/?token=")
        cookie = f"dealscout_review={token}"
        first_s, body = fetch(url, cookie)
        warm = {}
        last = -(-total // 60)
        for name, path in [
            ("grid", "/"),
            ("needs attention", "/?attention=1"),
            ("sort by title", f"/?sort={GridSort.TITLE.value}"),
            ("search 'staub'", "/?q=staub"),
            ("last page", f"/?page={last}"),
            ("item page", "/item/5000" if total >= 5000 else "/item/1"),
        ]:
            warm[name] = statistics.median(fetch(base + path, cookie)[0] for _ in range(5))
        photo_ids = re.findall(rb'src="/photo/(\d+)/thumb"', body)
        cold = sum(fetch(f"{base}/photo/{i.decode()}/thumb", cookie)[0] for i in photo_ids)
        cached = sum(fetch(f"{base}/photo/{i.decode()}/thumb", cookie)[0] for i in photo_ids)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"dealscout review on {total:,} items ({db})")
    print(f"  start to first grid page         {start_s + first_s:6.3f} s")
    print(f"    start (process to URL)         {start_s:6.3f} s")
    print(f"    first grid page (60, cold)     {first_s:6.3f} s")
    for name, seconds in warm.items():
        print(f"  {name:<33}{seconds:6.3f} s (warm, median of 5)")
    print(f"  {len(photo_ids)} thumbnails, made from files    {cold:6.3f} s")
    print(f"  {len(photo_ids)} thumbnails, from the cache     {cached:6.3f} s")
    print(f"  Store.grid CPU per call          {statistics.median(cpu):6.3f} s")
    print(
        json.dumps(
            {
                "items": total,
                "start_to_first_page_s": round(start_s + first_s, 3),
                "start_s": round(start_s, 3),
                "first_page_s": round(first_s, 3),
                "warm_s": {name: round(s, 4) for name, s in warm.items()},
                "thumbnails": len(photo_ids),
                "thumbnails_cold_s": round(cold, 3),
                "thumbnails_cached_s": round(cached, 3),
                "grid_cpu_s": round(statistics.median(cpu), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
