"""The seller's review: listing revisions, approve / reject, and "ask again" with a note.

Every version of a listing is a row of `revisions`: the model's drafts (written with the
listing by `queue.complete`, through `record_model_revision`) and the seller's edits
(`save_seller_revision`). The current listing, the one shown, listed and exported, is the
item's highest-numbered revision; the `listings` row keeps what the model last said and
where it came from (models, prompt version, offline).

A seller's edit is never overwritten by a model: a later run on the item (`snap --force`,
a real run redoing an offline placeholder) keeps the model's new draft in `listings` but
adds no revision over the seller's, unless the seller asked again (`ask_again`), which
queues the item with a note for the model; the revision the model then writes is the
current one, the seller's earlier edits stay in the history.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from dealscout_cli.errors import UsageError
from dealscout_cli.records import iso_now
from dealscout_cli.store.connection import StoreConnection
from dealscout_cli.store.queue import requeue_for_review
from dealscout_cli.store.revisions import Author, current_revision, fields_json, insert_revision

if TYPE_CHECKING:  # pydantic costs ~60 ms to import; the grid never needs it
    from dealscout_cli.models import Identification, PriceEstimate

NOTE_MAX = 1000  # characters of an "ask again" note: a correction, not an essay
LOW_CONFIDENCE = 0.6  # below this, an identification needs the seller's eye


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class GridSort(StrEnum):
    """How the review grid can be ordered."""

    ITEM = "item"
    TITLE = "title"
    PRICE = "price"
    CONFIDENCE = "confidence"
    STATE = "state"


# Each grid state, as the seller sees it: a decision outranks the job's state, and a done
# item whose listing the emulator made is an offline placeholder.
GRID_STATES = ("done", "failed", "queued", "running", "offline", "approved", "rejected", "skipped")


@dataclass(frozen=True)
class Revision:
    """One version of an item's listing: who wrote it, when, and its fields
    (`{"identification": {...}, "price": {...} or None}`)."""

    number: int
    author: Author
    fields: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class GridQuery:
    """A page of the review grid: filters, order, and which page."""

    attention: bool = False  # only what needs the seller's eye
    state: str | None = None  # one of GRID_STATES
    text: str | None = None  # in the title, brand, model or the item's name
    sort: GridSort = GridSort.ITEM
    descending: bool = False
    page: int = 1
    page_size: int = 60


@dataclass(frozen=True)
class GridPage:
    rows: list[dict[str, Any]]
    total: int
    query: GridQuery
    pages: int = field(init=False)

    def __post_init__(self) -> None:
        size = max(1, self.query.page_size)
        object.__setattr__(self, "pages", max(1, -(-self.total // size)))


class Reviews(StoreConnection):
    """Revisions, decisions and the review grid."""

    def revisions(self, item_id: int) -> list[Revision]:
        """Every version of the item's listing, oldest first."""
        return [
            Revision(
                row["number"], Author(row["author"]), json.loads(row["fields"]), row["created_at"]
            )
            for row in self.conn.execute(
                "SELECT number, author, fields, created_at FROM revisions WHERE item_id = ?"
                " ORDER BY number",
                [item_id],
            )
        ]

    def review_of(self, item_id: int) -> dict[str, Any]:
        """The item's decision and its "ask again" note (None where there is none)."""
        row = self.conn.execute(
            "SELECT decision, decided_at, note, asked_at FROM reviews WHERE item_id = ?",
            [item_id],
        ).fetchone()
        keys = ("decision", "decided_at", "note", "asked_at")
        return dict(row) if row is not None else dict.fromkeys(keys)

    def save_seller_revision(
        self,
        item_id: int,
        identification: Identification,
        price: PriceEstimate | None,
        *,
        now: float,
    ) -> int:
        """The seller's edit as the item's new current revision; returns its number.
        Saving what is already current stores nothing and returns the current number."""
        fields = fields_json(identification, price)
        with self.transaction() as conn:
            current = current_revision(conn, item_id)
            if current is None:
                raise UsageError(f"item {item_id} has no listing to edit yet")
            if json.loads(current["fields"]) == json.loads(fields):
                return int(current["number"])
            return insert_revision(conn, item_id, Author.SELLER, fields, iso_now(now))

    def decide(self, item_id: int, decision: Decision | None, *, now: float) -> None:
        """Approve or reject the item (None: undecided again). Only a listing is approved."""
        with self.transaction() as conn:
            if decision is Decision.APPROVED and current_revision(conn, item_id) is None:
                raise UsageError(f"item {item_id} has no listing to approve")
            _ensure_review(conn, item_id)
            conn.execute(
                "UPDATE reviews SET decision = ?, decided_at = ? WHERE item_id = ?",
                [decision.value if decision else None, iso_now(now) if decision else None, item_id],
            )

    def ask_again(self, item_id: int, note: str, *, now: float) -> None:
        """Queue the item to be identified again with the seller's note in the prompt; the
        model's next draft becomes the current revision (the seller's edits stay in history)."""
        from dealscout_cli.models import one_line  # pydantic: not on `status`'s start-up path

        note = one_line(note)  # the rules of a model's answer: no controls, no U+202E, NFC
        if not note:
            raise UsageError("say what the model got wrong, e.g. 'it is a Le Creuset, not a Staub'")
        if len(note) > NOTE_MAX:
            raise UsageError(f"the note is {len(note)} characters; at most {NOTE_MAX}")
        with self.transaction() as conn:
            _ensure_review(conn, item_id)
            requeue_for_review(conn, item_id, iso_now(now))
            conn.execute(
                """UPDATE reviews SET note = ?, asked_at = ?, decision = NULL, decided_at = NULL
                   WHERE item_id = ?""",
                [note, iso_now(now), item_id],
            )

    def grid(self, query: GridQuery) -> GridPage:
        """One page of the review grid: each item's current listing, state and warnings."""
        where, params = _grid_filter(query)
        total = int(
            self.conn.execute(f"{_GRID} SELECT COUNT(*) FROM grid {where}", params).fetchone()[0]
        )
        order = _GRID_ORDER[query.sort] + (" DESC" if query.descending else "")
        size = max(1, query.page_size)
        offset = (max(1, query.page) - 1) * size
        # The page's ids first (only the filter and sort columns are computed for the rows
        # skipped), then those rows in full: a last page of 10,000 costs what a first does.
        ids = [
            row[0]
            for row in self.conn.execute(
                f"{_GRID} SELECT item_id FROM grid {where} ORDER BY {order}, item_id"
                " LIMIT ? OFFSET ?",
                [*params, size, offset],
            )
        ]
        found = {
            row["item_id"]: _grid_row(dict(row))
            for row in self.conn.execute(
                f"{_GRID} SELECT * FROM grid WHERE item_id IN ({','.join('?' * len(ids))})", ids
            )
        }
        rows = [found[item_id] for item_id in ids]
        return GridPage(rows, total, query)

    def grid_neighbours(self, query: GridQuery, item_id: int) -> tuple[int | None, int | None]:
        """The items before and after `item_id` in the grid's order (j/k on an item page)."""
        where, params = _grid_filter(query)
        order = _GRID_ORDER[query.sort] + (" DESC" if query.descending else "")
        ids = [
            row[0]
            for row in self.conn.execute(
                f"{_GRID} SELECT item_id FROM grid {where} ORDER BY {order}, item_id", params
            )
        ]
        if item_id not in ids:
            return None, None
        at = ids.index(item_id)
        return (ids[at - 1] if at > 0 else None), (ids[at + 1] if at + 1 < len(ids) else None)

    def photo_file(self, photo_id: int) -> tuple[str, str] | None:
        """(path, sha256) of one stored photo, or None: the only files review ever serves."""
        from dealscout_cli.store.items import real_path

        row = self.conn.execute(
            "SELECT path, path_bytes, sha256 FROM photos WHERE id = ?", [photo_id]
        ).fetchone()
        return None if row is None else (real_path(row["path"], row["path_bytes"]), row["sha256"])

    def photos_of(self, item_id: int) -> list[dict[str, Any]]:
        return [
            dict(row)
            for row in self.conn.execute(
                "SELECT id, path, sha256 FROM photos WHERE item_id = ? ORDER BY position, id",
                [item_id],
            )
        ]

    def item_facts(self, item_id: int) -> dict[str, Any] | None:
        """What the item page shows beside the listing: its job, warnings, barcodes, the
        model's provenance and the grounded price's sources."""
        row = self.conn.execute(
            """SELECT items.id AS item_id, items.label, items.source, items.notes,
                      items.quality_warnings, items.barcodes, jobs.state AS job_state,
                      jobs.error_kind, jobs.error, listings.sku, listings.offline,
                      listings.prompt_version, listings.vision_model, listings.pricing_model,
                      (SELECT output FROM stages WHERE stages.item_id = items.id
                       AND stages.stage = 'price') AS price_stage
               FROM items JOIN jobs ON jobs.item_id = items.id
               LEFT JOIN listings ON listings.item_id = items.id WHERE items.id = ?""",
            [item_id],
        ).fetchone()
        if row is None:
            return None
        facts = dict(row)
        facts["quality_warnings"] = json.loads(facts["quality_warnings"])
        facts["barcodes"] = json.loads(facts["barcodes"])
        from dealscout_cli.store.reports import price_sources

        facts["price_sources"] = price_sources(facts.pop("price_stage"))
        return facts


