"""`--group auto`'s record: why each item starts where it does, the seller's merges and splits,
and the vision model's answers to boundary questions.

An item's key stays the hash of its photos. Regrouping therefore makes new items: merging
two makes exactly one, splitting one makes two, and nothing else changes. An item regrouped
before any call was paid for it is removed (its photos now belong to the new item); one with
calls on record stays, `skipped` as regrouped, so every paid call keeps its item.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dealscout_cli.errors import UsageError
from dealscout_cli.records import iso_now
from dealscout_cli.store.connection import StoreConnection, inserted_id

if TYPE_CHECKING:
    from dealscout_cli.grouping import GroupReason

# Regrouping moves photos between items: only items no run is working on, and none with a
# listing (a done item's listing would describe photos it no longer has).
REGROUPABLE_STATES = ("queued", "failed")
REGROUPED = "regrouped"  # jobs.error_kind of an item whose photos went to other items


@dataclass(frozen=True)
class GroupRow:
    """One group as `dealscout group` lists it."""

    item_id: int
    label: str
    folder: str
    state: str
    photos: tuple[str, ...]  # file names, in order
    why: str
    unsure: bool
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item_id,
            "label": self.label,
            "folder": self.folder,
            "state": self.state,
            "photos": list(self.photos),
            "why": self.why,
            "unsure": self.unsure,
            **self.detail,
        }


class ItemGroups(StoreConnection):
    """Groups made by `--group auto`, and regrouping them."""

    def items_of_photos(self, sha256s: Iterable[str]) -> dict[str, tuple[str, int]]:
        """photo sha256 → (the key of the item it belongs to, its place there), for the
        photos already in an item."""
        found: dict[str, tuple[str, int]] = {}
        wanted = list(dict.fromkeys(sha256s))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self.conn.execute(
                f"""SELECT photos.sha256, items.key, photos.position FROM photos
                    JOIN items ON items.id = photos.item_id
                    JOIN jobs ON jobs.item_id = items.id
                    WHERE photos.sha256 IN ({",".join("?" * len(chunk))})
                      AND NOT (jobs.state = 'skipped' AND jobs.error_kind = '{REGROUPED}')
                    ORDER BY items.id""",
                chunk,
            )
            for sha, key, position in rows:
                found.setdefault(sha, (key, position))
        return found

    def record_groups(
        self, folder_reasons: Sequence[tuple[str, Mapping[str, GroupReason]]], *, now: float
    ) -> None:
        """Why each newly grouped item starts where it does (items already recorded keep theirs)."""
        stamp = iso_now(now)
        with self.transaction() as conn:
            for folder, reasons in folder_reasons:
                for key, reason in reasons.items():
                    row = conn.execute("SELECT id FROM items WHERE key = ?", [key]).fetchone()
                    if row is None:
                        continue
                    conn.execute(
                        """INSERT OR IGNORE INTO item_groups (item_id, folder, why, detail,
                               unsure, created_at) VALUES (?,?,?,?,?,?)""",
                        [
                            row[0],
                            folder,
                            reason.why.value,
                            json.dumps(reason.detail()),
                            int(reason.unsure),
                            stamp,
                        ],
                    )

    def groups(self) -> list[GroupRow]:
        """Every group still standing (not regrouped), folder by folder, in capture order."""
        rows = self.conn.execute(
            f"""SELECT item_groups.*, items.label, jobs.state FROM item_groups
                JOIN items ON items.id = item_groups.item_id
                JOIN jobs ON jobs.item_id = items.id
                WHERE NOT (jobs.state = 'skipped' AND jobs.error_kind = '{REGROUPED}')
                ORDER BY item_groups.folder, item_groups.item_id"""
        ).fetchall()
        return [
            GroupRow(
                item_id=row["item_id"],
                label=row["label"],
                folder=row["folder"],
                state=row["state"],
                photos=tuple(_name(p) for p in self._photo_paths(row["item_id"])),
                why=row["why"],
                unsure=bool(row["unsure"]),
                detail=json.loads(row["detail"] or "{}"),
            )
            for row in rows
        ]

    def merge_groups(self, item_ids: Sequence[int], *, now: float) -> int:
        """One item of these groups' photos (in the order given); returns its id."""
        if len(set(item_ids)) < 2:
            raise UsageError("name at least two different groups to merge, e.g. --merge 3,4")
        with self.transaction() as conn:
            sources = [_regroupable(conn, item_id) for item_id in item_ids]
            photos = [photo for item_id in item_ids for photo in _photos(conn, item_id)]
            first = sources[0]
            new_id = _new_item(conn, first, photos, "merged", now)
            for item_id in item_ids:
                _retire(conn, item_id, [new_id], now)
            return new_id

    def split_group(self, item_id: int, at: int, *, now: float) -> tuple[int, int]:
        """Two items of one group's photos: before its photo number `at` (1-based), and from it."""
        with self.transaction() as conn:
            source = _regroupable(conn, item_id)
            photos = _photos(conn, item_id)
            if not 2 <= at <= len(photos):
                raise UsageError(
                    f"group {item_id} has {len(photos)} photos; split it before photo 2 to "
                    f"{len(photos)} (e.g. --split {item_id}:2)"
                    if len(photos) > 1
                    else f"group {item_id} has one photo: nothing to split"
                )
            first = _new_item(conn, source, photos[: at - 1], "split", now)
            second = _new_item(conn, source, photos[at - 1 :], "split", now)
            _retire(conn, item_id, [first, second], now)
            return first, second

    def photo_position(self, item_id: int, name: str) -> int | None:
        """The 1-based place of the photo named `name` in the group, or None."""
        for position, path in enumerate(self._photo_paths(item_id), start=1):
            if _name(path) == name:
                return position
        return None

    def group_of_photo(self, name: str) -> int | None:
        """The standing group that holds a photo of this file name, or None."""
        for row in self.groups():
            if name in row.photos:
                return row.item_id
        return None

    def group_answers(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """The model's cached answers: (sha before, sha after) → same product."""
        found = {}
        for before, after in pairs:
            row = self.conn.execute(
                "SELECT same FROM group_answers WHERE before_sha256 = ? AND after_sha256 = ?",
                [before, after],
            ).fetchone()
            if row is not None:
                found[(before, after)] = bool(row[0])
        return found

    def save_group_answers(
        self, answers: Mapping[tuple[str, str], bool], *, model: str, now: float
    ) -> None:
        stamp = iso_now(now)
        with self.transaction() as conn:
            for (before, after), same in answers.items():
                conn.execute(
                    "INSERT OR REPLACE INTO group_answers VALUES (?,?,?,?,?)",
                    [before, after, int(same), model, stamp],
                )

    def _photo_paths(self, item_id: int) -> list[str]:
        return [
            row[0]
            for row in self.conn.execute(
                "SELECT path FROM photos WHERE item_id = ? ORDER BY position, id", [item_id]
            )
        ]


def _regroupable(conn: sqlite3.Connection, item_id: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        """SELECT items.*, jobs.state, jobs.error_kind, item_groups.folder FROM items
           JOIN jobs ON jobs.item_id = items.id
           LEFT JOIN item_groups ON item_groups.item_id = items.id WHERE items.id = ?""",
        [item_id],
    ).fetchone()
    if row is None or (row["state"] == "skipped" and row["error_kind"] == REGROUPED):
        raise UsageError(f"no group {item_id}; `dealscout group` lists them")
    if row["state"] not in REGROUPABLE_STATES:
        raise UsageError(
            f"group {item_id} is {row['state']}: only queued or failed groups can be regrouped "
            "(a done one has a listing made from its photos)"
        )
    return row


def _photos(conn: sqlite3.Connection, item_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT * FROM photos WHERE item_id = ? ORDER BY position, id", [item_id]
    ).fetchall()


def _new_item(
    conn: sqlite3.Connection, source: sqlite3.Row, photos: list[sqlite3.Row], why: str, now: float
) -> int:
    """An item of these photos, keyed by their content, queued; the photos move to it."""
    from dealscout_cli.scan import item_key

    key = item_key([photo["sha256"] for photo in photos])
    stamp = iso_now(now)
    taken = conn.execute("SELECT id FROM items WHERE key = ?", [key]).fetchone()
    if taken is not None:
        raise UsageError(f"those photos are already item {taken[0]}")
    new_id = inserted_id(
        conn.execute(
            "INSERT INTO items (key, label, source, notes, created_at) VALUES (?,?,?,?,?)",
            [key, _stem(photos[0]["path"]), source["source"], source["notes"], stamp],
        )
    )
    conn.execute(
        "INSERT INTO jobs (item_id, state, queued_at) VALUES (?, 'queued', ?)", [new_id, stamp]
    )
    for position, photo in enumerate(photos):
        conn.execute(
            "UPDATE photos SET item_id = ?, position = ? WHERE id = ?",
            [new_id, position, photo["id"]],
        )
    conn.execute(
        """INSERT INTO item_groups (item_id, folder, why, detail, unsure, created_at)
           VALUES (?,?,?,'{}',0,?)""",
        [new_id, source["folder"] or source["source"], why, stamp],
    )
    return new_id


def _retire(conn: sqlite3.Connection, item_id: int, replaced_by: list[int], now: float) -> None:
    """The regrouped item: gone when nothing was paid for it, else kept as skipped."""
    paid = conn.execute("SELECT 1 FROM calls WHERE item_id = ? LIMIT 1", [item_id]).fetchone()
    if paid is None:
        for table in ("item_groups", "stages", "listings", "jobs"):
            conn.execute(f"DELETE FROM {table} WHERE item_id = ?", [item_id])
        conn.execute("DELETE FROM items WHERE id = ?", [item_id])
        return
    stamp = iso_now(now)
    where = ", ".join(str(i) for i in replaced_by)
    conn.execute(
        """UPDATE jobs SET state = 'skipped', error_kind = ?, error = ?, retryable = 0,
               finished_at = ? WHERE item_id = ?""",
        [REGROUPED, f"regrouped: its photos are in item {where} now", stamp, item_id],
    )
    conn.execute(
        "UPDATE item_groups SET replaced_by = ? WHERE item_id = ?",
        [json.dumps(replaced_by), item_id],
    )


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _stem(path: str) -> str:
    name = _name(path)
    return name.rsplit(".", 1)[0] if "." in name else name
