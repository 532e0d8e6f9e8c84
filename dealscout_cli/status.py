"""Where things stand: the numbers behind `dealscout status` (a plain dict, ready for --json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dealscout_cli.records import iso_now
from dealscout_cli.store import Store

THROUGHPUT_WINDOW = 300.0  # seconds
GONE_AFTER = 120.0  # a "running" run silent this long was killed (its leases expire on their own)


def status_report(store: Store, *, now: float) -> dict[str, Any]:
    counts = store.counts()
    total = sum(counts.values())
    since = iso_now(now - THROUGHPUT_WINDOW)
    done_recent = store.done_since(since)
    totals = store.call_totals()
    # `runs.summary` and `runs.limits` are stored as JSON text: read back as objects, so
    # `status --json` holds no JSON inside a string.
    runs = [
        {**run, "summary": _json(run["summary"]), "limits": _json(run["limits"])}
        for run in store.runs(limit=3)
    ]
    recent = iso_now(now - GONE_AFTER)
    active = [
        r for r in runs if r["status"] == "running" and (r["seen_at"] or r["started_at"]) >= recent
    ]
    limiters = [
        {**limiter, "run_id": run["id"]} for run in active for limiter in run["limits"] or []
    ]
    per_minute = done_recent / (THROUGHPUT_WINDOW / 60)
    remaining = counts["queued"] + counts["running"]
    eta = None
    if per_minute > 0 and remaining:
        eta = (datetime.now(UTC) + timedelta(minutes=remaining / per_minute)).isoformat(
            timespec="seconds"
        )
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
        "limiters": limiters,
        "offline_listings": store.offline_listing_count(),
        "in_flight": store.running_leases(now=now),
        "last_errors": store.failures(limit=5),
        "runs": runs,
        "active_runs": len(active),
    }


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
