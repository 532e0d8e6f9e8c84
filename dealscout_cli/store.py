"""The SQLite record: the schema, and every query dealscout runs.

Tables (open the file with `sqlite-utils` or Datasette to look around):
    runs      one row per `snap` process: when, where, how it ended
    items     one row per product, keyed by its photos' content (sha256)
    photos    the files that make up each item
    jobs      one per item: its state, lease, attempts and last error (the queue)
    stages    finished pipeline stages per item (identification kept when pricing fails)
    calls     every paid model call: stage, model, status, tokens, latency, cost
    listings  the drafts

Concurrency: WAL mode and a busy timeout, so several processes can share one
file; every claim runs in `BEGIN IMMEDIATE`, so two claimers never take the same
job. A lease carries a fencing token (`lease_token`): completion only counts
when the token still matches, so a process whose lease expired cannot overwrite
the work of the one that took the job over.

Time: lease and retry times are unix seconds (REAL) passed in by the caller, so
tests inject a clock; human-facing times are ISO-8601 UTC text.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dealscout_cli.errors import LeaseLost, StoreError
from dealscout_cli.records import (
    BATCHED,
    CallRecord,
    EnqueueReport,
    ItemRecord,
    JobState,
    Lease,
    PhotoRecord,
    Stage,
    iso_now,
    sku_for,
)

if TYPE_CHECKING:  # pydantic costs ~60 ms to import; `status` never needs it
    from dealscout_cli.models import Identification, Listing, PriceEstimate

BUSY_TIMEOUT_MS = 15_000


# ---------------------------------------------------------------- migrations
# Append-only: a shipped step is never edited; add m002_... instead.

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            owner TEXT NOT NULL UNIQUE,
            command TEXT NOT NULL,          -- JSON: the options of the run (never the API key)
            offline INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'running',   -- running, finished, interrupted, stopped, crashed
            summary TEXT                    -- JSON: counts at the end
        );
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,       -- sha256 over the sorted sha256s of its photos
            label TEXT NOT NULL,            -- file stem, folder name or manifest item
            source TEXT NOT NULL,           -- folder or manifest:line it was found in
            notes TEXT,
            quality_warnings TEXT NOT NULL DEFAULT '[]',   -- JSON list
            barcodes TEXT NOT NULL DEFAULT '[]',           -- JSON list
            created_at TEXT NOT NULL
        );
        CREATE TABLE photos (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id),
            position INTEGER NOT NULL,
            path TEXT NOT NULL,             -- where it was last seen (printable form)
            path_bytes BLOB,                -- the exact file name when it is not valid UTF-8
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            UNIQUE (item_id, sha256)
        );
        CREATE INDEX photos_sha256 ON photos(sha256);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL UNIQUE REFERENCES items(id),
            state TEXT NOT NULL,            -- queued, running, done, failed, skipped
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_token INTEGER NOT NULL DEFAULT 0,   -- fencing token, +1 on every claim
            lease_expires_at REAL,          -- unix seconds
            not_before REAL NOT NULL DEFAULT 0,       -- unix seconds; retry delay
            error_kind TEXT,                -- bad_photo, rate_limited, timeout, bad_output, blocked, ...
            error TEXT,
            retryable INTEGER,
            queued_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            run_id INTEGER REFERENCES runs(id)
        );
        CREATE INDEX jobs_claim ON jobs(state, not_before);
        CREATE TABLE stages (
            item_id INTEGER NOT NULL REFERENCES items(id),
            stage TEXT NOT NULL,            -- identify, price
            output TEXT NOT NULL,           -- JSON, validated
            model TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            offline INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            PRIMARY KEY (item_id, stage)
        );
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id),
            item_id INTEGER REFERENCES items(id),
            stage TEXT NOT NULL,
            model TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            started_epoch REAL NOT NULL,
            latency_ms INTEGER NOT NULL,
            outcome TEXT NOT NULL,          -- ok, rate_limited, quota_exhausted, server_error, timeout, ...
            http_status INTEGER,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_micro_usd INTEGER,         -- millionths of a USD; NULL when the model has no price
            error TEXT,
            offline INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX calls_item ON calls(item_id);
        CREATE INDEX calls_time ON calls(started_epoch);
        CREATE TABLE listings (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL UNIQUE REFERENCES items(id),
            sku TEXT NOT NULL,
            title TEXT NOT NULL,
            condition TEXT NOT NULL,
            ebay_condition_id INTEGER NOT NULL,
            price_suggested_cents INTEGER,
            currency TEXT,
            identification TEXT NOT NULL,   -- JSON
            price TEXT,                     -- JSON, NULL when pricing failed
            prompt_version TEXT NOT NULL,
            vision_model TEXT NOT NULL,
            pricing_model TEXT,
            offline INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        );
        CREATE VIEW item_overview AS
            SELECT items.id, items.label, jobs.state, jobs.attempts, jobs.error_kind, jobs.error,
                   listings.title, listings.price_suggested_cents, listings.currency,
                   (SELECT COUNT(*) FROM photos WHERE photos.item_id = items.id) AS photo_count,
                   (SELECT COALESCE(SUM(cost_micro_usd), 0) FROM calls
                     WHERE calls.item_id = items.id) AS cost_micro_usd
            FROM items JOIN jobs ON jobs.item_id = items.id
            LEFT JOIN listings ON listings.item_id = items.id;
        """,
    ),
]

