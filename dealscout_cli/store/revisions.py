"""Writing listing revisions, shared by the queue (the model's drafts, in `complete`) and the
review (the seller's edits): the rule that a model never overwrites a seller's edit lives here."""

from __future__ import annotations

import json
import sqlite3
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dealscout_cli.models import Identification, PriceEstimate


class Author(StrEnum):
    MODEL = "model"
    SELLER = "seller"


def record_model_revision(
    conn: sqlite3.Connection,
    item_id: int,
    identification: Identification,
    price: PriceEstimate | None,
    stamp: str,
) -> bool:
    """The model's draft as the item's new current revision, inside the caller's
    transaction; False (nothing added) when the seller's edit is current and the seller did
    not ask again: a seller's edit is never overwritten by a model."""
    current = current_revision(conn, item_id)
    review = conn.execute("SELECT asked_at FROM reviews WHERE item_id = ?", [item_id]).fetchone()
    asked = review is not None and review["asked_at"] is not None
    if current is not None and current["author"] == Author.SELLER and not asked:
        return False
    insert_revision(conn, item_id, Author.MODEL, fields_json(identification, price), stamp)
    if review is not None:  # a new draft: the seller decides again, the note was answered
        conn.execute(
            "UPDATE reviews SET asked_at = NULL, decision = NULL, decided_at = NULL"
            " WHERE item_id = ?",
            [item_id],
        )
    return True


def fields_json(identification: Identification, price: PriceEstimate | None) -> str:
    return json.dumps(
        {
            "identification": identification.model_dump(mode="json"),
            "price": price.model_dump(mode="json") if price is not None else None,
        },
        ensure_ascii=False,
    )


def current_revision(conn: sqlite3.Connection, item_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT number, author, fields FROM revisions WHERE item_id = ? AND latest = 1",
        [item_id],
    ).fetchone()
    return row


def insert_revision(
    conn: sqlite3.Connection, item_id: int, author: Author, fields: str, stamp: str
) -> int:
    """The item's next revision, now its latest; its grid columns taken from `fields`."""
    number = conn.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE item_id = ?", [item_id]
    ).fetchone()[0]
    parsed = json.loads(fields)
    ident, price = parsed["identification"], parsed.get("price") or {}
    conn.execute("UPDATE revisions SET latest = 0 WHERE item_id = ? AND latest = 1", [item_id])
    conn.execute(
        """INSERT INTO revisions (item_id, number, author, fields, created_at, latest, title,
               brand, model, condition, confidence, price_low, price_suggested, price_high,
               currency)
           VALUES (?,?,?,?,?,1,?,?,?,?,?,?,?,?,?)""",
        [
            item_id,
            number,
            author.value,
            fields,
            stamp,
            ident.get("title"),
            ident.get("brand"),
            ident.get("model"),
            ident.get("condition"),
            ident.get("confidence"),
            price.get("low"),
            price.get("suggested"),
            price.get("high"),
            price.get("currency"),
        ],
    )
    return int(number)
