"""Gemini Batch Mode (`snap --batch`): submitted batches, and the jobs parked on them.

A job handed to a batch leaves `running` for `batched` and gives up its lease (a batch may take
hours); when the batch's results are collected its jobs are claimed back as fresh leases.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from dealscout_cli.records import BATCHED, Lease, Stage, iso_now
from dealscout_cli.store.connection import StoreConnection, inserted_id


class BatchJobs(StoreConnection):
    """Batches: submit, poll, take their jobs back, mark collected."""

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
        item_ids = json.dumps([lease.item_id for lease in leases])
        with self.transaction() as conn:
            batch_id = inserted_id(
                conn.execute(
                    """INSERT INTO batches (name, model, stage, state, created_at, created_epoch,
                           item_ids, run_id, offline, grounded) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                    [
                        name,
                        model,
                        stage.value,
                        "pending",
                        iso_now(now),
                        now,
                        item_ids,
                        run_id,
                        int(offline),
                        int(grounded),
                    ],
                )
            )
            lost = [lease.item_id for lease in leases if not _park(conn, lease, batch_id, name)]
        return batch_id, lost

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


def _park(conn: sqlite3.Connection, lease: Lease, batch_id: int, name: str) -> bool:
    """Move a leased job onto the batch; False when the lease was lost meanwhile."""
    cur = conn.execute(
        """UPDATE jobs SET state = ?, batch_id = ?, lease_owner = ?,
               lease_expires_at = NULL
           WHERE id = ? AND lease_token = ? AND state = 'running'""",
        [BATCHED, batch_id, name, lease.job_id, lease.token],
    )
    return cur.rowcount == 1
