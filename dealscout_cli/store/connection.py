"""Opening the file and writing to it: WAL with a busy timeout, `BEGIN IMMEDIATE`, and errors a
seller can act on (read-only file, locked file, not a database)."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from dealscout_cli.errors import StoreError
from dealscout_cli.store.schema import migrate

BUSY_TIMEOUT_MS = 15_000


class StoreConnection:
    """One open SQLite file: the connection every part of `Store` shares."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Self:
        path = Path(path)
        _check_path(path, create=create)
        try:
            conn, mode = _connect(path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain_open_error(path, exc)) from None
        if mode.lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode ({mode}); is the file read-only?")
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
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
            self._rollback()
            if any(word in str(exc) for word in ("readonly", "locked", "disk", "full")):
                raise StoreError(_explain_write_error(self.path, exc)) from None
            raise
        except BaseException:
            self._rollback()
            raise
        else:
            self._commit()

    def _commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            raise StoreError(_explain_write_error(self.path, exc)) from None

    def _rollback(self) -> None:
        # A failed COMMIT (disk full, I/O error) may have rolled back already; a second
        # ROLLBACK would then raise "cannot rollback - no transaction is active".
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def inserted_id(cur: sqlite3.Cursor) -> int:
    """The id the INSERT just run made (`lastrowid` is None only when nothing was inserted)."""
    assert cur.lastrowid is not None
    return cur.lastrowid


def _check_path(path: Path, *, create: bool) -> None:
    if not path.exists() and not create:
        raise StoreError(f"no database at {path}; run `dealscout snap PHOTOS` first or pass --db")
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(
            f"{path} is read-only; fix its permissions or pass --db with a writable path"
        )
    if path.exists() and path.is_dir():
        raise StoreError(
            f"{path} is a directory; --db wants a file path such as {path}/dealscout.db"
        )


def _connect(path: Path) -> tuple[sqlite3.Connection, str]:
    """Connect, switch to WAL, migrate; returns the connection and the journal mode it got."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = _enter_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives process kills
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    return conn, mode


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
        return (
            f"{path} stayed locked for {BUSY_TIMEOUT_MS / 1000:g} s by another program (a backup, "
            "another snap?); run the same command again once it lets go: nothing done so far is lost"
        )
    if "full" in text:
        return (
            f"the disk holding {path} is full; free some space and run the same command again: "
            "nothing done so far is lost"
        )
    return f"{path}: {text}"
