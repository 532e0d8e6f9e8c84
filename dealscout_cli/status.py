"""Where things stand: the numbers behind `dealscout status` (a plain dict, ready for --json)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dealscout_cli.store import Store, iso_now

THROUGHPUT_WINDOW = 300.0  # seconds


def status_report(store: Store, *, now: float) -> dict[str, Any]:
    counts = store.counts()
    total = sum(counts.values())
    since = iso_now(now - THROUGHPUT_WINDOW)
    done_recent = store.done_since(since)
    totals = store.call_totals()
    runs = store.runs(limit=3)
    active = [r for r in runs if r["status"] == "running"]
    per_minute = done_recent / (THROUGHPUT_WINDOW / 60)
    remaining = counts["queued"] + counts["running"]
    eta = None
    if per_minute > 0 and remaining:
        eta = (datetime.now(UTC) + timedelta(minutes=remaining / per_minute)).isoformat(timespec="seconds")
    return {
        "database": str(store.path),
        "items": total,
        "counts": counts,
        "throughput_items_per_minute": round(per_minute, 2),
        "eta": eta,
        "calls": totals["calls"],
        "input_tokens": totals["input_tokens"],
        "output_tokens": totals["output_tokens"],
        "cost_micro_usd": totals["cost_micro_usd"],
        "cost_usd": totals["cost_micro_usd"] / 1_000_000,
        "unpriced_calls": totals["unpriced"],
        "models_last_minute": store.model_activity(now=now),
        "in_flight": store.running_leases(now=now),
        "last_errors": store.failures(limit=5),
        "runs": runs,
        "active_runs": len(active),
    }
