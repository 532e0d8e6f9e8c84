"""Opening the file and writing to it: WAL with a busy timeout, `BEGIN IMMEDIATE`, and errors a
seller can act on (read-only file, locked file, not a database); and opening it only to read,
for commands that never write (`status`, `listings`, `export`, `estimate`)."""

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
from dealscout_cli.store.schema import MIGRATIONS, migrate, missing_steps

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

    @classmethod
    def open_read_only(cls, path: Path | str) -> Self:
        """Open an existing file to read it, writing nothing: not the journal mode, not a
        migration, no -wal or -shm file left beside it. Works on a backup, a read-only file or
        folder, another user's database, and while a `snap` is writing it."""
        path = Path(path)
        _check_readable(path)
        try:
            conn = sqlite3.connect(
                _read_only_uri(path),
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain_read_error(path, exc)) from None
        conn.row_factory = sqlite3.Row
        try:
            _check_schema(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(_explain_read_error(path, exc)) from None
        except StoreError:
            conn.close()
            raise
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


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise StoreError(f"no database at {path}; run `dealscout snap PHOTOS` first or pass --db")
    if path.is_dir():
        raise StoreError(
            f"{path} is a directory; --db wants a file path such as {path}/dealscout.db"
        )


def _read_only_uri(path: Path) -> str:
    """SQLite's read-only URI for `path` (percent-encoded: a name may hold `?`, `#` or `%`).

    `mode=ro` alone still creates a -wal and a -shm file beside a WAL database that has
    none, and leaves them there (it cannot checkpoint them away); in a read-only folder it
    cannot create them and refuses to open (https://www.sqlite.org/wal.html#readonly).
    Every connection that has a WAL database open keeps its -shm (the last one to close
    removes it with the -wal), so with no -shm and no log to replay nobody is writing and
    the file alone is the whole database: `immutable=1` reads it with no locks and no side
    files. Otherwise a run may be writing, and the reader takes part in WAL locking like
    any other (`mode=ro`), reading what the run has committed to its -wal.
    """
    uri = f"{path.absolute().as_uri()}?mode=ro"
    if _is_wal(path) and _closed_by_everyone(path):
        uri += "&immutable=1"
    return uri


def _is_wal(path: Path) -> bool:
    """Whether the file's header says WAL (bytes 18 and 19 are 2: the write and read versions)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return False  # sqlite3 says why, with the path
    return header.startswith(b"SQLite format 3\0") and header[18:20] == b"\x02\x02"


def _closed_by_everyone(path: Path) -> bool:
    """No -shm (no connection has the file open) and no log holding commits to replay."""
    log = path.with_name(path.name + "-wal")
    if path.with_name(path.name + "-shm").exists():
        return False
    return not log.exists() or log.stat().st_size == 0


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """A reader cannot migrate: an older file is named as such, with the way to upgrade it."""
    missing = missing_steps(conn)
    if not missing:
        return
    if len(missing) < len(MIGRATIONS):
        raise StoreError(
            f"{path} was made by an older dealscout; run `dealscout snap PHOTOS --db {path}` "
            "once to upgrade it (commands that only read never change the file)"
        )
    if conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
        raise StoreError(f"{path} holds no dealscout data yet; run `dealscout snap PHOTOS` first")
    raise StoreError(
        f"{path} is not a dealscout database (it has none of dealscout's tables); "
        "pass --db with another path"
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


def _explain_read_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "file is not a database" in text or "malformed" in text:
        return f"{path} is not a dealscout database (not SQLite, or damaged); pass --db with another path"
    if not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied; ask its owner, or pass --db with a copy"
    log = path.with_name(path.name + "-wal")
    if ("unable to open" in text or "readonly" in text) and log.exists():
        # A -wal file and no -shm, in a folder we may not write: SQLite needs the -shm to read
        # the log safely and cannot make it here.
        return (
            f"cannot read {path} ({text}): its log {path.name}-wal needs a {path.name}-shm file "
            "this folder does not let us create; run the command as the folder's owner, or "
            "copy the database (and its -wal file) to a folder you can write"
        )
    if "locked" in text or "busy" in text:
        return (
            f"{path} stayed locked for {BUSY_TIMEOUT_MS / 1000:g} s by another program; try again"
        )
    return f"cannot read {path}: {text}"


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
    if "disk I/O error" in text:
        return (
            f"cannot write {path} (disk I/O error: a full disk, a file-size limit or a failing "
            "drive); free some space and run snap again: nothing done so far is lost"
        )
    return f"{path}: {text}"
