"""The job queue: items come in (`enqueue`, `record_skipped`), are claimed under a lease, and
leave it done, failed, retried later or released; `dealscout retry` puts failures back.

Every write after a claim is fenced by the lease token (`fenced`): it only counts while the
token still matches, so a process whose lease expired cannot overwrite its successor's work.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dealscout_cli.errors import LeaseLost, UsageError
from dealscout_cli.records import EnqueueReport, JobState, Lease, iso_now, sku_for
from dealscout_cli.store.connection import StoreConnection, inserted_id
from dealscout_cli.store.revisions import record_model_revision

if TYPE_CHECKING:  # pydantic costs ~60 ms to import; `status` never needs it
    from dealscout_cli.models import Identification, PriceEstimate
    from dealscout_cli.scan import FoundItem, FoundPhoto

# Items queued per transaction: the write lock is held for a few milliseconds at a time, so a
# run claiming and finishing items while the scan still queues more is never kept waiting.
ENQUEUE_BATCH = 256

# Why an item that `retry --item` named was not put back, by its job's state.
_NOT_FAILED = {
    "done": "it is done (`snap --force` on its photos makes it again)",
    "queued": "it is already queued",
    "running": "it is running now",
    "batched": "it is waiting in a Gemini batch",
    "skipped": "it was skipped as unusable (fix the file and snap it again)",
}


def _why_not(conn: sqlite3.Connection, item_id: int, error_kind: str | None) -> str:
    row = conn.execute("SELECT state, error_kind FROM jobs WHERE item_id = ?", [item_id]).fetchone()
    if row is None:
        return "no such item"
    state, kind = row
    if state == "failed":
        return f"it failed with {kind}, not {error_kind}"
    return _NOT_FAILED.get(state, f"it is {state}")


@dataclass(frozen=True)
class Requeued:
    """What `requeue_failed` did: how many went back, and why each named item did not."""

    count: int
    not_requeued: dict[int, str] = field(default_factory=dict)


class JobQueue(StoreConnection):
    """Entering the queue, claiming, leases and the outcomes of an attempt."""

    def enqueue(
        self, found: Iterable[FoundItem], *, now: float, force: bool = False, offline: bool = False
    ) -> EnqueueReport:
        """Record scanned items and queue the new ones.

        Items already known keep their state: a rerun does no paid work twice.
        Photos that moved get their new path. `force` re-queues done items too. A real run
        (not `offline`) queues offline placeholders again: nothing offline blocks real work.
        """
        counts = dict.fromkeys(
            ("new", "already_done", "already_queued", "failed_before", "requeued", "redo_offline"),
            0,
        )
        stamp = iso_now(now)
        items = list(found)
        for start in range(0, len(items), ENQUEUE_BATCH):
            with self.transaction() as conn:
                for item in items[start : start + ENQUEUE_BATCH]:
                    item_id, outcome = _enqueue_item(
                        conn, item, stamp, force=force, real=not offline
                    )
                    counts[outcome] += 1
                    _save_photos(conn, item_id, item.photos)
        return EnqueueReport(**counts)

    def known_photos(self) -> dict[bytes, tuple[int, int, str]]:
        """Every photo file the database has seen: its path (bytes) → (size, mtime_ns, sha256)
        where it was last seen. What `scan` needs to not read an unchanged photo again."""
        known: dict[bytes, tuple[int, int, str]] = {}
        rows = self.conn.execute(
            "SELECT path, path_bytes, size_bytes, mtime_ns, sha256 FROM photos"
        )
        for path, path_bytes, size, mtime_ns, sha256 in rows:
            known[path_bytes or path.encode("utf-8", "surrogateescape")] = (size, mtime_ns, sha256)
        return known

    def record_skipped(self, path: str, reason: str, *, source: str, now: float) -> bool:
        """A file found but unusable before any processing (unsupported, unreadable).

        Kept as a `skipped` item so nothing found vanishes; keyed by its path.
        Returns True when it is new.
        """
        import hashlib  # only here: `status` imports the store and never needs it

        key = "path:" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()
        stamp = iso_now(now)
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM items WHERE key = ?", [key]).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE jobs SET error = ? WHERE item_id = ? AND state = 'skipped'",
                    [reason, row[0]],
                )
                return False
            item_id = inserted_id(
                conn.execute(
                    "INSERT INTO items (key, label, source, created_at) VALUES (?,?,?,?)",
                    [key, Path(path).name or path, source, stamp],
                )
            )
            conn.execute(
                """INSERT INTO jobs (item_id, state, error_kind, error, retryable, queued_at, finished_at)
                   VALUES (?, 'skipped', 'bad_input', ?, 0, ?, ?)""",
                [item_id, reason, stamp, stamp],
            )
            return True

    def requeue_failed(
        self, *, now: float, item_ids: Sequence[int] | None = None, error_kind: str | None = None
    ) -> Requeued:
        """Put failed items back in the queue (`dealscout retry`). Finished stages are kept.

        Each of `item_ids` that was not put back is named with why: it does not exist, or its
        state (done, queued, running, skipped, batched), or a failure of another kind."""
        sql = "SELECT item_id FROM jobs WHERE state = 'failed'"
        params: list[Any] = []
        if item_ids is not None:
            sql += f" AND item_id IN ({','.join('?' * len(item_ids))})"
            params += list(item_ids)
        if error_kind is not None:
            sql += " AND error_kind = ?"
            params.append(error_kind)
        with self.transaction() as conn:
            ids = [row[0] for row in conn.execute(sql, params)]
            not_requeued = {
                item_id: _why_not(conn, item_id, error_kind)
                for item_id in dict.fromkeys(item_ids or ())
                if item_id not in ids
            }
            for item_id in ids:
                _requeue(conn, item_id, iso_now(now), clear_stages=False)
        return Requeued(len(ids), not_requeued)

    def requeue_retryable(self, *, now: float) -> int:
        """Re-queue the failures whose cause can pass (rate limits, timeouts, server errors)."""
        return self._requeue_selected(
            "SELECT item_id FROM jobs WHERE state = 'failed' AND retryable = 1", [], now=now
        )

    def _requeue_selected(self, sql: str, params: list[Any], *, now: float) -> int:
        with self.transaction() as conn:
            ids = [row[0] for row in conn.execute(sql, params)]
            for item_id in ids:
                _requeue(conn, item_id, iso_now(now), clear_stages=False)
        return len(ids)

    def claim_next_job(self, owner: str, *, now: float, lease_seconds: float) -> Lease | None:
        """Take the next runnable job: queued and due, or running with an expired lease."""
        with self.transaction() as conn:
            row = conn.execute(
                """SELECT jobs.id, jobs.item_id, items.key, jobs.lease_token, jobs.attempts
                   FROM jobs JOIN items ON items.id = jobs.item_id
                   WHERE (jobs.state = 'queued' AND jobs.not_before <= ?)
                      OR (jobs.state = 'running' AND jobs.lease_expires_at < ?)
                   ORDER BY jobs.not_before, jobs.id LIMIT 1""",
                [now, now],
            ).fetchone()
            if row is None:
                return None
            job_id, item_id, key, token, attempts = row
            expires = now + lease_seconds
            conn.execute(
                """UPDATE jobs SET state = 'running', lease_owner = ?, lease_token = ?,
                       lease_expires_at = ?, attempts = ?, started_at = ?
                   WHERE id = ?""",
                [owner, token + 1, expires, attempts + 1, iso_now(now), job_id],
            )
        return Lease(job_id, item_id, key, token + 1, owner, attempts + 1, expires)

    def heartbeat(self, lease: Lease, *, now: float, lease_seconds: float) -> bool:
        """Extend a lease. False when it was lost (expired and taken by someone else)."""
        with self.transaction() as conn:
            cur = conn.execute(
                """UPDATE jobs SET lease_expires_at = ?
                   WHERE id = ? AND lease_token = ? AND state = 'running'""",
                [now + lease_seconds, lease.job_id, lease.token],
            )
            return cur.rowcount == 1

    def release(self, lease: Lease, *, now: float, reason: str | None = None) -> None:
        """Give a job back to the queue unfinished (shutdown); the attempt does not count."""
        with self.transaction() as conn:
            fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                       attempts = MAX(attempts - 1, 0), error = COALESCE(?, error)""",
                [reason],
            )

    def retry_later(self, lease: Lease, *, now: float, delay: float, kind: str, error: str) -> None:
        """A retryable failure: back in the queue, due after `delay` seconds."""
        with self.transaction() as conn:
            fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                       not_before = ?, error_kind = ?, error = ?, retryable = 1""",
                [now + delay, kind, error],
            )

    def fail(self, lease: Lease, *, now: float, kind: str, error: str, retryable: bool) -> None:
        with self.transaction() as conn:
            fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_expires_at = NULL,
                       error_kind = ?, error = ?, retryable = ?, finished_at = ?""",
                [kind, error, int(retryable), iso_now(now)],
            )

    def complete(
        self,
        lease: Lease,
        *,
        now: float,
        run_id: int | None,
        identification: Identification,
        price: PriceEstimate | None,
        prompt_version: str,
        vision_model: str,
        pricing_model: str | None,
        offline: bool,
    ) -> None:
        """Write the listing and mark the job done, in one transaction, fenced by the lease.
        The listing is also the item's new current revision, unless the seller's edit is
        current and the seller did not ask again (`revisions.record_model_revision`)."""
        stamp = iso_now(now)
        listing = [
            lease.item_id,
            sku_for(lease.item_key),
            identification.title,
            identification.condition.value,
            identification.ebay_condition_id,
            price.suggested_cents() if price else None,
            price.currency if price else None,
            identification.model_dump_json(),
            price.model_dump_json() if price else None,
            prompt_version,
            vision_model,
            pricing_model if price else None,
            int(offline),
            stamp,
        ]
        with self.transaction() as conn:
            fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL,
                       error_kind = NULL, error = NULL, retryable = NULL, finished_at = ?,
                       run_id = ?""",
                [stamp, run_id],
            )
            conn.execute(_UPSERT_LISTING, listing)
            record_model_revision(conn, lease.item_id, identification, price, stamp)


_UPSERT_LISTING = """
    INSERT INTO listings (item_id, sku, title, condition, ebay_condition_id,
        price_suggested_cents, currency, identification, price, prompt_version,
        vision_model, pricing_model, offline, created_at)
    VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT (item_id) DO UPDATE SET title = excluded.title,
        condition = excluded.condition, ebay_condition_id = excluded.ebay_condition_id,
        price_suggested_cents = excluded.price_suggested_cents,
        currency = excluded.currency, identification = excluded.identification,
        price = excluded.price, prompt_version = excluded.prompt_version,
        vision_model = excluded.vision_model, pricing_model = excluded.pricing_model,
        offline = excluded.offline, created_at = excluded.created_at"""


def fenced(conn: sqlite3.Connection, lease: Lease, sql: str, params: list[Any]) -> None:
    """Run an UPDATE of the lease's job only while the lease is still held; LeaseLost if not."""
    cur = conn.execute(
        sql + " WHERE id = ? AND lease_token = ? AND state = 'running'",
        [*params, lease.job_id, lease.token],
    )
    if cur.rowcount != 1:
        raise LeaseLost(f"item {lease.item_id}: lease lost (taken over by another run)")


