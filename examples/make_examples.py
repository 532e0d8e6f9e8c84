"""Write the example photos the README runs on: `dealscout snap examples --group folder --offline`.

Five products drawn with Pillow, one folder each; the sneaker has three photos
(two angles, two colours). The handbag photo is stored sideways with EXIF
orientation 6 and a fake GPS position, so a run shows both being handled: it
comes out upright, and the location never leaves the machine.

    python examples/make_examples.py        # deterministic: same bytes every run
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from photo_factory import product_image, save_jpeg  # noqa: E402

SIZE = (1024, 768)
QUALITY = 80

# folder → [(file name, product, seed, colour, angle)]
EXAMPLES = {
    "01-mug": [("mug.jpg", "mug", 1, (30, 90, 170), 0)],
    "02-sneaker": [
        ("side.jpg", "sneaker", 2, (200, 40, 40), 0),
        ("side-left.jpg", "sneaker", 3, (200, 40, 40), -120),
        ("other-colour.jpg", "sneaker", 4, (40, 40, 40), 80),
    ],
    "03-book": [("cover.jpg", "book", 5, (20, 110, 60), 0)],
    "04-desk-lamp": [("lamp.jpg", "lamp", 6, (230, 190, 30), 0)],
    "05-handbag": [("handbag.jpg", "handbag", 7, (120, 60, 30), 0)],
}
ROTATED_WITH_GPS = ("05-handbag", "handbag.jpg")


def main() -> None:
    for folder, shots in EXAMPLES.items():
        for name, kind, seed, colour, angle in shots:
            photo = product_image(kind, SIZE, seed=seed, color=colour, angle=angle)
            path = HERE / folder / name
            if (folder, name) == ROTATED_WITH_GPS:
                # Stored sideways as a phone would; orientation 6 turns it upright again.
                sideways = photo.transpose(Image.Transpose.ROTATE_90)
                save_jpeg(sideways, path, orientation=6, gps=True, quality=QUALITY)
            else:
                save_jpeg(photo, path, quality=QUALITY)
            print(f"{path.relative_to(HERE.parent)}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