MIGRATIONS.append(
    (
        "m002_run_limits",
        """
        -- JSON list: each model's limiter as the run last saw it (rate, in flight, cap, pause)
        ALTER TABLE runs ADD COLUMN limits TEXT;
        -- the last time a run wrote anything: a run that stopped writing long ago was killed
        ALTER TABLE runs ADD COLUMN seen_at TEXT;
        """,
    )
)

MIGRATIONS.append(
    (
        "m003_batches",
        """
        -- Gemini Batch Mode jobs (`snap --batch`): one row per submitted batch
        CREATE TABLE batches (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,             -- Google's batches/...
            model TEXT NOT NULL,
            stage TEXT NOT NULL,            -- identify, price
            state TEXT NOT NULL,            -- pending, running, succeeded, failed, cancelled, expired
            collected INTEGER NOT NULL DEFAULT 0,   -- 1 once its results are in the store
            created_at TEXT NOT NULL,
            created_epoch REAL NOT NULL,
            polled_at TEXT,
            finished_at TEXT,
            item_ids TEXT NOT NULL,         -- JSON list, in request order
            run_id INTEGER REFERENCES runs(id),
            offline INTEGER NOT NULL DEFAULT 0,
            grounded INTEGER NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE INDEX batches_open ON batches(collected, state);
        -- the batch a job waits on while its state is 'batched'
        ALTER TABLE jobs ADD COLUMN batch_id INTEGER REFERENCES batches(id);
        -- the batch a call was part of (NULL: an online call)
        ALTER TABLE calls ADD COLUMN batch_id INTEGER REFERENCES batches(id);
        """,
    )
)

MIGRATIONS_TABLE = "_dealscout_migrations"


def _applied(conn: sqlite3.Connection) -> set[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", [MIGRATIONS_TABLE]
    ).fetchone()
    if not exists:
        return set()
    return {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}


