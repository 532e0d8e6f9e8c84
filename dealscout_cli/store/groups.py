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
_WHY_NOT = {
    "done": "a done one has a listing made from its photos",
    "running": "a run is working on it now",
}


def regroup_refusal(state: str) -> str | None:
    """Why a group in this job state cannot be merged or split (None: it can be). The one
    rule both `dealscout group` and the review page's Groups page go by."""
    if state in REGROUPABLE_STATES:
        return None
    why = _WHY_NOT.get(state, "its photos have been dealt with")
    return f"it is {state}: only queued or failed groups can be regrouped ({why})"


@dataclass(frozen=True)
class GroupRow:
    """One group as `dealscout group` lists it."""

    item_id: int
    label: str
    folder: str
    state: str
    photos: tuple[str, ...]  # file names, in order
    why: str  # "" for an item `--group auto` did not make (a folder, a file, a manifest line)
    unsure: bool
    detail: dict[str, Any]
    photo_ids: tuple[int, ...] = ()  # the photos' row ids, in the same order

    @property
    def refusal(self) -> str | None:
        """Why this group cannot be regrouped, or None."""
        return regroup_refusal(self.state)

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

    def groups(self, *, every_item: bool = False) -> list[GroupRow]:
        """Every group still standing (not regrouped), folder by folder, in capture order (by
        each group's first photo, so a merged or split group stands where its photos were).
        With `every_item`, items `--group auto` did not make are groups too (why: "")."""
        join = "LEFT JOIN" if every_item else "JOIN"
        rows = self.conn.execute(
            f"""SELECT items.id AS item_id, items.label, jobs.state,
                       COALESCE(item_groups.folder, items.source) AS folder,
                       COALESCE(item_groups.why, '') AS why, item_groups.detail,
                       COALESCE(item_groups.unsure, 0) AS unsure,
                       (SELECT MIN(photos.id) FROM photos
                        WHERE photos.item_id = items.id) AS first_photo
                FROM items JOIN jobs ON jobs.item_id = items.id
                {join} item_groups ON item_groups.item_id = items.id
                WHERE NOT (jobs.state = 'skipped' AND jobs.error_kind = '{REGROUPED}')
                ORDER BY folder, first_photo, items.id"""
        ).fetchall()
        photos: dict[int, list[tuple[int, str]]] = {}
        for photo in self.conn.execute(
            "SELECT id, item_id, path FROM photos ORDER BY position, id"
        ):
            photos.setdefault(photo["item_id"], []).append((photo["id"], _name(photo["path"])))
        return [
            GroupRow(
                item_id=row["item_id"],
                label=row["label"],
                folder=row["folder"],
                state=row["state"],
                photos=tuple(name for _, name in photos.get(row["item_id"], [])),
                why=row["why"],
                unsure=bool(row["unsure"]),
                detail=json.loads(row["detail"] or "{}"),
                photo_ids=tuple(photo_id for photo_id, _ in photos.get(row["item_id"], [])),
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

    def split_before_photo(self, photo_id: int, *, now: float) -> tuple[int, int]:
        """Split the group holding this photo (by its row id) so a new group starts at it."""
        row = self.conn.execute("SELECT item_id FROM photos WHERE id = ?", [photo_id]).fetchone()
        if row is None:
            raise UsageError(f"no photo {photo_id}; the Groups page lists them")
        in_order = [
            photo[0]
            for photo in self.conn.execute(
                "SELECT id FROM photos WHERE item_id = ? ORDER BY position, id", [row[0]]
            )
        ]
        return self.split_group(row[0], in_order.index(photo_id) + 1, now=now)

    def split_before_photo_named(self, name: str, *, now: float) -> tuple[int, int]:
        """Split the standing group holding a photo of this file name so a new group starts
        at it. Two folders can each have an IMG_0001.jpg: then the name says too little."""
        holding = [group for group in self.groups() if name in group.photos]
        if not holding:
            raise UsageError(
                f"no group has a photo of that name ({name!r}); split by number (group N "
                "before its K-th photo) or by a file name that `dealscout group` lists"
            )
        if len(holding) > 1:
            numbers = " and ".join(str(group.item_id) for group in holding)
            raise UsageError(
                f"groups {numbers} each have a photo named {name!r}; split by number "
                "(group N before its K-th photo)"
            )
        group = holding[0]
        return self.split_group(group.item_id, group.photos.index(name) + 1, now=now)

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


def _regroupable(conn: sqlite3.Connection, item_id: int) -> sqlite3.Row:
    if not 0 < item_id < 2**63:  # past SQLite's integers: no row, not an OverflowError
        raise UsageError(f"no group {item_id}; `dealscout group` lists them")
    row: sqlite3.Row | None = conn.execute(
        """SELECT items.*, jobs.state, jobs.error_kind, item_groups.folder FROM items
           JOIN jobs ON jobs.item_id = items.id
           LEFT JOIN item_groups ON item_groups.item_id = items.id WHERE items.id = ?""",
        [item_id],
    ).fetchone()
    if row is None or (row["state"] == "skipped" and row["error_kind"] == REGROUPED):
        raise UsageError(f"no group {item_id}; `dealscout group` lists them")
    refusal = regroup_refusal(row["state"])
    if refusal is not None:
        raise UsageError(f"group {item_id}: {refusal}")
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
