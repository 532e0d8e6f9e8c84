"""Barcodes in product photos: drawn by zxing-cpp's writer, pasted on photo_factory products."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import zxingcpp
from photo_factory import make_large_jpeg, product_image, save_jpeg
from PIL import Image, ImageDraw

from dealscout_cli import barcodes
from dealscout_cli.barcodes import (
    PASSES,
    Barcode,
    prepare_and_read,
    product_codes,
    read_barcodes,
    valid_gtin,
)
from dealscout_cli.errors import BadPhoto
from dealscout_cli.images import prepare_photo

FORMAT = zxingcpp.BarcodeFormat


def barcode_image(content: str, fmt: zxingcpp.BarcodeFormat, scale: int = 3) -> Image.Image:
    return Image.fromarray(zxingcpp.create_barcode(content, fmt).to_image(scale=scale)).convert(
        "RGB"
    )


def photo_with(
    path: Path,
    *codes: Image.Image,
    size: tuple[int, int] = (1024, 768),
    kind: str = "book",
    **exif: object,
) -> Path:
    """A product photo with each code pasted side by side in the lower half (a label on the box)."""
    photo = product_image(kind, size, seed=7)
    x = size[0] // 10
    for code in codes:
        photo.paste(code, (x, size[1] // 2))
        x += code.width + 20
    return save_jpeg(photo, path, quality=90, **exif)  # type: ignore[arg-type]


# EAN-13 drawn by hand, so a wrong check digit can be printed (zxing's writer refuses one).
_L = (
    "0001101",
    "0011001",
    "0010011",
    "0111101",
    "0100011",
    "0110001",
    "0101111",
    "0111011",
    "0110111",
    "0001011",
)
_PARITY = (
    "LLLLLL",
    "LLGLGG",
    "LLGGLG",
    "LLGGGL",
    "LGLLGG",
    "LGGLLG",
    "LGGGLL",
    "LGLGLG",
    "LGLGGL",
    "LGGLGL",
)


def hand_drawn_ean13(digits: str, module: int = 3, height: int = 120) -> Image.Image:
    def right(d: int) -> str:
        return "".join("1" if bit == "0" else "0" for bit in _L[d])

    bits = "101"
    for digit, parity in zip(digits[1:7], _PARITY[int(digits[0])], strict=True):
        bits += _L[int(digit)] if parity == "L" else right(int(digit))[::-1]
    bits += "01010" + "".join(right(int(d)) for d in digits[7:]) + "101"
    quiet = 11 * module
    image = Image.new("RGB", (len(bits) * module + 2 * quiet, height + 2 * quiet), "white")
    draw = ImageDraw.Draw(image)
    for i, bit in enumerate(bits):
        if bit == "1":
            x = quiet + i * module
            draw.rectangle((x, quiet, x + module - 1, quiet + height), fill="black")
    return image


def test_ean13_on_a_product_photo_is_read(tmp_path: Path) -> None:
    path = photo_with(tmp_path / "box.jpg", barcode_image("4006381333931", FORMAT.EAN13))
    assert read_barcodes(path) == [Barcode("4006381333931", "EAN13")]


def test_qr_code_is_read_with_its_text(tmp_path: Path) -> None:
    url = "https://example.com/manual/kettle-2000"
    path = photo_with(tmp_path / "qr.jpg", barcode_image(url, FORMAT.QRCode, scale=4))
    assert read_barcodes(path) == [Barcode(url, "QRCode")]


def test_photo_without_a_barcode_gives_an_empty_list(tmp_path: Path) -> None:
    path = save_jpeg(product_image("mug", (1024, 768), seed=1), tmp_path / "mug.jpg")
    assert read_barcodes(path) == []


def test_bad_check_digit_is_ignored(tmp_path: Path) -> None:
    good = photo_with(tmp_path / "good.jpg", hand_drawn_ean13("4006381333931"))
    bad = photo_with(tmp_path / "bad.jpg", hand_drawn_ean13("4006381333932"))
    assert read_barcodes(good) == [Barcode("4006381333931", "EAN13")]  # the drawing itself is right
    assert read_barcodes(bad) == []


def test_decoder_misread_with_bad_check_digit_never_reaches_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_jpeg(product_image("mug", (640, 480)), tmp_path / "mug.jpg")

    def misreading(*args: object, **kwargs: object) -> list[SimpleNamespace]:
        return [SimpleNamespace(text="4006381333932", format=SimpleNamespace(name="EAN13"))]

    monkeypatch.setattr(barcodes.zxingcpp, "read_barcodes", misreading)
    assert read_barcodes(path) == []


def test_upc_a_keeps_its_twelve_digits(tmp_path: Path) -> None:
    path = photo_with(tmp_path / "upc.jpg", barcode_image("036000291452", FORMAT.UPCA))
    assert read_barcodes(path) == [Barcode("036000291452", "UPCA")]


def test_upc_e_is_expanded_to_upc_a(tmp_path: Path) -> None:
    path = photo_with(tmp_path / "upce.jpg", barcode_image("01234565", FORMAT.UPCE))
    assert read_barcodes(path) == [Barcode("012345000065", "UPCE")]


def test_isbn_is_an_ean13_in_the_bookland_range(tmp_path: Path) -> None:
    path = photo_with(tmp_path / "book.jpg", barcode_image("9780306406157", FORMAT.EAN13))
    (found,) = read_barcodes(path)
    assert found == Barcode("9780306406157", "EAN13")
    assert found.is_isbn


def test_barcode_in_a_12_megapixel_photo_is_found_at_draft_size(tmp_path: Path) -> None:
    # 4 px a bar at full size, 2 at the 2000 px draft the fast pass decodes.
    path = photo_with(
        tmp_path / "large.jpg",
        barcode_image("4006381333931", FORMAT.EAN13, scale=4),
        size=(4000, 3000),
    )
    assert read_barcodes(path) == [Barcode("4006381333931", "EAN13")]


def test_thorough_finds_a_barcode_too_small_for_the_fast_pass(tmp_path: Path) -> None:
    # 1 px a bar at 4000 px: lost at the 2000 px draft, readable at full size.
    path = photo_with(
        tmp_path / "far.jpg",
        barcode_image("4006381333931", FORMAT.EAN13, scale=1),
        size=(4000, 3000),
    )
    assert read_barcodes(path) == []
    assert read_barcodes(path, thorough=True) == [Barcode("4006381333931", "EAN13")]


def test_sideways_photo_and_several_codes(tmp_path: Path) -> None:
    codes = [
        barcode_image("4006381333931", FORMAT.EAN13),
        barcode_image("hi", FORMAT.QRCode, scale=5),
    ]
    path = photo_with(
        tmp_path / "side.jpg", *[c.rotate(90, expand=True) for c in codes], orientation=6
    )
    assert set(read_barcodes(path)) == {Barcode("4006381333931", "EAN13"), Barcode("hi", "QRCode")}


# --- 12 MP photos: a cheap look at the decode made for the model, a second decode only for
# bars too fine for it (benchmarks/barcodes.py measures what this saves).


def passes() -> tuple[int, int]:
    return PASSES.looks, PASSES.full_reads


def test_12_megapixel_photo_without_a_barcode_is_not_decoded_again(tmp_path: Path) -> None:
    path = make_large_jpeg(tmp_path / "mug.jpg", megapixels=12, seed=1)
    looks, full_reads = passes()
    prepared, found = prepare_and_read(path, check_quality=True)
    assert found == []
    assert passes() == (looks + 1, full_reads)  # looked at once, never decoded again
    assert prepared.data == prepare_photo(path, check_quality=True).data  # the same copy


def faint(code: Image.Image, low: int = 150, contrast: int = 60) -> Image.Image:
    """Grey bars on a beige label instead of black on white."""
    return Image.eval(code, lambda v: low + v * contrast // 255)


@pytest.mark.parametrize(
    ("content", "fmt", "scale", "angle", "make_faint"),
    [
        ("4006381333931", FORMAT.EAN13, 3, 8, False),  # 1.5 px a bar at the fast pass's size
        ("036000291452", FORMAT.UPCA, 4, 90, False),
        ("9780306406157", FORMAT.EAN13, 4, 180, False),
        ("96385074", FORMAT.EAN8, 3, 0, False),
        ("4006381333931", FORMAT.EAN13, 6, 20, True),
        ("https://example.com/kettle", FORMAT.QRCode, 3, 0, False),
    ],
)
def test_small_or_turned_code_in_a_12_megapixel_photo_is_decoded_again_and_read(
    tmp_path: Path,
    content: str,
    fmt: zxingcpp.BarcodeFormat,
    scale: int,
    angle: int,
    make_faint: bool,
) -> None:
    code = barcode_image(content, fmt, scale=scale)
    code = faint(code) if make_faint else code
    code = code.rotate(angle, expand=True, fillcolor="white") if angle else code
    path = photo_with(tmp_path / "box.jpg", code, size=(4000, 3000))
    looks, full_reads = passes()
    _prepared, found = prepare_and_read(path)
    assert [b.text for b in found] == [content[-12:] if fmt == FORMAT.UPCA else content]
    assert passes() == (looks + 1, full_reads + 1)


def test_close_up_of_a_barcode_is_read_without_a_second_decode(tmp_path: Path) -> None:
    # 24 px a bar: the code fills half of a 12 MP frame.
    path = photo_with(
        tmp_path / "close.jpg",
        barcode_image("4006381333931", FORMAT.EAN13, scale=24),
        size=(4000, 3000),
    )
    looks, full_reads = passes()
    assert prepare_and_read(path)[1] == [Barcode("4006381333931", "EAN13")]
    assert passes() == (looks + 1, full_reads)


def test_sideways_12_megapixel_photo_is_read(tmp_path: Path) -> None:
    code = barcode_image("4006381333931", FORMAT.EAN13, scale=4).rotate(90, expand=True)
    path = photo_with(tmp_path / "side.jpg", code, size=(4000, 3000), orientation=6)
    assert prepare_and_read(path)[1] == [Barcode("4006381333931", "EAN13")]


def test_decode_as_fine_as_the_fast_pass_is_read_as_it_is(tmp_path: Path) -> None:
    # max_side 1600: the model's copy is shrunk from a 2000 px decode, the fast pass's own.
    path = photo_with(
        tmp_path / "large.jpg",
        barcode_image("4006381333931", FORMAT.EAN13, scale=4),
        size=(4000, 3000),
    )
    before = passes()
    prepared, found = prepare_and_read(path, max_side=1600)
    assert found == [Barcode("4006381333931", "EAN13")]
    assert (prepared.width, passes()) == (1600, before)  # no look, no second decode


def test_prepare_and_read_without_barcodes_reads_nothing(tmp_path: Path) -> None:
    path = photo_with(tmp_path / "box.jpg", barcode_image("4006381333931", FORMAT.EAN13))
    before = passes()
    assert prepare_and_read(path, read=False)[1] == []
    assert passes() == before


def test_decoded_image_is_read_as_given() -> None:
    photo = product_image("book", (1024, 768))
    photo.paste(barcode_image("96385074", FORMAT.EAN8), (100, 400))
    assert read_barcodes(photo) == [Barcode("96385074", "EAN8")]


def test_unreadable_file_is_a_bad_photo(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo")
    with pytest.raises(BadPhoto, match="notes.jpg"):
        read_barcodes(path)


def test_product_codes_keep_first_seen_order_once_each() -> None:
    found = [
        Barcode("https://example.com/manual", "QRCode"),
        Barcode("9780306406157", "EAN13"),
        Barcode("036000291452", "UPCA"),
        Barcode("9780306406157", "EAN13"),
        Barcode("96385074", "EAN8"),
    ]
    assert product_codes(found) == ["9780306406157", "036000291452", "96385074"]


def test_gs1_digital_link_qr_counts_as_a_product_code() -> None:
    found = [
        Barcode("https://id.gs1.org/01/09506000134352/10/ABC", "QRCode"),
        Barcode("https://id.gs1.org/01/09506000134353", "QRCode"),  # bad check digit
        Barcode("https://example.com/01/not-a-gtin", "QRCode"),
    ]
    assert product_codes(found) == ["9506000134352"]


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("4006381333931", True),
        ("4006381333932", False),
        ("036000291452", True),
        ("96385074", True),
        ("09506000134352", True),
        ("40063813339", False),  # no such length
        ("4OO6381333931", False),  # letters
        ("４００６３８１３３３９３１", False),  # full-width digits
    ],
)
def test_valid_gtin(digits: str, ok: bool) -> None:
    assert valid_gtin(digits) is ok
