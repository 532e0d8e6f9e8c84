"""Write the good-but-awkward photo fixtures the image tests and benchmarks use.

    python test_images/make_test_images.py                 # into test_images/
    python test_images/make_test_images.py DIR --large     # plus a 12 MP JPEG (never committed)

Fixtures: JPEG with EXIF orientation 6 and GPS, PNG, RGBA PNG, WebP, animated
palette GIF, HEIC, CMYK JPEG, 16-bit greyscale PNG and a small 300×200 JPEG.
The drawing code lives in tests/photo_factory.py (`make_fixture_set`,
`make_large_jpeg`), importable from tests as `from photo_factory import ...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from photo_factory import make_fixture_set, make_large_jpeg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=HERE)
    parser.add_argument("--large", action="store_true", help="also write large-12mp.jpg")
    args = parser.parse_args()
    made = make_fixture_set(args.folder)
    if args.large:
        made["large-12mp.jpg"] = make_large_jpeg(args.folder / "large-12mp.jpg", megapixels=12)
    for path in made.values():
        print(f"{path}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