def _ensure_review(conn: sqlite3.Connection, item_id: int) -> None:
    if conn.execute("SELECT 1 FROM items WHERE id = ?", [item_id]).fetchone() is None:
        raise UsageError(f"no item with id {item_id}")
    conn.execute("INSERT OR IGNORE INTO reviews (item_id) VALUES (?)", [item_id])


# The grid: one row per item with its current revision's columns. A subquery SQLite
# flattens into the outer query, so a filter or sort reads plain indexed columns.
_GRID = """
WITH grid AS (
    SELECT items.id AS item_id, items.label, items.quality_warnings, jobs.state AS job_state,
           jobs.error, listings.offline, reviews.decision, reviews.asked_at,
           current.author, current.number AS revision, current.title, current.brand,
           current.model, current.condition, current.confidence, current.price_low,
           current.price_suggested, current.price_high, current.currency,
           (SELECT id FROM photos WHERE photos.item_id = items.id
            ORDER BY position, id LIMIT 1) AS photo_id,
           CASE WHEN reviews.decision IS NOT NULL THEN reviews.decision
                WHEN jobs.state = 'done' AND listings.offline = 1 THEN 'offline'
                ELSE jobs.state END AS state
    FROM items JOIN jobs ON jobs.item_id = items.id
    LEFT JOIN listings ON listings.item_id = items.id
    LEFT JOIN reviews ON reviews.item_id = items.id
    LEFT JOIN revisions AS current ON current.item_id = items.id AND current.latest = 1
)"""

