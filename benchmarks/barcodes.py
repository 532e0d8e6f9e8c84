"""What barcode reading costs on 12-MP photos, and what it finds: the old reader against the new.

A set of noisy 12-MP product photos (tests/photo_factory.py), some plain and some with an
EAN-13, UPC-A or GS1 Digital Link QR code pasted at several module sizes (2-12 px a bar at
full size: far from the camera to close up), angles and blurs. Each photo is read by

  old: the reader before the cheap look (copied below): decode the JPEG again at a 2000 px
       draft and run zxing-cpp over all of it, on every photo;
  new: `barcodes.prepare_and_read`, the one decode the 768 px copy needs, a cheap look for
       something barcode-like in it, and the 2000 px read only where something is seen.

and the script prints the detection rate of each, every code one finds and the other
misses, and CPU ms a photo with and without a code (process time, best of `--repeat`:
the machine is shared, so CPU time, never wall time).

    python benchmarks/barcodes.py              # 40 photos with a code, 20 without
    python benchmarks/barcodes.py --quick      # 10 + 5, one repeat
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import zxingcpp  # noqa: E402
from photo_factory import PRODUCTS, product_image, save_jpeg  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from dealscout_cli import barcodes  # noqa: E402
from dealscout_cli.barcodes import Barcode, prepare_and_read, read_decoded  # noqa: E402
from dealscout_cli.errors import BadPhoto  # noqa: E402
from dealscout_cli.images import (  # noqa: E402
    decode_photo,
    open_image,
    prepare_photo,
    read_photo_bytes,
)

CACHE = Path(os.environ.get("DEALSCOUT_BENCH_CACHE", "/tmp/dealscout-bench")) / "barcodes-v3"
FORMAT = zxingcpp.BarcodeFormat
EANS = ("4006381333931", "9780306406157", "5901234123457", "8711253001202", "4012345678901")
UPCS = ("036000291452", "012345678905", "042100005264")
MODULES = (2, 3, 4, 5, 6, 8, 12, 24)  # px a bar at 4000 px wide: far away to close up
ANGLES = (0, 8, 20, 35, 45, 90, 180, 270, 0, 0)
BLURS = (0.0, 0.0, 0.5, 0.0, 1.0)  # Gaussian radius, in bars: out of focus
CONTRASTS = (255, 100, 255, 50)  # grey bars on a beige label


@dataclass(frozen=True)
class Case:
    name: str
    text: str | None  # the code printed on it, None for a photo without one
    fmt: str = ""
    module: int = 0
    angle: int = 0
    blur: float = 0.0
    contrast: int = 255

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}.jpg"


def cases(with_code: int, without: int) -> list[Case]:
    made = []
    for i in range(with_code):
        if i % 10 == 9:
            fmt, text = "QRCode", "https://id.gs1.org/01/09506000134352"
        elif i % 3 == 2:
            fmt, text = "UPCA", UPCS[i % len(UPCS)]
        else:
            fmt, text = "EAN13", EANS[i % len(EANS)]
        module, angle, blur = MODULES[i % len(MODULES)], ANGLES[i % 10], BLURS[i % 5]
        if fmt == "QRCode":
            blur = 0.0  # a blur of one module leaves no QR code readable
        contrast = CONTRASTS[(i // 3) % len(CONTRASTS)]
        made.append(Case(f"code-{i:03d}", text, fmt, module, angle, blur, contrast))
    made += [Case(f"plain-{i:03d}", None) for i in range(without)]
    return made


def make_photo(case: Case, index: int) -> None:
    """A 4000×3000 noisy product photo, with the case's code pasted somewhere on it."""
    rng = random.Random(case.name)
    photo = product_image(PRODUCTS[index % len(PRODUCTS)], (4000, 3000), seed=100 + index)
    if case.text is not None:
        symbol = zxingcpp.create_barcode(case.text, getattr(FORMAT, case.fmt))
        code = Image.fromarray(symbol.to_image(scale=case.module)).convert("RGB")
        if case.contrast < 255:
            low = 220 - case.contrast
            code = Image.eval(code, lambda v: low + v * case.contrast // 255)
        if case.blur:
            code = code.filter(ImageFilter.GaussianBlur(case.blur * case.module))
        if case.angle:
            code = code.rotate(
                case.angle, expand=True, fillcolor="white", resample=Image.Resampling.BICUBIC
            )
        x = rng.randrange(100, photo.width - code.width - 100)
        y = rng.randrange(100, photo.height - code.height - 100)
        photo.paste(code, (x, y))
    save_jpeg(photo, case.path, quality=90)


# ------------------------------------------------------------- the old reader, as it was


def old_read_barcodes(path: Path) -> list[Barcode]:
    """dealscout_cli.barcodes.read_barcodes before the cheap look (commit 8547d56)."""
    name = str(path)
    image = open_image(read_photo_bytes(path), name)
    full_size = image.size
    try:
        if image.format in ("JPEG", "MPO"):
            scale = barcodes._draft_scale(full_size, barcodes.FAST_SIDE)
            image.draft("L", (full_size[0] // scale, full_size[1] // scale))
        image.load()
    except Exception as exc:
        raise BadPhoto(name, "truncated or corrupt image data") from exc
    found: dict[Barcode, None] = {}
    for result in zxingcpp.read_barcodes(image, formats=barcodes._READ_FORMATS):  # type: ignore[arg-type]
        barcode = barcodes._normalised(result.text, result.format.name)
        if barcode is not None:
            found.setdefault(barcode)
    return list(found)


# ------------------------------------------------------------------------ measuring


def cpu_ms(work: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best * 1000


def texts(found: list[Barcode]) -> set[str]:
    return set(barcodes.product_codes(found)) | {b.text for b in found}


def expected(case: Case) -> str:
    assert case.text is not None
    return case.text[-12:] if case.fmt == "UPCA" else case.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 + 5 photos, one repeat")
    parser.add_argument("--repeat", type=int, default=3, help="timings: best of this many")
    args = parser.parse_args()
    with_code, without, repeat = (10, 5, 1) if args.quick else (40, 20, args.repeat)
    chosen = cases(with_code, without)
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [(i, c) for i, c in enumerate(chosen) if not c.path.exists()]
    if missing:
        print(f"generating {len(missing)} 12-MP photos into {CACHE} (once) ...", flush=True)
        for index, case in missing:
            make_photo(case, index)

    rows = [measure(case, repeat) for case in chosen]
    print(
        f"\n{'photo':<10} {'code':<7} {'bar px':>6} {'angle':>5} {'blur':>4} {'contrast':>8}"
        "  old  new  decoded again"
    )
    for row in rows:
        case = row.case
        if case.text is not None:
            print(
                f"{case.name:<10} {case.fmt:<7} {case.module:>6} {case.angle:>5} {case.blur:>4}"
                f" {case.contrast:>8}  {_yes(row.old_found):<4} {_yes(row.new_found):<4}"
                f" {_yes(row.decoded_again)}"
            )
    coded = [r for r in rows if r.case.text is not None]
    plain = [r for r in rows if r.case.text is None]
    lost = [r.case.name for r in coded if r.old_found and not r.new_found]
    gained = [r.case.name for r in coded if r.new_found and not r.old_found]
    stray = [r.case.name for r in plain if r.old or r.new]
    print(
        f"\ndetection: old {sum(r.old_found for r in coded)}/{len(coded)}, "
        f"new {sum(r.new_found for r in coded)}/{len(coded)}"
    )
    print(f"  found by old, missed by new: {lost or 'none'}")
    print(f"  found by new, missed by old: {gained or 'none'}")
    print(f"  a code read on a photo without one: {stray or 'none'}")
    print(
        f"  decoded again: {sum(r.decoded_again for r in coded)}/{len(coded)} with a code, "
        f"{sum(r.decoded_again for r in plain)}/{len(plain)} without"
    )
    print(
        f"\nCPU ms a photo, best of {repeat}   barcodes old  barcodes new"
        "   prep+barcodes old  prep+barcodes new"
    )
    for label, group in (("without a code", plain), ("with a code", coded)):
        old_total = statistics.fmean(r.prep_ms + r.old_ms for r in group)
        print(
            f"  {label:<28} {statistics.fmean(r.old_ms for r in group):12.1f}"
            f"  {statistics.fmean(r.new_ms for r in group):12.1f}"
            f"   {old_total:17.1f}  {statistics.fmean(r.both_ms for r in group):17.1f}"
        )


@dataclass(frozen=True)
class Row:
    case: Case
    old: list[Barcode]
    new: list[Barcode]
    decoded_again: bool  # the new reader's second decode at 2000 px
    prep_ms: float  # images.prepare_photo alone
    old_ms: float  # the old reader alone (its own decode)
    new_ms: float  # the new reader on the decode prep already made
    both_ms: float  # barcodes.prepare_and_read: prep and the new reader

    @property
    def old_found(self) -> bool:
        return self.case.text is not None and expected(self.case) in texts(self.old)

    @property
    def new_found(self) -> bool:
        return self.case.text is not None and expected(self.case) in texts(self.new)


def measure(case: Case, repeat: int) -> Row:
    before = barcodes.PASSES.full_reads
    _prepared, new = prepare_and_read(case.path, check_quality=True)
    decoded_again = barcodes.PASSES.full_reads > before
    decoded = decode_photo(case.path)
    return Row(
        case,
        old_read_barcodes(case.path),
        new,
        decoded_again,
        cpu_ms(lambda: prepare_photo(case.path, check_quality=True), repeat),
        cpu_ms(lambda: old_read_barcodes(case.path), repeat),
        cpu_ms(lambda: read_decoded(decoded), repeat),
        cpu_ms(lambda: prepare_and_read(case.path, check_quality=True), repeat),
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    main()
