"""Photos for the review pages: each one a stripped, upright JPEG made from the item's own
file by `images.prepare_photo` (so HEIC opens, EXIF and GPS never reach the browser, a
hostile file is refused like anywhere else), cached on disk beside the database.

Only files the store lists as an item's photos are ever opened: a request names a photo by
its row id, never by a path, so no URL reaches any other file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from enum import Enum
from pathlib import Path

from dealscout_cli.images import prepare_photo


class Size(Enum):
    """Longest side in pixels."""

    THUMB = 320
    LARGE = 1600


def cache_folder(db: Path) -> Path:
    return db.with_name(db.name + "-thumbnails")


def photo_jpeg(path: str, sha256: str, size: Size, cache: Path) -> bytes:
    """The photo at `size`, from the cache when made before; BadPhoto when the file is gone,
    changed since it was scanned, or cannot be read as an image."""
    cached = cache / f"{sha256}-{size.value}.jpg"
    with contextlib.suppress(OSError):
        return cached.read_bytes()
    data = prepare_photo(Path(path), max_side=size.value, expected_sha256=sha256).data
    with contextlib.suppress(OSError):  # a read-only folder: serve it uncached
        cache.mkdir(exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=cache, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, cached)
    return data