# "Needs attention": undecided, and failed, an offline placeholder, unsure, badly
# photographed, or priced with a range wider than the suggested price itself.
_ATTENTION = f"""decision IS NULL AND (state IN ('failed', 'offline')
    OR confidence < {LOW_CONFIDENCE} OR quality_warnings NOT IN ('[]', '')
    OR (price_high - price_low) > price_suggested)"""

_GRID_ORDER = {
    GridSort.ITEM: "item_id",
    GridSort.TITLE: "title IS NULL, title COLLATE NOCASE",
    GridSort.PRICE: "price_suggested IS NULL, price_suggested",
    GridSort.CONFIDENCE: "confidence IS NULL, confidence",
    GridSort.STATE: "state",
}


def _grid_filter(query: GridQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.attention:
        clauses.append(_ATTENTION)
    if query.state:
        clauses.append("state = ?")
        params.append(query.state)
    if query.text:
        # instr, not LIKE: a seller's % or _ is a character to find, not a wildcard
        clauses.append(
            "(instr(lower(COALESCE(title, '') || ' ' || COALESCE(brand, '') || ' ' ||"
            " COALESCE(model, '') || ' ' || label), lower(?)) > 0 OR CAST(item_id AS TEXT) = ?)"
        )
        params += [query.text.strip(), query.text.strip()]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _grid_row(row: dict[str, Any]) -> dict[str, Any]:
    row["quality_warnings"] = json.loads(row["quality_warnings"] or "[]")
    row["attention"] = row["decision"] is None and (
        row["state"] in ("failed", "offline")
        or (row["confidence"] is not None and row["confidence"] < LOW_CONFIDENCE)
        or bool(row["quality_warnings"])
        or _wide(row)
    )
    return row


def _wide(row: dict[str, Any]) -> bool:
    low, suggested, high = row["price_low"], row["price_suggested"], row["price_high"]
    return None not in (low, suggested, high) and high - low > suggested


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """What one revision changed from the one before it: (field, old, new) per field, in
    the seller's words ("title", "price suggested", "attributes")."""
    old = _flat(before or {})
    new = _flat(after)
    return [
        (name, old.get(name), new.get(name)) for name in new if old.get(name) != new.get(name)
    ] + [(name, old[name], None) for name in old if name not in new]


def _flat(fields: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in (fields.get("identification") or {}).items():
        flat[name] = value
    for name, value in (fields.get("price") or {}).items():
        flat[f"price {name}"] = value
    return flat
