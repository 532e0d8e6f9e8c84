"""The schema: append-only migrations, and the function that applies them on open.

A shipped step is never edited (databases in the field already ran it); change the schema by
appending `m004_...`. Applied steps are recorded by name in `_dealscout_migrations`.
"""

from __future__ import annotations

import sqlite3

from dealscout_cli.records import iso_now

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

MIGRATIONS.append(
    (
        "m004_grouping",
        """
        -- `--group auto`: why each item starts where it does, and regrouping by the seller
        CREATE TABLE item_groups (
            item_id INTEGER PRIMARY KEY REFERENCES items(id),
            folder TEXT NOT NULL,           -- the folder whose photos were grouped
            why TEXT NOT NULL,              -- first photo, time gap, visual change, model, merged, split
            detail TEXT NOT NULL DEFAULT '{}',  -- JSON: gap_seconds, distance, score at its start
            unsure INTEGER NOT NULL DEFAULT 0,  -- the boundary it starts at was a close call
            replaced_by TEXT,               -- JSON list of item ids that have its photos now
            created_at TEXT NOT NULL
        );
        -- the vision model's answers to boundary questions, so a rerun asks nothing
        CREATE TABLE group_answers (
            before_sha256 TEXT NOT NULL,    -- the photo before the boundary
            after_sha256 TEXT NOT NULL,     -- the photo after it
            same INTEGER NOT NULL,          -- 1: the same product
            model TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (before_sha256, after_sha256)
        );
        """,
    )
)

MIGRATIONS.append(
    (
        "m005_review",
        """
        -- Every version of an item's listing: the model's drafts and the seller's edits.
        -- The current listing is the item's highest-numbered revision, flagged `latest`
        -- (`store/revisions.py`). The grid's columns repeat what `fields` holds, so that
        -- sorting and filtering 10,000 items reads columns, not 10,000 JSON documents.
        CREATE TABLE revisions (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id),
            number INTEGER NOT NULL,        -- 1, 2, ... per item
            author TEXT NOT NULL,           -- model, seller
            fields TEXT NOT NULL,           -- JSON: {"identification": {...}, "price": {...} or null}
            created_at TEXT NOT NULL,
            latest INTEGER NOT NULL DEFAULT 1,   -- 1 on the item's highest number only
            title TEXT,
            brand TEXT,
            model TEXT,
            condition TEXT,
            confidence REAL,
            price_low REAL,
            price_suggested REAL,
            price_high REAL,
            currency TEXT,
            UNIQUE (item_id, number)
        );
        CREATE UNIQUE INDEX revisions_latest ON revisions(item_id) WHERE latest = 1;
        -- The seller's review of an item (`dealscout review`)
        CREATE TABLE reviews (
            item_id INTEGER PRIMARY KEY REFERENCES items(id),
            decision TEXT,                  -- approved, rejected; NULL while undecided
            decided_at TEXT,
            note TEXT,                      -- the seller's last "ask again" note to the model
            asked_at TEXT                   -- set while that note waits for the next identification
        );
        -- The drafts made before revisions existed are each item's first revision
        INSERT INTO revisions (item_id, number, author, fields, created_at)
            SELECT item_id, 1, 'model',
                   json_object('identification', json(identification), 'price', json(price)),
                   created_at
            FROM listings;
        UPDATE revisions SET
            title = json_extract(fields, '$.identification.title'),
            brand = json_extract(fields, '$.identification.brand'),
            model = json_extract(fields, '$.identification.model'),
            condition = json_extract(fields, '$.identification.condition'),
            confidence = json_extract(fields, '$.identification.confidence'),
            price_low = json_extract(fields, '$.price.low'),
            price_suggested = json_extract(fields, '$.price.suggested'),
            price_high = json_extract(fields, '$.price.high'),
            currency = json_extract(fields, '$.price.currency');
        -- The overview shows the current listing (the seller's edit, if any) and the decision
        DROP VIEW item_overview;
        CREATE VIEW item_overview AS
            SELECT items.id, items.label, jobs.state, jobs.attempts, jobs.error_kind, jobs.error,
                   CASE WHEN current.id IS NULL THEN listings.title ELSE current.title END
                       AS title,
                   CASE WHEN current.id IS NULL THEN listings.price_suggested_cents
                        ELSE CAST(ROUND(current.price_suggested * 100) AS INTEGER) END
                       AS price_suggested_cents,
                   CASE WHEN current.id IS NULL THEN listings.currency ELSE current.currency END
                       AS currency,
                   current.author AS edited_by, reviews.decision,
                   (SELECT COUNT(*) FROM photos WHERE photos.item_id = items.id) AS photo_count,
                   (SELECT COALESCE(SUM(cost_micro_usd), 0) FROM calls
                     WHERE calls.item_id = items.id) AS cost_micro_usd
            FROM items JOIN jobs ON jobs.item_id = items.id
            LEFT JOIN listings ON listings.item_id = items.id
            LEFT JOIN revisions AS current ON current.item_id = items.id AND current.latest = 1
            LEFT JOIN reviews ON reviews.item_id = items.id;
        """,
    )
)

MIGRATIONS_TABLE = "_dealscout_migrations"


def missing_steps(conn: sqlite3.Connection) -> list[str]:
    """The steps this file has not run yet (a reader reports them; it cannot apply them)."""
    applied = _applied(conn)
    return [name for name, _ in MIGRATIONS if name not in applied]


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the steps this file lacks, all in one write transaction."""
    if not missing_steps(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)"
        )
        done = _applied(conn)  # again, inside the lock: another process may have won
        for name, sql in MIGRATIONS:
            if name not in done:
                _apply(conn, name, sql)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, name: str, sql: str) -> None:
    for statement in _split_sql(sql):
        conn.execute(statement)
    conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", [name, iso_now()])


def _applied(conn: sqlite3.Connection) -> set[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", [MIGRATIONS_TABLE]
    ).fetchone()
    if not exists:
        return set()
    return {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}


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
