"""One item's record beyond its place in the queue: its photos, its finished pipeline stages
(identification kept when pricing fails), the model calls paid for it, and facts found on the
way (quality warnings, barcodes)."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from dealscout_cli.errors import StoreError
from dealscout_cli.records import CallRecord, ItemRecord, Lease, PhotoRecord, Stage, iso_now
from dealscout_cli.store.connection import StoreConnection
from dealscout_cli.store.queue import fenced


class ItemRecords(StoreConnection):
    """Items, their saved stages and their calls."""

    def item(self, item_id: int) -> ItemRecord:
        row = self.conn.execute(
            """SELECT items.id, items.key, items.label, items.source, items.notes,
                      reviews.note AS review_note
               FROM items LEFT JOIN reviews ON reviews.item_id = items.id WHERE items.id = ?""",
            [item_id],
        ).fetchone()
        if row is None:
            raise StoreError(f"no item with id {item_id}; `dealscout listings` shows the ids")
        photos = tuple(
            PhotoRecord(real_path(p["path"], p["path_bytes"]), p["sha256"], p["size_bytes"])
            for p in self.conn.execute(
                """SELECT path, path_bytes, sha256, size_bytes FROM photos WHERE item_id = ?
                   ORDER BY position, id""",
                [item_id],
            )
        )
        notes = seller_notes(row["notes"], row["review_note"])
        return ItemRecord(row["id"], row["key"], row["label"], row["source"], notes, photos)

    def saved_stage(self, item_id: int, stage: Stage) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT output, model, offline FROM stages WHERE item_id = ? AND stage = ?",
            [item_id, stage.value],
        ).fetchone()
        if row is None:
            return None
        return {
            "output": json.loads(row["output"]),
            "model": row["model"],
            "offline": bool(row["offline"]),
        }

    def save_stage(
        self,
        lease: Lease,
        stage: Stage,
        output: str,
        *,
        model: str,
        prompt_version: str,
        offline: bool,
        now: float,
    ) -> None:
        """A finished stage, kept even if a later stage fails (fenced like completion)."""
        with self.transaction() as conn:
            fenced(conn, lease, "UPDATE jobs SET lease_expires_at = lease_expires_at", [])
            _write_stage(conn, lease.item_id, stage, output, model, prompt_version, offline, now)

    def save_grounded_price(
        self,
        item_id: int,
        output: str,
        *,
        model: str,
        prompt_version: str,
        offline: bool,
        now: float,
    ) -> None:
        """A grounded price with its web sources, as the item's price stage (`--grounded-prices`).

        Unfenced: it records what was paid for; the listing itself is written by `complete`."""
        with self.transaction() as conn:
            _write_stage(conn, item_id, Stage.PRICE, output, model, prompt_version, offline, now)

    def record_call(
        self, run_id: int | None, call: CallRecord, *, batch_id: int | None = None
    ) -> None:
        """One model call; `batch_id` when it was a request of a batch (billed at the batch price)."""
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO calls (run_id, item_id, stage, model, attempt, started_at,
                       started_epoch, latency_ms, outcome, http_status, input_tokens,
                       output_tokens, cost_micro_usd, error, offline, batch_id)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                [
                    run_id,
                    call.item_id,
                    call.stage,
                    call.model,
                    call.attempt,
                    iso_now(call.started_epoch),
                    call.started_epoch,
                    call.latency_ms,
                    call.outcome,
                    call.http_status,
                    call.input_tokens,
                    call.output_tokens,
                    call.cost_micro_usd,
                    call.error,
                    int(call.offline),
                    batch_id,
                ],
            )

    def keep_unrecorded(self, run_id: int | None, calls: list[CallRecord]) -> Path:
        """The last resort for paid calls the database would not take (disk full, a lock
        held past the busy timeout): one JSON line each beside the database, read back into
        `calls` by the next `Store.open` that can write (`import_unrecorded`)."""
        side = unrecorded_path(self.path)
        with side.open("a", encoding="utf-8") as out:
            for call in calls:
                out.write(json.dumps({"run_id": run_id, **dataclasses.asdict(call)}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        return side

    def import_unrecorded(self) -> int:
        """Record the calls `keep_unrecorded` set aside; the file goes once they are in."""
        side = unrecorded_path(self.path)
        if not side.exists():
            return 0
        lines = [line for line in side.read_text(encoding="utf-8").splitlines() if line.strip()]
        calls = [json.loads(line) for line in lines]
        for fields in calls:
            run_id = fields.pop("run_id", None)
            call = CallRecord(**fields)
            if not self.call_recorded(call):
                self.record_call(run_id, call)
        side.unlink()
        return len(calls)

    def call_recorded(self, call: CallRecord) -> bool:
        """True when this attempt of this call (same item, stage, model, attempt and start
        instant) is recorded already: a fleet result seen twice is recorded once."""
        row = self.conn.execute(
            """SELECT 1 FROM calls WHERE item_id = ? AND stage = ? AND model = ? AND attempt = ?
               AND started_epoch = ? LIMIT 1""",
            [call.item_id, call.stage, call.model, call.attempt, call.started_epoch],
        ).fetchone()
        return row is not None

    def set_item_facts(
        self,
        item_id: int,
        *,
        quality_warnings: list[str] | None = None,
        barcodes: list[str] | None = None,
    ) -> None:
        with self.transaction() as conn:
            if quality_warnings is not None:
                conn.execute(
                    "UPDATE items SET quality_warnings = ? WHERE id = ?",
                    [json.dumps(quality_warnings), item_id],
                )
            if barcodes is not None:
                conn.execute(
                    "UPDATE items SET barcodes = ? WHERE id = ?", [json.dumps(barcodes), item_id]
                )


def _write_stage(
    conn: sqlite3.Connection,
    item_id: int,
    stage: Stage,
    output: str,
    model: str,
    prompt_version: str,
    offline: bool,
    now: float,
) -> None:
    conn.execute(
        """INSERT OR REPLACE INTO stages (item_id, stage, output, model, prompt_version,
               offline, created_at) VALUES (?,?,?,?,?,?,?)""",
        [item_id, stage.value, output, model, prompt_version, int(offline), iso_now(now)],
    )


def seller_notes(notes: str | None, review_note: str | None) -> str | None:
    """What the identify prompt is told about the item: the notes found with its photos, and
    the seller's correction from `dealscout review` ("ask again"), which stays true for every
    later identification of the item."""
    if review_note:
        correction = f"the seller corrected an earlier draft: {review_note}"
        return f"{notes}; {correction}" if notes else correction
    return notes


def real_path(path: str, path_bytes: bytes | None) -> str:
    """The exact file name: its original bytes when it was not valid UTF-8 (see `_path_columns`)."""
    return os.fsdecode(path_bytes) if path_bytes is not None else path


def unrecorded_path(db: Path) -> Path:
    return db.with_name(db.name + "-unrecorded-calls.jsonl")