def _enqueue_item(
    conn: sqlite3.Connection, item: FoundItem, stamp: str, *, force: bool, real: bool
) -> tuple[int, str]:
    """The item's id, and which `EnqueueReport` count it adds to."""
    row = conn.execute("SELECT id FROM items WHERE key = ?", [item.key]).fetchone()
    if row is None:
        return _insert_item(conn, item, stamp), "new"
    item_id: int = row[0]
    if item.notes:
        conn.execute("UPDATE items SET notes = ? WHERE id = ?", [item.notes, item_id])
    state = conn.execute("SELECT state FROM jobs WHERE item_id = ?", [item_id]).fetchone()[0]
    if force and state in (JobState.DONE, JobState.FAILED):
        _requeue(conn, item_id, stamp, clear_stages=True)
        return item_id, "requeued"
    if real and state != JobState.RUNNING and _has_offline_work(conn, item_id):
        _requeue(conn, item_id, stamp, clear_stages=True)
        return item_id, "redo_offline"
    if state == JobState.DONE:
        return item_id, "already_done"
    if state == JobState.FAILED:
        return item_id, "failed_before"
    return item_id, "already_queued"


def _has_offline_work(conn: sqlite3.Connection, item_id: int) -> bool:
    """An offline placeholder listing or stage: emulator output, never a real answer."""
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM listings WHERE item_id = ? AND offline = 1)
               OR EXISTS (SELECT 1 FROM stages WHERE item_id = ? AND offline = 1)""",
        [item_id, item_id],
    ).fetchone()
    return bool(row[0])


def _insert_item(conn: sqlite3.Connection, item: FoundItem, stamp: str) -> int:
    item_id = inserted_id(
        conn.execute(
            "INSERT INTO items (key, label, source, notes, created_at) VALUES (?,?,?,?,?)",
            [item.key, item.label, item.source, item.notes, stamp],
        )
    )
    conn.execute(
        "INSERT INTO jobs (item_id, state, queued_at) VALUES (?, 'queued', ?)", [item_id, stamp]
    )
    return item_id


def _save_photos(conn: sqlite3.Connection, item_id: int, photos: Sequence[FoundPhoto]) -> None:
    """Insert the item's photos, or refresh where a known one is now (moved, renamed)."""
    for position, photo in enumerate(photos):
        conn.execute(
            """INSERT INTO photos (item_id, position, path, path_bytes, sha256, size_bytes,
                   mtime_ns) VALUES (?,?,?,?,?,?,?)
               ON CONFLICT (item_id, sha256) DO UPDATE SET path = excluded.path,
                   path_bytes = excluded.path_bytes, mtime_ns = excluded.mtime_ns,
                   position = excluded.position
               -- unchanged (a rerun): nothing to write
               WHERE photos.path IS NOT excluded.path
                   OR photos.path_bytes IS NOT excluded.path_bytes
                   OR photos.mtime_ns IS NOT excluded.mtime_ns
                   OR photos.position IS NOT excluded.position""",
            [
                item_id,
                position,
                *_path_columns(photo.path),
                photo.sha256,
                photo.size_bytes,
                photo.mtime_ns,
            ],
        )


