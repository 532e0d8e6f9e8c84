"""Find photos in folders and manifests, group them into items, fingerprint their content.

An item's key is a hash of its photos' contents, not their names, so renaming or
moving photos makes no new (paid) work. Every photo found ends in exactly one
item, in `problems` (with a reason a seller can act on) or in `duplicates`:
nothing vanishes, and nothing on disk makes `scan` raise except a path given on
the command line that does not exist or a manifest that cannot be read at all.
`warnings` point at items that are probably grouped wrong; they are still items.

`scan_batches` hands the scan out in batches, each as soon as its items are complete
(an item is complete once all its photos are read: one photo, a folder with `--group
folder`, a manifest item's last line), so `snap` can queue and send the first items
while the rest are still being read. `scan` collects the batches into one result.
A photo whose path, size and modification time the database recorded is not read again
(`KnownPhotos`): a rerun over thousands of known photos only looks at their sizes.
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import ScanError
from .images import display_path

if TYPE_CHECKING:
    from .grouping import Grouping

GroupBy = Literal["photo", "folder", "auto"]
GROUPINGS = ("photo", "folder", "auto")
# photo sha256s → (key, place) in the items they already belong to (`--group auto` keeps those)
GroupedPhotos = Callable[[list[str]], Mapping[str, tuple[str, int]]]

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".heic", ".heif"})
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a million rows of paths; read whole, so judged first
UNSUPPORTED_SUFFIXES = frozenset(
    {".bmp", ".tif", ".tiff", ".raw", ".cr2", ".nef", ".arw", ".dng", ".svg", ".psd"}
)
MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# System litter that is never a product photo (hidden names are skipped too).
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
HASH_CHUNK = 1 << 20
# More photos than a seller takes of one product: a folder of 40 is several products (or a
# whole shoot) grouped as one, and every photo of an item goes into one paid request.
MANY_PHOTOS = 12
# Batches: the first holds one item (it starts the run), each next one twice as many, up to
# BATCH_ITEMS (one short transaction to queue them); and one at least every BATCH_SECONDS
# while photos are read, so large photos still start work soon and a stop is heard.
BATCH_ITEMS = 256
BATCH_SECONDS = 0.25

# (path, size in bytes, mtime in ns) → the sha256 recorded for that file, or None when it is
# new or changed: a photo whose size and modification time match is not read again (as
# `make` and `rsync` judge a file unchanged).
KnownPhotos = Callable[[Path, int, int], str | None]


@dataclass(frozen=True)
class FoundPhoto:
    """One photo file. `path` opens the file even when its name is not UTF-8; print `display`."""

    path: Path
    sha256: str
    size_bytes: int
    mtime_ns: int

    @property
    def display(self) -> str:
        return display_path(self.path)


@dataclass(frozen=True)
class FoundItem:
    """Photos of one thing for sale, keyed by their content."""

    key: str
    label: str
    photos: tuple[FoundPhoto, ...]
    notes: str | None
    source: str


@dataclass(frozen=True)
class ScanProblem:
    """A photo (or manifest line) that cannot be used, and why."""

    path: str
    reason: str
    line: int | None = None

    @property
    def place(self) -> str:
        """path, or manifest:line: as it is shown and as `record_skipped` keys it."""
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass
class ScanResult:
    items: list[FoundItem] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    # Items kept but worth a look (e.g. too many photos for one product); not skipped.
    warnings: list[ScanProblem] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, same content as path)
    groupings: list[Grouping] = field(default_factory=list)  # --group auto: one per folder

    def add(self, batch: ScanBatch) -> None:
        self.items += batch.items
        self.problems += batch.problems
        self.warnings += batch.warnings
        self.duplicates += batch.duplicates
        self.groupings += batch.groupings


@dataclass
class ScanBatch:
    """What the scan completed since its last batch: items new to this scan, each with all
    its photos, and the problems, warnings and duplicates found meanwhile."""

    items: list[FoundItem] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    warnings: list[ScanProblem] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    groupings: list[Grouping] = field(default_factory=list)  # --group auto: one per folder
    photos_read: int = 0  # in the whole scan so far


def scan(
    paths: Sequence[Path | str],
    group: GroupBy = "photo",
    on_photo: Callable[[int], None] | None = None,
    known: KnownPhotos | None = None,
    grouped: GroupedPhotos | None = None,
) -> ScanResult:
    """Scan folders (recursively), manifests (.csv/.jsonl) and single photos into items.

    `group="photo"` makes each photo an item; `group="folder"` makes each folder
    holding photos one item, except the folders given in `paths`: photos loose in
    those are one item each (a shoot's top folder holds products, it is not one). A
    manifest's `item` column groups its rows itself. `group="auto"` is "folder" for
    subfolders and splits the photos loose in a folder you name into products
    (`grouping.group_photos`); photos `grouped(sha256s)` already puts in an item keep it.
    `on_photo(n)` is called after each photo is read and hashed, with the count so far
    (10,000 photos take seconds: enough to want a counter). `known` gives the hash of a
    photo whose path, size and modification time were recorded before (see `KnownPhotos`).
    """
    result = ScanResult()
    for batch in scan_batches(paths, group, on_photo=on_photo, known=known, grouped=grouped):
        result.add(batch)
    result.problems.sort(key=lambda p: (p.path, p.line or 0))
    return result


def scan_batches(
    paths: Sequence[Path | str],
    group: GroupBy = "photo",
    *,
    on_photo: Callable[[int], None] | None = None,
    known: KnownPhotos | None = None,
    grouped: GroupedPhotos | None = None,
) -> Iterator[ScanBatch]:
    """`scan`, one batch at a time, each as soon as its items are complete, so work can start
    on the first items while the rest are still being read (`feed`).

    Every argument is checked, and every manifest read, before this returns: a ScanError
    (exit 2, nothing queued) is raised here, never half-way through the batches. An item
    is only in a batch once all its photos are known (a folder's, a manifest item's lines),
    and an item whose key an earlier batch had is a duplicate, as in one `scan`.
    """
    if group not in GROUPINGS:
        raise ScanError(f"unknown grouping {group!r}; use 'photo', 'folder' or 'auto'")
    scanner = _Scanner(group, on_photo, known, grouped)
    targets = [scanner.target(Path(path)) for path in paths]
    return scanner.batches(targets)


def item_key(photo_sha256s: Sequence[str]) -> str:
    """The content key of an item: the same photos give the same key, whatever their names."""
    joined = "\n".join(sorted(set(photo_sha256s)))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


def photo_kind(name: str) -> Literal["photo", "unsupported"] | None:
    """Whether a file name looks like a photo we read, a photo we don't, or neither."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in PHOTO_SUFFIXES:
        return "photo"
    if suffix in UNSUPPORTED_SUFFIXES:
        return "unsupported"
    return None


def unsupported_reason(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    return f"unsupported format ({suffix}); convert to JPEG or PNG"


@dataclass
class _Draft:
    """An item before de-duplication."""

    label: str
    source: str
    photos: list[FoundPhoto] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    auto: bool = False  # --group auto: a folder's loose photos, split into items by grouping


@dataclass(frozen=True)
class _Target:
    """One path given to `scan`, checked: what it is, and a manifest's rows (read up front)."""

    kind: Literal["folder", "manifest", "photo", "unsupported"]
    path: Path
    rows: list[tuple[int, dict[str, object]]] = field(default_factory=list)


class _Held:
    """Items complete but held back: an item labelled by its file's stem waits for every
    other photo with that stem in its place (`photo.heic` beside `photo.webp` takes its full
    name, `_unique_labels`), so a label never changes after its item was handed out."""

    def __init__(self, last_of_stem: dict[str, int]) -> None:
        self.last_of_stem = last_of_stem  # stem → index of the last photo with it
        self.drafts: list[_Draft] = []
        self.until = -1

    def add(self, draft: _Draft | None, stem: str) -> None:
        if draft is not None:
            self.drafts.append(draft)
        self.until = max(self.until, self.last_of_stem[stem])

    def release(self, index: int) -> list[_Draft]:
        """The drafts no later photo can collide with, once photo `index` is read."""
        if index < self.until:
            return []
        drafts, self.drafts = self.drafts, []
        return drafts


class _Scanner:
    def __init__(
        self,
        group: GroupBy,
        on_photo: Callable[[int], None] | None = None,
        known: KnownPhotos | None = None,
        grouped: GroupedPhotos | None = None,
    ) -> None:
        self.group = group
        self.on_photo = on_photo
        self.known = known
        self.grouped = grouped
        self.photos_read = 0
        self.ready: list[_Draft] = []  # complete items for the next batch, in order
        self.problems: list[ScanProblem] = []  # found since the last batch
        self.seen_paths: set[str] = set()
        self.kept: dict[str, dict[str, str]] = {}  # item key → photo sha256 → path shown
        self.buffer = bytearray(HASH_CHUNK)
        self.batch_size = 1  # the first item goes out alone: it starts the run
        self.last_batch = time.monotonic()
        self.read_since_batch = 0

    def target(self, path: Path) -> _Target:
        """Check one argument before anything is scanned; raises ScanError for a usage error."""
        path = Path(os.path.abspath(path))
        name = display_path(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            broken = " (broken symlink)" if os.path.islink(path) else ""
            raise ScanError(f"{name} does not exist{broken}") from None
        except OSError as exc:
            raise ScanError(f"{name} cannot be read: {_os_reason(exc)}") from None
        suffix = path.suffix.lower()
        if stat.S_ISDIR(info.st_mode):
            return _Target("folder", path)
        if suffix in MANIFEST_SUFFIXES:
            # A manifest that cannot be read is a usage error (exit 2, nothing stored), not an
            # item: it would be stored as skipped forever and fail every later run.
            rows = _manifest_rows(path, MANIFEST_SUFFIXES[suffix], self.problems)
            return _Target("manifest", path, rows)
        kind = photo_kind(path.name)
        if kind is not None:
            return _Target(kind, path)
        raise ScanError(
            f"{name} is not a folder, a photo ({', '.join(sorted(PHOTO_SUFFIXES))}) "
            "or a manifest (.csv, .jsonl)"
        )

    def batches(self, targets: list[_Target]) -> Iterator[ScanBatch]:
        """The scan of `targets`, a batch whenever enough is ready; always a last one."""
        # Photos given one by one (`snap *.jpg`) are labelled against each other too.
        last: dict[str, int] = {}
        for index, target in enumerate(targets):
            if target.kind == "photo":
                last[_place_and_stem(target.path)] = index
        loose = _Held(last)
        for index, target in enumerate(targets):
            if target.kind == "folder":
                yield from self._walk(target.path)
            elif target.kind == "manifest":
                yield from self._read_manifest(target.path, target.rows)
            elif target.kind == "unsupported":
                self._problem(target.path, unsupported_reason(target.path.name))
            elif target.kind == "photo":
                draft = _Draft(_stem(target.path), display_path(target.path.parent))
                added = self._add_photo(target.path, draft)
                loose.add(draft if added else None, _place_and_stem(target.path))
                self.ready += loose.release(index)
            if self._due():
                yield self._batch()
        self.ready += loose.release(len(targets))
        yield self._batch()

    # -- folders

    def _walk(self, root: Path) -> Iterator[ScanBatch]:
        """Every folder under `root`, depth first, entries in path order (a.jpg, m/b.jpg,
        z.jpg): each folder's items as they complete."""
        try:
            top = os.stat(root)
        except OSError as exc:
            self._problem(root, f"cannot list the folder: {_os_reason(exc)}")
            return
        visited = {(top.st_dev, top.st_ino): root}
        stack = [self._visit(root, root, visited)]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
            elif isinstance(step, Path):
                stack.append(self._visit(step, root, visited))
            else:
                yield step

    def _visit(
        self, folder: Path, root: Path, visited: dict[tuple[int, int], Path]
    ) -> Iterator[ScanBatch | Path]:
        """One folder: batches as its items complete, and (as Paths, where they come in path
        order) the subfolders to walk next. An iterator, not recursion: trees run deep."""
        photos, subfolders = self._list_folder(folder, visited)
        if self._groups_whole_folder(folder, root):
            self.ready += self._folder_items(folder, photos, auto=folder == root)
            if self._due():
                yield self._batch()
            yield from subfolders
            return
        # One item per photo, each handed out as soon as it is read. A subfolder sorts by its
        # name and a slash: "m.jpg" < "m/b.jpg" < "m_2.jpg", as their paths do.
        held = _Held({path.stem: index for index, path in enumerate(photos)})
        entries = sorted(
            [(path.name, index, path) for index, path in enumerate(photos)]
            + [(path.name + "/", -1, path) for path in subfolders]
        )
        for _name, index, path in entries:
            if index < 0:
                yield path
                continue
            draft = _Draft(_stem(path), display_path(folder))
            added = self._add_photo(path, draft)
            held.add(draft if added else None, path.stem)
            self.ready += held.release(index)
            if self._due():
                yield self._batch()

    def _groups_whole_folder(self, folder: Path, root: Path) -> bool:
        """Whether the folder's photos are grouped together, so its items are known only once
        all of them are read (`--group folder`; any grouping that looks at a folder's photos
        side by side goes here too). Otherwise each photo is an item of its own."""
        return self.group == "auto" or (self.group == "folder" and folder != root)

    def _folder_items(self, folder: Path, photos: list[Path], *, auto: bool) -> list[_Draft]:
        """The items of one folder whose photos are grouped (`_groups_whole_folder`): one, or
        with --group auto the photos loose in a folder given to `scan`, split into products
        when the batch is made (`_auto_items`)."""
        auto = auto and self.group == "auto"
        draft = _Draft(_folder_label(folder), display_path(folder), auto=auto)
        for photo in photos:
            self._add_photo(photo, draft)
        return [draft] if draft.photos else []

    def _list_folder(
        self, folder: Path, visited: dict[tuple[int, int], Path]
    ) -> tuple[list[Path], list[Path]]:
        """Photos directly in `folder` and its subfolders still to walk, both sorted by name."""
        try:
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            self._problem(folder, f"cannot list the folder: {_os_reason(exc)}")
            return [], []
        photos: list[Path] = []
        subfolders: list[Path] = []
        for entry_name in names:
            if entry_name.startswith(".") or entry_name.lower() in IGNORED_NAMES:
                continue
            path = folder / entry_name
            kind = photo_kind(entry_name)
            try:
                info = os.stat(path)
            except OSError as exc:
                # A broken link named notes.txt is none of our business; a loop always is.
                if kind is not None or exc.errno == errno.ELOOP:
                    self._problem(path, _os_reason(exc, link=os.path.islink(path)))
                continue
            if stat.S_ISDIR(info.st_mode):
                seen_as = visited.setdefault((info.st_dev, info.st_ino), path)
                if seen_as != path:
                    self._problem(
                        path, f"symlink loop: same folder as {display_path(seen_as)}, scanned once"
                    )
                else:
                    subfolders.append(path)
            elif kind == "unsupported":
                self._problem(path, unsupported_reason(entry_name))
            elif kind == "photo":
                photos.append(path)
        return photos, subfolders

    # -- manifests

    def _read_manifest(
        self, manifest: Path, rows: list[tuple[int, dict[str, object]]]
    ) -> Iterator[ScanBatch]:
        """The manifest's items in the order they first appear, each handed out once its last
        line and those of the items before it are read."""
        last_line = {_manifest_group(record, line): line for line, record in rows}
        drafts: dict[object, _Draft] = {}  # in order of first appearance
        complete: set[object] = set()
        listed: dict[str, tuple[int, str | None]] = {}
        for line, record in rows:
            group_key = _manifest_group(record, line)
            self._manifest_row(manifest, line, record, group_key, drafts, listed)
            if last_line[group_key] == line:
                complete.add(group_key)
            while drafts and next(iter(drafts)) in complete:
                draft = drafts.pop(next(iter(drafts)))
                if draft.photos:
                    self.ready.append(draft)
            if self._due():
                yield self._batch()
        self.ready += [draft for draft in drafts.values() if draft.photos]

    def _manifest_row(
        self,
        manifest: Path,
        line: int,
        record: dict[str, object],
        group_key: object,
        drafts: dict[object, _Draft],
        listed: dict[str, tuple[int, str | None]],
    ) -> None:
        written = _text(record.get("path"))
        item = _text(record.get("item"))
        notes = _text(record.get("notes"))
        if not written:
            self._problem(manifest, "no 'path' on this line", line)
            return
        target = _inside(manifest.parent, written)
        if target is None:
            self._problem(
                manifest,
                f"{written} is outside the manifest's folder "
                f"({display_path(manifest.parent)}); move it inside",
                line,
            )
            return
        if str(target) in listed:
            first, first_item = listed[str(target)]
            also = "" if first_item == item else f" (item {first_item or 'none'})"
            self._problem(manifest, f"{written} is a duplicate of line {first}{also}", line)
            return
        listed[str(target)] = (line, item)
        reason = _manifest_photo_reason(target, written)
        if reason:
            self._problem(manifest, reason, line)
            return
        draft = drafts.get(group_key)
        if draft is None:
            label = item or _stem(target)
            draft = drafts[group_key] = _Draft(label, f"{manifest.name}:{line}")
        if notes and notes not in draft.notes:
            draft.notes.append(notes)
        self._add_photo(target, draft, context=(display_path(manifest), line))

    # -- photos

    def _add_photo(
        self, path: Path, draft: _Draft, *, context: tuple[str, int] | None = None
    ) -> bool:
        """Fingerprint one photo into `draft`; False when it is not added (read already, or
        unusable: then it is a problem)."""
        key = str(path)
        if key in self.seen_paths:  # reached twice (overlapping arguments): it is one photo
            return False
        self.seen_paths.add(key)
        photo_or_reason = _fingerprint(path, self.buffer, self.known)
        self.photos_read += 1
        self.read_since_batch += 1
        if self.on_photo is not None:
            self.on_photo(self.photos_read)
        if isinstance(photo_or_reason, str):
            if context:
                self._problem(
                    Path(context[0]), f"{display_path(path)}: {photo_or_reason}", context[1]
                )
            else:
                self._problem(path, photo_or_reason)
            return False
        draft.photos.append(photo_or_reason)
        return True

    def _problem(self, path: Path | str, reason: str, line: int | None = None) -> None:
        self.problems.append(ScanProblem(display_path(path), reason, line))

    # -- batches

    def _due(self) -> bool:
        """A batch is due when enough items are ready (1 at first, then twice as many each
        time, up to BATCH_ITEMS), or BATCH_SECONDS after the last one while photos were read."""
        if len(self.ready) >= self.batch_size:
            return True
        waited = time.monotonic() - self.last_batch
        return waited >= BATCH_SECONDS and bool(self.ready or self.read_since_batch)

    def _batch(self) -> ScanBatch:
        """The ready items, de-duplicated against each other and every earlier batch."""
        batch = ScanBatch(problems=self.problems, photos_read=self.photos_read)
        self.problems = []
        for draft in self.ready:
            unique: dict[str, FoundPhoto] = {}
            for photo in sorted(draft.photos, key=lambda p: str(p.path)):
                if photo.sha256 in unique:
                    batch.duplicates.append((photo.display, unique[photo.sha256].display))
                else:
                    unique[photo.sha256] = photo
            if draft.auto:
                self._auto_items(draft, unique, batch)
                continue
            key = item_key(list(unique))
            if key in self.kept:
                for photo in unique.values():
                    batch.duplicates.append((photo.display, self.kept[key][photo.sha256]))
                continue
            self.kept[key] = {sha: photo.display for sha, photo in unique.items()}
            if len(unique) > MANY_PHOTOS:
                batch.warnings.append(
                    ScanProblem(
                        draft.source,
                        f"{len(unique)} photos in one item, more than the {MANY_PHOTOS} one "
                        "product usually has; if it holds several products, give each its "
                        "own folder",
                    )
                )
            notes = "; ".join(draft.notes) or None
            batch.items.append(
                FoundItem(key, draft.label, tuple(unique.values()), notes, draft.source)
            )
        batch.items = _unique_labels(batch.items)
        self.ready = []
        self.batch_size = min(self.batch_size * 2, BATCH_ITEMS)
        self.last_batch = time.monotonic()
        self.read_since_batch = 0
        return batch

    def _auto_items(self, draft: _Draft, unique: dict[str, FoundPhoto], batch: ScanBatch) -> None:
        """--group auto: the folder's photos split into products (`grouping.group_photos`);
        photos already in an item keep it."""
        from .grouping import group_photos

        grouped = self.grouped(list(unique)) if self.grouped is not None else {}
        grouping = group_photos(list(unique.values()), draft.source, grouped)
        batch.groupings.append(grouping)
        for item in grouping.items():
            if item.key not in self.kept:
                self.kept[item.key] = {photo.sha256: photo.display for photo in item.photos}
                batch.items.append(item)


def _manifest_group(record: dict[str, object], line: int) -> object:
    """Which item a manifest line belongs to: its `item`, or the line alone."""
    item = _text(record.get("item"))
    return ("item", item) if item else ("line", line)


def _place_and_stem(path: Path) -> str:
    return f"{path.parent}/{path.stem}"


def _unique_labels(items: list[FoundItem]) -> list[FoundItem]:
    """`photo.heic` and `photo.webp` in one folder are two items: a label made from a file's
    stem keeps its suffix when another item from the same place has the same stem."""
    seen: dict[tuple[str, str], int] = {}
    for item in items:
        seen[(item.source, item.label)] = seen.get((item.source, item.label), 0) + 1
    return [
        replace(item, label=display_path(item.photos[0].path.name))
        if seen[(item.source, item.label)] > 1
        and len(item.photos) == 1
        and item.label == _stem(item.photos[0].path)
        else item
        for item in items
    ]


def _fingerprint(
    path: Path, buffer: bytearray, known: KnownPhotos | None = None
) -> FoundPhoto | str:
    """Hash a photo in chunks (unless `known` has it unchanged); return it, or the reason it
    cannot be read. A known photo is still opened: one that became unreadable says so."""
    try:
        # O_NONBLOCK: opening a FIFO named like a photo must not hang the scan.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return _os_reason(exc, link=os.path.islink(path))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        os.close(fd)
        if info.st_size == 0 and stat.S_ISREG(info.st_mode):
            return "empty file (0 bytes)"
        return "not a regular file (a pipe or device named like a photo)"
    if known is not None and (sha256 := known(path, info.st_size, info.st_mtime_ns)):
        os.close(fd)
        return FoundPhoto(path, sha256, info.st_size, info.st_mtime_ns)
    with open(fd, "rb", buffering=0) as file:
        digest = hashlib.sha256()
        view = memoryview(buffer)
        try:
            while count := file.readinto(buffer):
                digest.update(view[:count])
        except OSError as exc:
            return _os_reason(exc)
    return FoundPhoto(path, digest.hexdigest(), info.st_size, info.st_mtime_ns)


def _os_reason(exc: OSError, *, link: bool = False) -> str:
    """An OSError in a seller's words."""
    if exc.errno == errno.ENOENT:
        if link:
            return "broken symlink (its target does not exist)"
        return "vanished during the scan (moved or deleted)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (cannot read the file)"
    if exc.errno == errno.ELOOP:
        return "symlink loop (the link points back to itself)"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name or path too long"
    return f"cannot read ({exc.strerror or exc})"


def _manifest_rows(
    manifest: Path, flavour: str, problems: list[ScanProblem]
) -> list[tuple[int, dict[str, object]]]:
    """(line number, row) pairs from a CSV or JSON-lines manifest, keys lower-cased."""
    name = display_path(manifest)
    try:
        size = manifest.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ScanError(
                f"{name}: {size / 2**20:,.0f} MiB is too large for a manifest (at most "
                f"{MAX_MANIFEST_BYTES // 2**20} MiB); split it"
            )
        raw = manifest.read_bytes()
    except OSError as exc:
        raise ScanError(f"{name}: cannot read the manifest: {_os_reason(exc)}") from None
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScanError(
            f"{name}: not UTF-8 text (invalid byte at offset {exc.start + bom}); save it as UTF-8"
        ) from None
    rows = _csv_rows(text, name) if flavour == "csv" else _jsonl_rows(text, name, problems)
    return rows


def _csv_rows(text: str, name: str) -> list[tuple[int, dict[str, object]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise ScanError(f"{name}: empty manifest; the first line must name a 'path' column")
        columns = [column.strip().lower() for column in header]
        if "path" not in columns:
            found = ", ".join(repr(column) for column in header) or "none"
            raise ScanError(f"{name}: no 'path' column (found columns: {found})")
        rows: list[tuple[int, dict[str, object]]] = []
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, dict(zip(columns, row, strict=False))))
    except csv.Error as exc:
        raise ScanError(f"{name}, line {reader.line_num}: not valid CSV ({exc})") from None
    return rows


def _jsonl_rows(
    text: str, name: str, problems: list[ScanProblem]
) -> list[tuple[int, dict[str, object]]]:
    rows = []
    keys: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(ScanProblem(name, f"not valid JSON ({exc.msg})", number))
            continue
        if not isinstance(record, dict):
            problems.append(ScanProblem(name, "expected a JSON object with a 'path' key", number))
            continue
        record = {str(key).strip().lower(): value for key, value in record.items()}
        keys.update(record)
        rows.append((number, record))
    if rows and "path" not in keys:
        found = ", ".join(repr(key) for key in sorted(keys)) or "none"
        raise ScanError(f"{name}: no 'path' column (found columns: {found})")
    return rows


def _manifest_photo_reason(target: Path, written: str) -> str | None:
    """Why a manifest row's file cannot be a photo, or None when it can be fingerprinted."""
    kind = photo_kind(target.name)
    if kind == "unsupported":
        return f"{written}: {unsupported_reason(target.name)}"
    if kind is None:
        suffix = target.suffix.lower() or "no extension"
        return f"{written} is not a photo ({suffix})"
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return f"{written} not found (listed in the manifest, but no such file)"
    except OSError as exc:
        return f"{written}: {_os_reason(exc, link=os.path.islink(target))}"
    if stat.S_ISDIR(info.st_mode):
        return f"{written} is a folder; list the photo files in it"
    return None


def _inside(folder: Path, written: str) -> Path | None:
    """`written` resolved against `folder`, or None if it points outside it (no symlink games)."""
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(base, written))
    if os.path.commonpath([base, target]) != base:
        return None
    return Path(target)


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _stem(path: Path) -> str:
    return display_path(path.stem)


def _folder_label(folder: Path) -> str:
    return display_path(folder.name or str(folder))
