"""Where things stand: the numbers behind `dealscout status` (a plain dict, ready for --json),
and the one rule for "how long is left" that `status` and the progress bar share.

Throughput is items finished (done or failed) over the time the active runs have actually
been running, or over the last THROUGHPUT_WINDOW when they have run longer: dividing a
45-second run's work by five minutes made a run doing an item a second look like 1.6 a
minute. With no run active there is no throughput and no ETA: nothing is being worked on.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dealscout_cli.records import iso_now

if TYPE_CHECKING:  # `status` starts fast: the store is imported by whoever opened it
    from dealscout_cli.store import Store

THROUGHPUT_WINDOW = 300.0  # seconds: a long run's pace is its last five minutes
GONE_AFTER = 120.0  # a "running" run silent this long was killed (its leases expire on their own)
ETA_AFTER_ITEMS = 3  # finished items before a pace means anything (one item is a guess)
SHORTEST_WINDOW = 1.0  # seconds; a run started "in the future" (another host's clock) counts this


def eta_seconds(*, finished: int, remaining: int, elapsed: float) -> float | None:
    """Seconds left at the pace of `finished` items in `elapsed` seconds; None while fewer
    than ETA_AFTER_ITEMS have finished or when nothing is left."""
    if remaining <= 0 or finished < ETA_AFTER_ITEMS or elapsed <= 0:
        return None
    return remaining * elapsed / finished


def status_report(store: Store, *, now: float) -> dict[str, Any]:
    counts = store.counts()
    totals = store.call_totals()
    # `runs.summary` and `runs.limits` are stored as JSON text: read back as objects, so
    # `status --json` holds no JSON inside a string.
    runs = [
        {**run, "summary": _json(run["summary"]), "limits": _json(run["limits"])}
        for run in store.runs(limit=3)
    ]
    active = _active_runs(runs, now=now)
    limiters = [
        {**limiter, "run_id": run["id"]} for run in active for limiter in run["limits"] or []
    ]
    return {
        "database": str(store.path),
        "items": sum(counts.values()),
        "counts": counts,
        **_pace(store, active, counts, now=now),
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


def _active_runs(runs: list[dict[str, Any]], *, now: float) -> list[dict[str, Any]]:
    recent = iso_now(now - GONE_AFTER)
    return [
        r for r in runs if r["status"] == "running" and (r["seen_at"] or r["started_at"]) >= recent
    ]


def _pace(
    store: Store, active: list[dict[str, Any]], counts: dict[str, int], *, now: float
) -> dict[str, Any]:
    """Throughput over the window the active runs have run, and the ETA it gives."""
    if not active:
        return {
            "throughput_items_per_minute": None,
            "throughput_window_seconds": None,
            "eta_seconds": None,
        }
    started = min(_epoch(run["started_at"]) for run in active)
    window = max(min(now - started, THROUGHPUT_WINDOW), SHORTEST_WINDOW)
    finished = store.finished_since(iso_now(now - window))
    eta = eta_seconds(
        finished=finished, remaining=counts["queued"] + counts["running"], elapsed=window
    )
    return {
        "throughput_items_per_minute": round(finished / window * 60, 2),
        "throughput_window_seconds": round(window, 1),
        "eta_seconds": None if eta is None else round(eta),
    }


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