def _migrate(conn: sqlite3.Connection) -> None:
    if {name for name, _ in MIGRATIONS} <= _applied(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)"
        )
        done = _applied(conn)  # again, inside the lock: another process may have won
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", [name, iso_now()])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _enter_wal(conn: sqlite3.Connection) -> str:
    """Switch the file to WAL and return the journal mode it ends up in.

    The switch needs the file to itself and SQLite answers "database is locked" at once instead
    of waiting out the busy timeout, so several processes opening a new file together (two
    `snap`s started by one cron line, a fleet of workers) would fail at random. Retry instead,
    for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def _split_sql(script: str) -> list[str]:
    # sqlite3.executescript() commits on its own; splitting keeps the migration in our transaction.
    statements, current = [], []
    for line in script.splitlines():
        current.append(line)
        candidate = "\n".join(current)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate.strip())
            current = []
    return [s for s in statements if s]


# ---------------------------------------------------------------- the store


class Store:
    """One SQLite file. Open with `Store.open(path)`; safe to share between processes."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Store:
        path = Path(path)
        if not path.exists() and not create:
            raise StoreError(
                f"no database at {path}; run `dealscout snap PHOTOS` first or pass --db"
            )
        if path.exists() and not os.access(path, os.W_OK):
            raise StoreError(
                f"{path} is read-only; fix its permissions or pass --db with a writable path"
            )
        if path.exists() and path.is_dir():
            raise StoreError(
                f"{path} is a directory; --db wants a file path such as {path}/dealscout.db"
            )
        try:
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = _enter_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives process kills
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain_open_error(path, exc)) from None
        if mode.lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode ({mode}); is the file read-only?")
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so two writers never deadlock."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(_explain_write_error(self.path, exc)) from None
        try:
            yield self.conn
        except sqlite3.OperationalError as exc:
            self.conn.execute("ROLLBACK")
            if any(word in str(exc) for word in ("readonly", "locked", "disk", "full")):
                raise StoreError(_explain_write_error(self.path, exc)) from None
            raise
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.conn.execute("ROLLBACK")
                raise StoreError(_explain_write_error(self.path, exc)) from None

    # ------------------------------------------------------------ runs

    def start_run(self, owner: str, command: dict[str, Any], *, offline: bool, now: float) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs (started_at, host, pid, owner, command, offline) VALUES (?,?,?,?,?,?)",
                [
                    iso_now(now),
                    socket.gethostname(),
                    os.getpid(),
                    owner,
                    json.dumps(command),
                    int(offline),
                ],
            )
            return int(cur.lastrowid)

    def update_run_limits(self, run_id: int, limits: list[dict[str, Any]], *, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET limits = ?, seen_at = ? WHERE id = ?",
                [json.dumps(limits), iso_now(now), run_id],
            )

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any], *, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                [iso_now(now), status, json.dumps(summary), run_id],
            )

    # ------------------------------------------------------------ enqueue

    def enqueue(self, found: Iterable[Any], *, now: float, force: bool = False) -> EnqueueReport:
        """Record scanned items (scan.FoundItem) and queue the new ones.

        Items already known keep their state: a rerun does no paid work twice.
        Photos that moved get their new path. `force` re-queues done items too.
        """
        counts = dict.fromkeys(
            ("new", "already_done", "already_queued", "failed_before", "requeued"), 0
        )
        stamp = iso_now(now)
        with self.transaction() as conn:
            for item in found:
                row = conn.execute("SELECT id FROM items WHERE key = ?", [item.key]).fetchone()
                if row is None:
                    item_id = conn.execute(
                        "INSERT INTO items (key, label, source, notes, created_at) VALUES (?,?,?,?,?)",
                        [item.key, item.label, item.source, item.notes, stamp],
                    ).lastrowid
                    conn.execute(
                        "INSERT INTO jobs (item_id, state, queued_at) VALUES (?, 'queued', ?)",
                        [item_id, stamp],
                    )
                    counts["new"] += 1
                else:
                    item_id = row[0]
                    if item.notes:
                        conn.execute(
                            "UPDATE items SET notes = ? WHERE id = ?", [item.notes, item_id]
                        )
                    state = conn.execute(
                        "SELECT state FROM jobs WHERE item_id = ?", [item_id]
                    ).fetchone()[0]
                    if force and state in (JobState.DONE, JobState.FAILED):
                        self._requeue(conn, item_id, stamp, clear_stages=True)
                        counts["requeued"] += 1
                    elif state == JobState.DONE:
                        counts["already_done"] += 1
                    elif state == JobState.FAILED:
                        counts["failed_before"] += 1
                    else:
                        counts["already_queued"] += 1
                for position, photo in enumerate(item.photos):
                    conn.execute(
                        """INSERT INTO photos (item_id, position, path, path_bytes, sha256, size_bytes,
                               mtime_ns) VALUES (?,?,?,?,?,?,?)
                           ON CONFLICT (item_id, sha256) DO UPDATE SET path = excluded.path,
                               path_bytes = excluded.path_bytes, mtime_ns = excluded.mtime_ns,
                               position = excluded.position""",
                        [
                            item_id,
                            position,
                            *_path_columns(photo.path),
                            photo.sha256,
                            photo.size_bytes,
                            photo.mtime_ns,
                        ],
                    )
        return EnqueueReport(**counts)

    def record_skipped(self, path: str, reason: str, *, source: str, now: float) -> bool:
        """A file found but unusable before any processing (unsupported, unreadable).

        Kept as a `skipped` item so nothing found vanishes; keyed by its path.
        Returns True when it is new.
        """
        import hashlib

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
            item_id = conn.execute(
                "INSERT INTO items (key, label, source, created_at) VALUES (?,?,?,?)",
                [key, Path(path).name or path, source, stamp],
            ).lastrowid
            conn.execute(
                """INSERT INTO jobs (item_id, state, error_kind, error, retryable, queued_at, finished_at)
                   VALUES (?, 'skipped', 'bad_input', ?, 0, ?, ?)""",
                [item_id, reason, stamp, stamp],
            )
            return True

    def _requeue(
        self, conn: sqlite3.Connection, item_id: int, stamp: str, *, clear_stages: bool
    ) -> None:
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

    def requeue_failed(
        self, *, now: float, item_ids: Sequence[int] | None = None, error_kind: str | None = None
    ) -> int:
        """Put failed items back in the queue (`dealscout retry`). Finished stages are kept."""
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
            for item_id in ids:
                self._requeue(conn, item_id, iso_now(now), clear_stages=False)
        return len(ids)

    def requeue_retryable(self, *, now: float) -> int:
        """Re-queue the failures whose cause can pass (rate limits, timeouts, server errors)."""
        with self.transaction() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT item_id FROM jobs WHERE state = 'failed' AND retryable = 1"
                )
            ]
            for item_id in ids:
                self._requeue(conn, item_id, iso_now(now), clear_stages=False)
        return len(ids)

    # ------------------------------------------------------------ the queue

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

    def _fenced(self, conn: sqlite3.Connection, lease: Lease, sql: str, params: list[Any]) -> None:
        cur = conn.execute(
            sql + " WHERE id = ? AND lease_token = ? AND state = 'running'",
            [*params, lease.job_id, lease.token],
        )
        if cur.rowcount != 1:
            raise LeaseLost(f"item {lease.item_id}: lease lost (taken over by another run)")

    def release(self, lease: Lease, *, now: float, reason: str | None = None) -> None:
        """Give a job back to the queue unfinished (shutdown); the attempt does not count."""
        with self.transaction() as conn:
            self._fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                       attempts = MAX(attempts - 1, 0), error = COALESCE(?, error)""",
                [reason],
            )

    def retry_later(self, lease: Lease, *, now: float, delay: float, kind: str, error: str) -> None:
        """A retryable failure: back in the queue, due after `delay` seconds."""
        with self.transaction() as conn:
            self._fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                       not_before = ?, error_kind = ?, error = ?, retryable = 1""",
                [now + delay, kind, error],
            )

    def fail(self, lease: Lease, *, now: float, kind: str, error: str, retryable: bool) -> None:
        with self.transaction() as conn:
            self._fenced(
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
        """Write the listing and mark the job done, in one transaction, fenced by the lease."""
        stamp = iso_now(now)
        with self.transaction() as conn:
            self._fenced(
                conn,
                lease,
                """UPDATE jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL,
                       error_kind = NULL, error = NULL, retryable = NULL, finished_at = ?,
                       run_id = ?""",
                [stamp, run_id],
            )
            conn.execute(
                """INSERT INTO listings (item_id, sku, title, condition, ebay_condition_id,
                       price_suggested_cents, currency, identification, price, prompt_version,
                       vision_model, pricing_model, offline, created_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT (item_id) DO UPDATE SET title = excluded.title,
                       condition = excluded.condition, ebay_condition_id = excluded.ebay_condition_id,
                       price_suggested_cents = excluded.price_suggested_cents,
                       currency = excluded.currency, identification = excluded.identification,
                       price = excluded.price, prompt_version = excluded.prompt_version,
                       vision_model = excluded.vision_model, pricing_model = excluded.pricing_model,
                       offline = excluded.offline, created_at = excluded.created_at""",
                [
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
                ],
            )

    def requeue_expired_leases(self, *, now: float) -> int:
        """Turn jobs whose lease ran out back into queued ones (claim does this lazily too)."""
        with self.transaction() as conn:
            cur = conn.execute(
                """UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL
                   WHERE state = 'running' AND lease_expires_at < ?""",
                [now],
            )
            return cur.rowcount

    # ------------------------------------------------------------ stages, calls, item facts

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
            self._fenced(conn, lease, "UPDATE jobs SET lease_expires_at = lease_expires_at", [])
            conn.execute(
                """INSERT OR REPLACE INTO stages (item_id, stage, output, model, prompt_version,
                       offline, created_at) VALUES (?,?,?,?,?,?,?)""",
                [
                    lease.item_id,
                    stage.value,
                    output,
                    model,
                    prompt_version,
                    int(offline),
                    iso_now(now),
                ],
            )

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

    def item(self, item_id: int) -> ItemRecord:
        row = self.conn.execute(
            "SELECT id, key, label, source, notes FROM items WHERE id = ?", [item_id]
        ).fetchone()
        if row is None:
            raise StoreError(f"no item with id {item_id}; `dealscout listings` shows the ids")
        photos = tuple(
            PhotoRecord(_real_path(p["path"], p["path_bytes"]), p["sha256"], p["size_bytes"])
            for p in self.conn.execute(
                """SELECT path, path_bytes, sha256, size_bytes FROM photos WHERE item_id = ?
                   ORDER BY position, id""",
                [item_id],
            )
        )
        return ItemRecord(row["id"], row["key"], row["label"], row["source"], row["notes"], photos)

    # ------------------------------------------------------------ reading

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        for state, n in self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    def listings(
        self, *, item_id: int | None = None, include_offline: bool = True
    ) -> list[Listing]:
        from dealscout_cli.models import Identification, Listing, ListingPhoto, PriceEstimate

        sql = """SELECT listings.*, items.key, items.notes, items.quality_warnings, items.barcodes
                 FROM listings JOIN items ON items.id = listings.item_id"""
        params: list[Any] = []
        clauses = []
        if item_id is not None:
            clauses.append("listings.item_id = ?")
            params.append(item_id)
        if not include_offline:
            clauses.append("listings.offline = 0")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY listings.item_id"
        result = []
        for row in self.conn.execute(sql, params).fetchall():
            photos = [
                ListingPhoto(path=p["path"], sha256=p["sha256"])
                for p in self.conn.execute(
                    "SELECT path, sha256 FROM photos WHERE item_id = ? ORDER BY position, id",
                    [row["item_id"]],
                )
            ]
            result.append(
                Listing(
                    item_id=row["item_id"],
                    item_key=row["key"],
                    sku=row["sku"],
                    identification=Identification.model_validate_json(row["identification"]),
                    price=PriceEstimate.model_validate_json(row["price"]) if row["price"] else None,
                    photos=photos,
                    barcodes=json.loads(row["barcodes"]),
                    quality_warnings=json.loads(row["quality_warnings"]),
                    notes=row["notes"],
                    prompt_version=row["prompt_version"],
                    vision_model=row["vision_model"],
                    pricing_model=row["pricing_model"],
                    offline=bool(row["offline"]),
                    created_at=row["created_at"],
                )
            )
        return result

    def calls_for_item(self, item_id: int) -> list[dict[str, Any]]:
        return [
            dict(row)
            for row in self.conn.execute(
                """SELECT stage, model, attempt, started_at, latency_ms, outcome, http_status,
                          input_tokens, output_tokens, cost_micro_usd, error
                   FROM calls WHERE item_id = ? ORDER BY id""",
                [item_id],
            )
        ]

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
        return [dict(row) for row in self.conn.execute(sql)]

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
        row = self.conn.execute(
            f"""SELECT COUNT(*) AS calls, COALESCE(SUM(input_tokens), 0) AS input_tokens,
                       COALESCE(SUM(output_tokens), 0) AS output_tokens,
                       COALESCE(SUM(cost_micro_usd), 0) AS cost_micro_usd,
                       SUM(outcome = 'rate_limited') AS rate_limited,
                       SUM(cost_micro_usd IS NULL AND outcome = 'ok') AS unpriced
                FROM calls {where}""",
            params,
        ).fetchone()
        return {k: (row[k] or 0) for k in row.keys()}  # noqa: SIM118 (sqlite3.Row iterates values)

    def model_activity(self, *, now: float, window: float = 60.0) -> list[dict[str, Any]]:
        """Per model over the last `window` seconds: requests, 429s, mean latency."""
        return [
            dict(row)
            for row in self.conn.execute(
                """SELECT model, COUNT(*) AS requests, SUM(outcome = 'rate_limited') AS rate_limited,
                          CAST(AVG(latency_ms) AS INTEGER) AS mean_latency_ms
                   FROM calls WHERE started_epoch >= ? GROUP BY model ORDER BY model""",
                [now - window],
            )
        ]

    def states_by_key(self, keys: list[str]) -> dict[str, tuple[str, bool]]:
        """For known item keys: (job state, whether its identification is already saved)."""
        known: dict[str, tuple[str, bool]] = {}
        for start in range(0, len(keys), 500):  # SQLite's default limit is 999 bound parameters
            chunk = keys[start : start + 500]
            rows = self.conn.execute(
                f"""SELECT items.key, jobs.state,
                           EXISTS (SELECT 1 FROM stages WHERE stages.item_id = items.id
                                   AND stages.stage = 'identify') AS identified
                    FROM items JOIN jobs ON jobs.item_id = items.id
                    WHERE items.key IN ({",".join("?" * len(chunk))})""",
                chunk,
            )
            for key, state, identified in rows:
                known[key] = (state, bool(identified))
        return known

    def offline_listing_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM listings WHERE offline = 1").fetchone()[0]

    def done_since(self, since_iso: str) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE state = 'done' AND finished_at >= ?", [since_iso]
        ).fetchone()[0]

    def runs(self, limit: int = 5) -> list[dict[str, Any]]:
        return [
            dict(row)
            for row in self.conn.execute(
                "SELECT id, started_at, finished_at, seen_at, host, pid, status, offline, summary,"
                " limits FROM runs ORDER BY id DESC LIMIT ?",
                [limit],
            )
        ]

    def running_leases(self, *, now: float) -> list[dict[str, Any]]:
        return [
            dict(row)
            for row in self.conn.execute(
                """SELECT jobs.item_id, items.label, jobs.lease_owner, jobs.attempts,
                          jobs.lease_expires_at - ? AS expires_in
                   FROM jobs JOIN items ON items.id = jobs.item_id
                   WHERE jobs.state = 'running' ORDER BY jobs.started_at""",
                [now],
            )
        ]

    # ------------------------------------------------------------ Gemini Batch Mode

    def hand_to_batch(
        self,
        leases: Sequence[Lease],
        *,
        name: str,
        model: str,
        stage: Stage,
        now: float,
        run_id: int | None,
        offline: bool,
        grounded: bool = False,
    ) -> tuple[int, list[int]]:
        """Record a submitted batch and park its jobs in state 'batched' (leases released).

        Returns the batch id and the item ids whose lease was lost meanwhile (taken over by
        another run): their answers will be ignored when the batch is collected.
        """
        lost: list[int] = []
        with self.transaction() as conn:
            batch_id = conn.execute(
                """INSERT INTO batches (name, model, stage, state, created_at, created_epoch,
                       item_ids, run_id, offline, grounded) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                [
                    name,
                    model,
                    stage.value,
                    "pending",
                    iso_now(now),
                    now,
                    json.dumps([lease.item_id for lease in leases]),
                    run_id,
                    int(offline),
                    int(grounded),
                ],
            ).lastrowid
            for lease in leases:
                cur = conn.execute(
                    """UPDATE jobs SET state = ?, batch_id = ?, lease_owner = ?,
                           lease_expires_at = NULL
                       WHERE id = ? AND lease_token = ? AND state = 'running'""",
                    [BATCHED, batch_id, name, lease.job_id, lease.token],
                )
                if cur.rowcount != 1:
                    lost.append(lease.item_id)
        return int(batch_id), lost

    def open_batches(self) -> list[dict[str, Any]]:
        """Batches whose results are not yet in the store, oldest first."""
        return [
            {**dict(row), "item_ids": json.loads(row["item_ids"])}
            for row in self.conn.execute("SELECT * FROM batches WHERE collected = 0 ORDER BY id")
        ]

    def batch_polled(
        self, batch_id: int, state: str, *, now: float, done: bool, error: str | None = None
    ) -> None:
        """The state a poll found; `done` (no more polling needed) stamps `finished_at`."""
        with self.transaction() as conn:
            conn.execute(
                """UPDATE batches SET state = ?, polled_at = ?, error = COALESCE(?, error),
                       finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?)
                           ELSE finished_at END
                   WHERE id = ?""",
                [state, iso_now(now), error, done, iso_now(now), batch_id],
            )

    def claim_batched(
        self, batch_id: int, owner: str, *, now: float, lease_seconds: float
    ) -> dict[int, Lease]:
        """Take back the jobs still parked on this batch, as leases (item id -> Lease).

        The attempt is not counted again: it was counted when the item was first claimed.
        """
        leases: dict[int, Lease] = {}
        expires = now + lease_seconds
        with self.transaction() as conn:
            rows = conn.execute(
                """SELECT jobs.id, jobs.item_id, items.key, jobs.lease_token, jobs.attempts
                   FROM jobs JOIN items ON items.id = jobs.item_id
                   WHERE jobs.state = ? AND jobs.batch_id = ?""",
                [BATCHED, batch_id],
            ).fetchall()
            for job_id, item_id, key, token, attempts in rows:
                conn.execute(
                    """UPDATE jobs SET state = 'running', batch_id = NULL, lease_owner = ?,
                           lease_token = ?, lease_expires_at = ?
                       WHERE id = ?""",
                    [owner, token + 1, expires, job_id],
                )
                leases[item_id] = Lease(job_id, item_id, key, token + 1, owner, attempts, expires)
        return leases

    def batch_collected(self, batch_id: int, *, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE batches SET collected = 1, finished_at = COALESCE(finished_at, ?)"
                " WHERE id = ?",
                [iso_now(now), batch_id],
            )

    def batch_summary(self) -> dict[str, int]:
        """Open batches by state, and how many items wait on them."""
        counts = {
            state: n
            for state, n in self.conn.execute(
                "SELECT state, COUNT(*) FROM batches WHERE collected = 0 GROUP BY state"
            )
        }
        counts["items_waiting"] = self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE state = ?", [BATCHED]
        ).fetchone()[0]
        return counts

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
            conn.execute(
                """INSERT OR REPLACE INTO stages (item_id, stage, output, model, prompt_version,
                       offline, created_at) VALUES (?,?,?,?,?,?,?)""",
                [
                    item_id,
                    Stage.PRICE.value,
                    output,
                    model,
                    prompt_version,
                    int(offline),
                    iso_now(now),
                ],
            )

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


def _path_columns(path: Path | str) -> tuple[str, bytes | None]:
    """SQLite text must be UTF-8; a file name that is not keeps its exact bytes beside a printable form."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), raw


def _real_path(path: str, path_bytes: bytes | None) -> str:
    return os.fsdecode(path_bytes) if path_bytes is not None else path


def _explain_open_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        return f"{path} is not a dealscout database (not SQLite, or damaged); pass --db with another path"
    if "readonly" in text or "unable to open" in text:
        return (
            f"cannot open {path} for writing ({text}); check the folder's permissions or pass --db"
        )
    return f"cannot open {path}: {text}"


def _explain_write_error(path: Path, exc: sqlite3.OperationalError) -> str:
    text = str(exc)
    if "readonly" in text:
        return f"{path} is read-only; fix its permissions or pass --db with a writable path"
    if "locked" in text or "busy" in text:
        return f"{path} stayed locked for {BUSY_TIMEOUT_MS // 1000} s by another process; try again"
    return f"{path}: {text}"
