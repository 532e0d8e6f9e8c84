"""Write a corpus of bad (and a few good) inputs, with the outcome expected for each.

    python test_images/make_bad_inputs.py DIR

DIR/expected.json maps each input, as a path relative to DIR (non-UTF-8 bytes
shown as \\xNN, the way dealscout prints them), to "ok" or to a substring of the
reason dealscout gives: a ScanProblem reason from `scan`, a BadPhoto reason from
`prepare_photo`, or a ScanError message for the manifests in DIR/manifests/
(scan each manifest on its own; their photos sit in DIR/manifests/photos/ and
are "ok"). Hidden files and system litter (.DS_Store, Thumbs.db) are written
too, and must simply be ignored; they are not in expected.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from photo_factory import (  # noqa: E402
    exif_with_text_orientation,
    make_16bit_png,
    make_animated_gif,
    make_jpeg,
    make_png_bomb,
    make_truncated_jpeg,
    product_image,
    save_jpeg,
)

NON_UTF8_NAME = b"caf\xe9-menu.jpg"
LONG_NAME = "long-" + "x" * 241 + ".jpg"  # 250 bytes, under the usual 255-byte limit


def write_photos(folder: Path) -> dict[str, str]:
    expected: dict[str, str] = {}

    def expect(name: str, outcome: str) -> None:
        expected[name] = outcome

    make_jpeg(folder / "good-mug.jpg", (800, 600), kind="mug", seed=1)
    expect("good-mug.jpg", "ok")
    product_image("sneaker", (800, 600), seed=2).save(folder / "good-sneaker.png")
    expect("good-sneaker.png", "ok")
    product_image("book", (640, 480), seed=3).convert("CMYK").save(folder / "cmyk.jpg")
    expect("cmyk.jpg", "ok")
    make_16bit_png(folder / "gray-16bit.png")
    expect("gray-16bit.png", "ok")
    rgba = product_image("lamp", (640, 480), seed=4).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(folder / "transparent.png")
    expect("transparent.png", "ok")
    make_animated_gif(folder / "animated.gif")
    expect("animated.gif", "ok")
    save_jpeg(
        product_image("handbag", (640, 480), seed=5), folder / "orientation-9.jpg", orientation=9
    )
    expect("orientation-9.jpg", "ok")
    product_image("mug", (640, 480), seed=6).save(
        folder / "orientation-text.jpg", exif=exif_with_text_orientation()
    )
    expect("orientation-text.jpg", "ok")

    (folder / "empty.jpg").write_bytes(b"")
    expect("empty.jpg", "empty file (0 bytes)")
    make_truncated_jpeg(folder / "truncated.jpg")
    expect("truncated.jpg", "truncated or corrupt image data")
    (folder / "shopping-list.jpg").write_text("eggs\nmilk\nnot a photo\n")
    expect("shopping-list.jpg", "not an image")
    product_image("book", (200, 150)).save(folder / "old-scan.bmp")
    expect("old-scan.bmp", "unsupported format (.bmp)")
    product_image("book", (200, 150)).save(folder / "scanner.TIFF")
    expect("scanner.TIFF", "unsupported format (.tiff)")
    make_png_bomb(folder / "bomb.png")
    expect("bomb.png", "too large")
    Image.new("RGB", (1, 1), "red").save(folder / "one-pixel.png")
    expect("one-pixel.png", "too small (1×1 px)")
    return expected


def write_file_system_oddities(folder: Path) -> dict[str, str]:
    expected: dict[str, str] = {}
    locked = make_jpeg(folder / "locked.jpg", seed=7)
    locked.chmod(0)
    # chmod 000 stops everyone but root; a FIFO named like a photo fails for root too.
    expected["locked.jpg"] = "ok" if os.geteuid() == 0 else "permission denied"
    os.mkfifo(folder / "pipe.jpg")
    expected["pipe.jpg"] = "not a regular file"
    (folder / "loop.jpg").symlink_to("loop.jpg")
    expected["loop.jpg"] = "symlink loop"
    (folder / "loop-folder").symlink_to(".")
    expected["loop-folder"] = "symlink loop"
    (folder / "broken-link.jpg").symlink_to("moved-away.jpg")
    expected["broken-link.jpg"] = "broken symlink"
    make_jpeg(folder / "album.jpg" / "inside.jpg", seed=8)  # a folder named like a photo
    expected["album.jpg/inside.jpg"] = "ok"
    with open(os.fsencode(folder) + b"/" + NON_UTF8_NAME, "wb") as file:
        file.write(make_jpeg(folder / "tmp.jpg", seed=9).read_bytes())
    (folder / "tmp.jpg").unlink()
    expected[
        os.fsdecode(NON_UTF8_NAME)
        .encode("utf-8", "surrogateescape")
        .decode("utf-8", "backslashreplace")
    ] = "ok"
    make_jpeg(folder / LONG_NAME, seed=10)
    expected[LONG_NAME] = "ok"
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    make_jpeg(folder / ".hidden.jpg", seed=11)
    return expected


def write_manifests(folder: Path) -> dict[str, str]:
    photos = folder / "photos"
    for seed, name in enumerate(["a.jpg", "b.jpg", "c.jpg"], start=20):
        make_jpeg(photos / name, seed=seed)
    make_jpeg(folder.parent / "outside.jpg", seed=30)  # the photo outside.csv must refuse
    manifests = {
        "missing-column.csv": ("file,item\nphotos/a.jpg,Mug\n", "no 'path' column"),
        "unknown-path.csv": ("path,item\nphotos/a.jpg,Mug\nphotos/ghost.jpg,Mug\n", "not found"),
        "outside.csv": ("path\n../outside.jpg\nphotos/b.jpg\n", "outside the manifest's folder"),
        "duplicates.csv": (
            "path,item\nphotos/c.jpg,Lamp\nphotos/c.jpg,Lamp\n",
            "duplicate of line",
        ),
        "bad-line.jsonl": ('{"path": "photos/a.jpg"}\n{"path": photos/b.jpg}\n', "not valid JSON"),
    }
    expected = {f"manifests/photos/{name}": "ok" for name in ("a.jpg", "b.jpg", "c.jpg")}
    expected["outside.jpg"] = "ok"
    for name, (text, outcome) in manifests.items():
        (folder / name).write_text(text, encoding="utf-8")
        expected[f"manifests/{name}"] = outcome
    (folder / "latin1.csv").write_bytes("path,notes\nphotos/a.jpg,café\n".encode("latin-1"))
    expected["manifests/latin1.csv"] = "not UTF-8"
    return expected


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_bad_inputs.py DIR")
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifests").mkdir(exist_ok=True)
    expected = write_photos(folder)
    expected |= write_file_system_oddities(folder)
    expected |= write_manifests(folder / "manifests")
    (folder / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    width = max(len(name) for name in expected)
    for name, outcome in sorted(expected.items()):
        kind = "good" if outcome == "ok" else "bad "
        print(f"{kind}  {name:<{min(width, 40)}}  {outcome}")
    print(f"wrote {len(expected)} inputs and {folder / 'expected.json'}")


if __name__ == "__main__":
    main()
