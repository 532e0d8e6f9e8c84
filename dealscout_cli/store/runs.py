"""The run record, written side: a `snap` process starts a run, reports its limiters while it
works (which also says it is alive), and finishes it with a status and a summary."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from dealscout_cli.records import iso_now
from dealscout_cli.store.connection import StoreConnection, inserted_id


class RunRecords(StoreConnection):
    """Runs: start, heartbeat with limiter state, finish."""

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
            return inserted_id(cur)

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
