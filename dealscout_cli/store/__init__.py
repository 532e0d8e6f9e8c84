"""The SQLite record: the schema, and every query dealscout runs, behind one `Store`.

Tables (open the file with `sqlite-utils` or Datasette to look around):
    runs      one row per `snap` process: when, where, how it ended
    items     one row per product, keyed by its photos' content (sha256)
    photos    the files that make up each item
    jobs      one per item: its state, lease, attempts and last error (the queue)
    stages    finished pipeline stages per item (identification kept when pricing fails)
    calls     every paid model call: stage, model, status, tokens, latency, cost
    listings  the drafts
    batches   Gemini Batch Mode jobs, and which items wait on them
    revisions every version of each listing: the model's drafts and the seller's edits
    reviews   the seller's decision on each item (approved, rejected) and "ask again" notes
    item_groups    --group auto: why each item starts where it does; regrouped items
    group_answers  the model's answers to boundary questions (--confirm-groups)

Concurrency: WAL mode and a busy timeout, so several processes can share one
file; every claim runs in `BEGIN IMMEDIATE`, so two claimers never take the same
job. A lease carries a fencing token (`lease_token`): completion only counts
when the token still matches, so a process whose lease expired cannot overwrite
the work of the one that took the job over.

Time: lease and retry times are unix seconds (REAL) passed in by the caller, so
tests inject a clock; human-facing times are ISO-8601 UTC text.

Where things live (each part is a class over the one shared connection; `Store` is all of them):
    connection.py  opening the file (WAL, busy timeout, migrations), transactions, error text
    schema.py      the append-only migrations and `migrate`
    runs.py        starting, updating and finishing a run
    queue.py       enqueue, claim, leases and fencing, the outcomes of an attempt, requeue
    items.py       one item's photos, saved stages, recorded calls and facts
    batches.py     Gemini Batch Mode: batches and the jobs parked on them
    reports.py     the read side: status numbers, listings, failures, calls
    revisions.py   writing revisions: a model never overwrites a seller's edit
    reviews.py     `dealscout review`: edits, decisions, ask again, the grid
    groups.py      --group auto: group reasons, merge and split, cached boundary answers
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Self

from dealscout_cli.errors import StoreError
from dealscout_cli.records import Stage  # its home is records; estimate.py imports it from here
from dealscout_cli.store.batches import BatchJobs
from dealscout_cli.store.groups import ItemGroups
from dealscout_cli.store.items import ItemRecords
from dealscout_cli.store.queue import JobQueue
from dealscout_cli.store.reports import Reports
from dealscout_cli.store.reviews import Reviews
from dealscout_cli.store.runs import RunRecords

__all__ = ["Stage", "Store"]


class Store(JobQueue, ItemRecords, BatchJobs, RunRecords, Reports, Reviews, ItemGroups):
    """One SQLite file. Open with `Store.open(path)`; safe to share between processes."""

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Self:
        """Open (and with `create`, make) the file; a writer first records any paid calls
        an earlier run had to set aside (`keep_unrecorded`)."""
        store = super().open(path, create=create)
        if create:  # still unwritable: the file stays, and the run says why soon enough
            with contextlib.suppress(StoreError):
                store.import_unrecorded()
        return store