def requeue_for_review(conn: sqlite3.Connection, item_id: int, stamp: str) -> None:
    """Queue an item to be identified and priced again ("ask again" in `dealscout review`):
    its stages go, so the next run redoes both; its revisions stay."""
    row = conn.execute("SELECT state FROM jobs WHERE item_id = ?", [item_id]).fetchone()
    if row is None:
        raise UsageError(f"no item with id {item_id}")
    if row[0] in ("running", "batched", "skipped"):
        raise UsageError(f"item {item_id} cannot be asked again: {_NOT_FAILED[row[0]]}")
    _requeue(conn, item_id, stamp, clear_stages=True)


def _requeue(conn: sqlite3.Connection, item_id: int, stamp: str, *, clear_stages: bool) -> None:
    conn.execute(
        """UPDATE jobs SET state = 'queued', attempts = 0, lease_owner = NULL,
               lease_expires_at = NULL, not_before = 0, error_kind = NULL, error = NULL,
               retryable = NULL, queued_at = ?, started_at = NULL, finished_at = NULL
           WHERE item_id = ?""",
        [stamp, item_id],
    )
    if clear_stages:
        conn.execute("DELETE FROM stages WHERE item_id = ?", [item_id])
        conn.execute("DELETE FROM listings WHERE item_id = ?", [item_id])


def _path_columns(path: Path | str) -> tuple[str, bytes | None]:
    """SQLite text must be UTF-8; a file name that is not keeps its exact bytes beside a printable form."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), raw
