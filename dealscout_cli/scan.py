"""Find photos in folders and manifests, group them into items, fingerprint their content.

An item's key is a hash of its photos' contents, not their names, so renaming or
moving photos makes no new (paid) work. Every photo found ends in exactly one
item, in `problems` (with a reason a seller can act on) or in `duplicates`:
nothing vanishes, and nothing on disk makes `scan` raise except a path given on
the command line that does not exist or a manifest that cannot be read at all.
`warnings` point at items that are probably grouped wrong; they are still items.
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
from collections.abc import Callable, Mapping, Sequence
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
KnownPhotos = Callable[[list[str]], Mapping[str, tuple[str, int]]]

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


@dataclass
class ScanResult:
    items: list[FoundItem] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    # Items kept but worth a look (e.g. too many photos for one product); not skipped.
    warnings: list[ScanProblem] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, same content as path)
    groupings: list[Grouping] = field(default_factory=list)  # --group auto: one per folder


def scan(
    paths: Sequence[Path | str],
    group: GroupBy = "photo",
    on_photo: Callable[[int], None] | None = None,
    known: KnownPhotos | None = None,
) -> ScanResult:
    """Scan folders (recursively), manifests (.csv/.jsonl) and single photos into items.

    `group="photo"` makes each photo an item; `group="folder"` makes each folder
    holding photos one item, except the folders given in `paths`: photos loose in
    those are one item each (a shoot's top folder holds products, it is not one). A
    manifest's `item` column groups its rows itself. `group="auto"` is "folder" for
    subfolders and splits the photos loose in a folder you name into products
    (`grouping.group_photos`); photos `known(sha256s)` already puts in an item keep it.
    `on_photo(n)` is called after each photo is read and hashed, with the count so far
    (10,000 photos take seconds: enough to want a counter).
    """
    if group not in GROUPINGS:
        raise ScanError(f"unknown grouping {group!r}; use 'photo', 'folder' or 'auto'")
    scanner = _Scanner(group, on_photo, known)
    for path in paths:
        scanner.add(Path(path))
    return scanner.result()


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


class _Scanner:
    def __init__(
        self,
        group: GroupBy,
        on_photo: Callable[[int], None] | None = None,
        known: KnownPhotos | None = None,
    ) -> None:
        self.group = group
        self.on_photo = on_photo
        self.known = known
        self.photos_read = 0
        self.drafts: list[_Draft] = []
        self.problems: list[ScanProblem] = []
        self.seen_paths: set[str] = set()
        self.buffer = bytearray(HASH_CHUNK)

    def add(self, path: Path) -> None:
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
            self._walk(path)
        elif suffix in MANIFEST_SUFFIXES:
            # A manifest that cannot be read is a usage error (exit 2, nothing stored), not an
            # item: it would be stored as skipped forever and fail every later run.
            self._read_manifest(path, MANIFEST_SUFFIXES[suffix])
        elif photo_kind(path.name) == "unsupported":
            self._problem(path, unsupported_reason(path.name))
        elif photo_kind(path.name) == "photo":
            self._add_photo(path, _Draft(_stem(path), display_path(path.parent)))
        else:
            raise ScanError(
                f"{name} is not a folder, a photo ({', '.join(sorted(PHOTO_SUFFIXES))}) "
                "or a manifest (.csv, .jsonl)"
            )

    # -- folders

    def _walk(self, root: Path) -> None:
        first_draft = len(self.drafts)
        top = os.stat(root)
        visited = {(top.st_dev, top.st_ino): root}
        stack = [root]
        while stack:
            folder = stack.pop()
            photos, subfolders = self._list_folder(folder, visited)
            if photos:
                if self.group == "auto" or (self.group == "folder" and folder != root):
                    auto = self.group == "auto" and folder == root
                    draft = _Draft(_folder_label(folder), display_path(folder), auto=auto)
                    for photo in photos:
                        self._add_photo(photo, draft)
                else:
                    for photo in photos:
                        self._add_photo(photo, _Draft(_stem(photo), display_path(folder)))
            stack.extend(reversed(subfolders))
        # Items in path order (a.jpg, m/b.jpg, z.jpg), however the walk reached them.
        self.drafts[first_draft:] = sorted(
            self.drafts[first_draft:],
            key=lambda draft: (
                str(draft.photos[0].path.parent)
                if self.group != "photo" and draft.photos[0].path.parent != root
                else str(draft.photos[0].path)
            ),
        )

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

    def _read_manifest(self, manifest: Path, flavour: str) -> None:
        rows = _manifest_rows(manifest, flavour, self.problems)
        drafts: dict[object, _Draft] = {}
        listed: dict[str, tuple[int, str | None]] = {}
        where = display_path(manifest)
        for line, record in rows:
            written = _text(record.get("path"))
            item = _text(record.get("item"))
            notes = _text(record.get("notes"))
            if not written:
                self._problem(manifest, "no 'path' on this line", line)
                continue
            target = _inside(manifest.parent, written)
            if target is None:
                self._problem(
                    manifest,
                    f"{written} is outside the manifest's folder "
                    f"({display_path(manifest.parent)}); move it inside",
                    line,
                )
                continue
            if str(target) in listed:
                first, first_item = listed[str(target)]
                also = "" if first_item == item else f" (item {first_item or 'none'})"
                self._problem(manifest, f"{written} is a duplicate of line {first}{also}", line)
                continue
            listed[str(target)] = (line, item)
            reason = _manifest_photo_reason(target, written)
            if reason:
                self._problem(manifest, reason, line)
                continue
            group_key: object = ("item", item) if item else ("line", line)
            draft = drafts.get(group_key)
            if draft is None:
                label = item or _stem(target)
                draft = drafts[group_key] = _Draft(label, f"{manifest.name}:{line}")
                self.drafts.append(draft)
            if notes and notes not in draft.notes:
                draft.notes.append(notes)
            self._add_photo(target, draft, register=False, context=(where, line))

    # -- photos

    def _add_photo(
        self,
        path: Path,
        draft: _Draft,
        *,
        register: bool = True,
        context: tuple[str, int] | None = None,
    ) -> None:
        """Fingerprint one photo into `draft`; `register` adds the draft to the scan when new."""
        key = str(path)
        if key in self.seen_paths:  # reached twice (overlapping arguments): it is one photo
            return
        self.seen_paths.add(key)
        photo_or_reason = _fingerprint(path, self.buffer)
        self.photos_read += 1
        if self.on_photo is not None:
            self.on_photo(self.photos_read)
        if isinstance(photo_or_reason, str):
            if context:
                self._problem(
                    Path(context[0]), f"{display_path(path)}: {photo_or_reason}", context[1]
                )
            else:
                self._problem(path, photo_or_reason)
            return
        draft.photos.append(photo_or_reason)
        if register and (not self.drafts or self.drafts[-1] is not draft):
            self.drafts.append(draft)

    def _problem(self, path: Path | str, reason: str, line: int | None = None) -> None:
        self.problems.append(ScanProblem(display_path(path), reason, line))

    def result(self) -> ScanResult:
        result = ScanResult(problems=sorted(self.problems, key=lambda p: (p.path, p.line or 0)))
        kept: dict[str, dict[str, str]] = {}  # item key → photo sha256 → path shown
        for draft in self.drafts:
            unique: dict[str, FoundPhoto] = {}
            for photo in sorted(draft.photos, key=lambda p: str(p.path)):
                if photo.sha256 in unique:
                    result.duplicates.append((photo.display, unique[photo.sha256].display))
                else:
                    unique[photo.sha256] = photo
            if not unique:
                continue
            if draft.auto:
                self._auto_items(draft, unique, kept, result)
                continue
            key = item_key(list(unique))
            if key in kept:
                for photo in unique.values():
                    result.duplicates.append((photo.display, kept[key][photo.sha256]))
                continue
            kept[key] = {sha: photo.display for sha, photo in unique.items()}
            if len(unique) > MANY_PHOTOS:
                result.warnings.append(
                    ScanProblem(
                        draft.source,
                        f"{len(unique)} photos in one item, more than the {MANY_PHOTOS} one "
                        "product usually has; if it holds several products, give each its "
                        "own folder",
                    )
                )
            result.items.append(
                FoundItem(
                    key=key,
                    label=draft.label,
                    photos=tuple(unique.values()),
                    notes="; ".join(draft.notes) or None,
                    source=draft.source,
                )
            )
        result.items = _unique_labels(result.items)
        return result

    def _auto_items(
        self,
        draft: _Draft,
        unique: dict[str, FoundPhoto],
        kept: dict[str, dict[str, str]],
        result: ScanResult,
    ) -> None:
        from .grouping import group_photos

        known = self.known(list(unique)) if self.known is not None else {}
        grouping = group_photos(list(unique.values()), draft.source, known)
        result.groupings.append(grouping)
        for item in grouping.items():
            if item.key not in kept:
                kept[item.key] = {photo.sha256: photo.display for photo in item.photos}
                result.items.append(item)


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


def _fingerprint(path: Path, buffer: bytearray) -> FoundPhoto | str:
    """Hash a photo in chunks; return it, or the reason it cannot be read."""
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
