"""The read side: counts, listings, calls, failures, runs, what is in flight. Nothing here writes.

Most of these answer `dealscout status`, which must start fast. Rows come back as dicts
through `_dicts` over plain sqlite3, not sqlite-utils' `db.query`: importing sqlite-utils
takes ~100 ms (it loads numpy), half of what `status` takes in all, and would add as much
to `listings` and `export` for no simpler code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dealscout_cli.records import JobState
from dealscout_cli.store.connection import StoreConnection

if TYPE_CHECKING:  # pydantic costs ~60 ms to import; `status` never needs it
    from dealscout_cli.models import Listing


class Reports(StoreConnection):
    """Queries for `status`, `listings`, `export` and the engines' progress."""

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        for state, n in self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    def job_queued_at(self, job_id: int) -> str:
        """When the job last entered the queue (ISO-8601 text)."""
        return str(self._value("SELECT queued_at FROM jobs WHERE id = ?", [job_id]))

    def listings(
        self,
        *,
        item_id: int | None = None,
        include_offline: bool = True,
        approved_only: bool = False,
    ) -> list[Listing]:
        """The current listings: each item's latest revision (the seller's edit where that is
        the latest, `store/revisions.py`) with what the model run recorded beside it. With
        `approved_only`, only the listings the seller approved in `dealscout review`."""
        sql = """SELECT listings.*, items.key, items.notes, items.quality_warnings, items.barcodes,
                        (SELECT output FROM stages WHERE stages.item_id = listings.item_id
                         AND stages.stage = 'price') AS price_stage,
                        (SELECT fields FROM revisions WHERE revisions.item_id = listings.item_id
                         AND revisions.latest = 1 AND revisions.author = 'seller')
                         AS seller_fields
                 FROM listings JOIN items ON items.id = listings.item_id"""
        params: list[Any] = []
        clauses = []
        if item_id is not None:
            clauses.append("listings.item_id = ?")
            params.append(item_id)
        if not include_offline:
            clauses.append("listings.offline = 0")
        if approved_only:
            clauses.append(
                "EXISTS (SELECT 1 FROM reviews WHERE reviews.item_id = listings.item_id"
                " AND reviews.decision = 'approved')"
            )
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY listings.item_id"
        found = []
        for row in self._dicts(sql, params):
            listing = _listing(row, self._photos(row["item_id"]))
            if listing is not None:
                found.append(listing)
        return found

    def calls_for_item(self, item_id: int) -> list[dict[str, Any]]:
        return self._dicts(
            """SELECT stage, model, attempt, started_at, latency_ms, outcome, http_status,
                      input_tokens, output_tokens, cost_micro_usd, error
               FROM calls WHERE item_id = ? ORDER BY id""",
            [item_id],
        )

    def failures(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = """SELECT items.id AS item_id, items.label, items.source, jobs.state, jobs.error_kind,
                        jobs.error, jobs.retryable, jobs.attempts,
                        (SELECT path FROM photos WHERE photos.item_id = items.id
                         ORDER BY position LIMIT 1) AS first_photo
                 FROM jobs JOIN items ON items.id = jobs.item_id
                 WHERE jobs.state IN ('failed', 'skipped')
                 ORDER BY COALESCE(jobs.finished_at, jobs.queued_at) DESC, items.id DESC"""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._dicts(sql)

    def call_totals(
        self, *, run_id: int | None = None, offline: bool | None = None
    ) -> dict[str, Any]:
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if offline is not None:  # emulator calls cost nothing real: budgets leave them out
            clauses.append("offline = ?")
            params.append(int(offline))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        row = self._dicts(
            f"""SELECT COUNT(*) AS calls, COALESCE(SUM(input_tokens), 0) AS input_tokens,
                       COALESCE(SUM(output_tokens), 0) AS output_tokens,
                       COALESCE(SUM(cost_micro_usd), 0) AS cost_micro_usd,
                       SUM(outcome = 'rate_limited') AS rate_limited,
                       SUM(cost_micro_usd IS NULL AND outcome = 'ok') AS unpriced
                FROM calls {where}""",
            params,
        )[0]
        return {key: value or 0 for key, value in row.items()}

    def model_activity(self, *, now: float, window: float = 60.0) -> list[dict[str, Any]]:
        """Per model over the last `window` seconds: requests, 429s, mean latency."""
        return self._dicts(
            """SELECT model, COUNT(*) AS requests, SUM(outcome = 'rate_limited') AS rate_limited,
                      CAST(AVG(latency_ms) AS INTEGER) AS mean_latency_ms
               FROM calls WHERE started_epoch >= ? GROUP BY model ORDER BY model""",
            [now - window],
        )

    def states_by_key(self, keys: list[str]) -> dict[str, tuple[str, bool]]:
        """For known item keys: (job state, whether its identification is already saved).
        Offline placeholders count as work still to do: a real run redoes them."""
        known: dict[str, tuple[str, bool]] = {}
        for start in range(0, len(keys), 500):  # SQLite's default limit is 999 bound parameters
            chunk = keys[start : start + 500]
            rows = self.conn.execute(
                f"""SELECT items.key,
                           CASE WHEN EXISTS (SELECT 1 FROM listings
                                             WHERE listings.item_id = items.id
                                             AND listings.offline = 1)
                                THEN 'queued' ELSE jobs.state END,
                           EXISTS (SELECT 1 FROM stages WHERE stages.item_id = items.id
                                   AND stages.stage = 'identify'
                                   AND stages.offline = 0) AS identified
                    FROM items JOIN jobs ON jobs.item_id = items.id
                    WHERE items.key IN ({",".join("?" * len(chunk))})""",
                chunk,
            )
            for key, state, identified in rows:
                known[key] = (state, bool(identified))
        return known

    def offline_listing_count(self) -> int:
        return int(self._value("SELECT COUNT(*) FROM listings WHERE offline = 1"))

    def finished_since(self, since_iso: str) -> int:
        """Items a run finished (done or failed) since then; skipped files never ran."""
        return int(
            self._value(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'failed') AND finished_at >= ?",
                [since_iso],
            )
        )

    def runs(self, limit: int = 5) -> list[dict[str, Any]]:
        return self._dicts(
            "SELECT id, started_at, finished_at, seen_at, host, pid, status, offline, summary,"
            " limits FROM runs ORDER BY id DESC LIMIT ?",
            [limit],
        )

    def running_leases(self, *, now: float) -> list[dict[str, Any]]:
        return self._dicts(
            """SELECT jobs.item_id, items.label, jobs.lease_owner, jobs.attempts,
                      jobs.lease_expires_at - ? AS expires_in
               FROM jobs JOIN items ON items.id = jobs.item_id
               WHERE jobs.state = 'running' ORDER BY jobs.started_at""",
            [now],
        )

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.conn.execute(sql, params)]

    def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row."""
        return self.conn.execute(sql, params).fetchone()[0]

    def _photos(self, item_id: int) -> list[dict[str, Any]]:
        return self._dicts(
            "SELECT path, sha256 FROM photos WHERE item_id = ? ORDER BY position, id", [item_id]
        )


def _listing(row: dict[str, Any], photos: list[dict[str, Any]]) -> Listing | None:
    """The listing a row holds, or None for a row an older version stored under looser rules
    (a title of spaces, an infinite price): one such row must not take every listing down.
    `dealscout snap --force` on its photos makes it again."""
    from pydantic import ValidationError

    try:
        return _listing_or_raise(row, photos)
    except ValidationError:
        return None


def _listing_or_raise(row: dict[str, Any], photos: list[dict[str, Any]]) -> Listing:
    from dealscout_cli.models import (
        STORED,
        Identification,
        Listing,
        ListingPhoto,
        PriceEstimate,
    )

    identification: Any = row["identification"]
    price: Any = row["price"]
    # The current listing is the latest revision. A model's is this very row (`complete`
    # writes both in one transaction); a seller's edit is read from its revision.
    if row.get("seller_fields"):
        current = json.loads(row["seller_fields"])
        identification = json.dumps(current["identification"])
        price = json.dumps(current["price"]) if current.get("price") else None
    return Listing(
        item_id=row["item_id"],
        item_key=row["key"],
        sku=row["sku"],
        identification=Identification.model_validate_json(identification, context=STORED),
        price=(PriceEstimate.model_validate_json(price, context=STORED) if price else None),
        photos=[ListingPhoto(**photo) for photo in photos],
        barcodes=json.loads(row["barcodes"]),
        quality_warnings=json.loads(row["quality_warnings"]),
        price_sources=price_sources(row["price_stage"]),
        notes=row["notes"],
        prompt_version=row["prompt_version"],
        vision_model=row["vision_model"],
        pricing_model=row["pricing_model"],
        offline=bool(row["offline"]),
        created_at=row["created_at"],
    )


def price_sources(stage_output: str | None) -> list[str]:
    """The web sources of a grounded price stage (`pipeline.grounded_price_output`); a price
    stage without them (not grounded, or stored by an older version) has none."""
    if not stage_output:
        return []
    try:
        sources = json.loads(stage_output).get("grounding_sources")
    except (ValueError, AttributeError):
        return []
    if not isinstance(sources, list):
        return []
    return [source for source in sources if isinstance(source, str) and source]
