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
from dealscout_cli.barcodes import Barcode, prepare_and_read  # noqa: E402
from dealscout_cli.errors import BadPhoto  # noqa: E402
from dealscout_cli.images import open_image, prepare_photo, read_photo_bytes  # noqa: E402

CACHE = Path(os.environ.get("DEALSCOUT_BENCH_CACHE", "/tmp/dealscout-bench")) / "barcodes-v1"
FORMAT = zxingcpp.BarcodeFormat
EANS = ("4006381333931", "9780306406157", "5901234123457", "8711253001202", "4012345678901")
UPCS = ("036000291452", "012345678905", "042100005264")
MODULES = (2, 3, 4, 5, 6, 8, 12)  # px a bar at 4000 px wide
ANGLES = (0, 8, 20, 35, 45, 90, 180, 270, 0, 0)
BLURS = (0.0, 0.0, 0.5, 0.0, 1.0)  # Gaussian radius, in bars: out of focus


@dataclass(frozen=True)
class Case:
    name: str
    text: str | None  # the code printed on it, None for a photo without one
    fmt: str = ""
    module: int = 0
    angle: int = 0
    blur: float = 0.0

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
        module, angle, blur = MODULES[i % 7], ANGLES[i % 10], BLURS[i % 5]
        if fmt == "QRCode":
            blur = 0.0  # a blur of one module leaves no QR code readable
        made.append(Case(f"code-{i:03d}", text, fmt, module, angle, blur))
    made += [Case(f"plain-{i:03d}", None) for i in range(without)]
    return made


def make_photo(case: Case, index: int) -> None:
    """A 4000×3000 noisy product photo, with the case's code pasted somewhere on it."""
    rng = random.Random(case.name)
    photo = product_image(PRODUCTS[index % len(PRODUCTS)], (4000, 3000), seed=100 + index)
    if case.text is not None:
        symbol = zxingcpp.create_barcode(case.text, getattr(FORMAT, case.fmt))
        code = Image.fromarray(symbol.to_image(scale=case.module)).convert("RGB")
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

    rows = []
    for case in chosen:
        old = old_read_barcodes(case.path)
        before = barcodes.PASSES.full_reads
        _prepared, new = prepare_and_read(case.path, check_quality=True)
        full_read = barcodes.PASSES.full_reads > before
        prep = cpu_ms(lambda c=case: prepare_photo(c.path, check_quality=True), repeat)
        old_ms = cpu_ms(lambda c=case: old_read_barcodes(c.path), repeat)
        both = cpu_ms(lambda c=case: prepare_and_read(c.path, check_quality=True), repeat)
        rows.append((case, old, new, full_read, prep, old_ms, max(0.0, both - prep)))

    print(f"\n{'photo':<10} {'code':<7} {'bar px':>6} {'angle':>5} {'blur':>4}  old  new  pass2")
    for case, old, new, full_read, *_ in rows:
        if case.text is None:
            continue
        want = expected(case)
        print(
            f"{case.name:<10} {case.fmt:<7} {case.module:>6} {case.angle:>5} {case.blur:>4}"
            f"  {'yes' if want in texts(old) else 'no':<4} {'yes' if want in texts(new) else 'no':<4}"
            f" {'yes' if full_read else 'no'}"
        )
    coded = [r for r in rows if r[0].text is not None]
    plain = [r for r in rows if r[0].text is None]
    old_found = sum(expected(r[0]) in texts(r[1]) for r in coded)
    new_found = sum(expected(r[0]) in texts(r[2]) for r in coded)
    lost = [r[0].name for r in coded if expected(r[0]) in texts(r[1]) - texts(r[2])]
    gained = [r[0].name for r in coded if expected(r[0]) in texts(r[2]) - texts(r[1])]
    stray = [r[0].name for r in plain if r[1] or r[2]]
    print(f"\ndetection: old {old_found}/{len(coded)}, new {new_found}/{len(coded)}")
    print(f"  found by old, missed by new: {lost or 'none'}")
    print(f"  found by new, missed by old: {gained or 'none'}")
    print(f"  a code read on a photo without one: {stray or 'none'}")
    print(
        f"  full-size pass taken: {sum(r[3] for r in coded)}/{len(coded)} with a code, "
        f"{sum(r[3] for r in plain)}/{len(plain)} without"
    )

    def mean(group: list, column: int) -> float:
        return statistics.fmean(r[column] for r in group)

    print(f"\nCPU ms a photo (best of {repeat})    prep   barcodes old   barcodes new")
    for label, group in (("without a code", plain), ("with a code", coded)):
        print(
            f"  {label:<28} {mean(group, 4):5.1f}   {mean(group, 5):12.1f}   {mean(group, 6):12.1f}"
        )


if __name__ == "__main__":
    main()
