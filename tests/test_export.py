"""Exports: each format parsed back with `csv` or `json` and checked against marketplace rules."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal

import pytest

from dealscout_cli.errors import UsageError
from dealscout_cli.export import (
    OFFLINE_REASON,
    SHOPIFY_COLUMNS,
    ExportFormat,
    ExportOptions,
    ExportReport,
    check_options,
    export_listings,
    shorten,
)
from dealscout_cli.models import (
    Condition,
    Identification,
    Listing,
    ListingPhoto,
    PriceEstimate,
)

BASE_URL = "https://photos.example.com/shop"
PRODUCT_URL = "https://shop.example.com/p/{sku}"
EBAY_CONDITION_IDS = {1000, 1500, 1750, 2000, 2010, 2020, 2030, 2500, 2750, 3000, 4000, 5000,
                      6000, 7000}  # fmt: skip
EBAY_ACTION = "Action(SiteID=US|Country=US|Currency=USD|Version=1193|CC=UTF-8)"
UPC_A = "036000291452"  # valid check digit
EAN_13 = "4006381333931"  # valid check digit
MONEY = re.compile(r"\d+\.\d\d")


def make_listing(
    sku: str = "DS-0001",
    *,
    title: str = "Pyrex 8 cup glass measuring cup",
    description: str = "Clear glass measuring cup with red markings.",
    condition: Condition = Condition.USED,
    brand: str | None = "Pyrex",
    category: str = "Home & Garden > Kitchen",
    defects: list[str] | None = None,
    price: float | None = 12.5,
    currency: str = "USD",
    photos: list[str] | None = None,
    barcodes: list[str] | None = None,
    offline: bool = False,
) -> Listing:
    photo_paths = photos if photos is not None else [f"/photos/{sku}/front.jpg"]
    return Listing(
        item_id=int(sku.rsplit("-", 1)[-1]),
        item_key=f"k{sku.lower().replace('-', '')}abcdef0123456789",
        sku=sku,
        identification=Identification(
            title=title,
            description=description,
            category=category,
            brand=brand,
            model=None,
            condition=condition,
            defects=defects or [],
            confidence=0.9,
        ),
        price=None
        if price is None
        else PriceEstimate(
            low=price * 0.8,
            suggested=price,
            high=price * 1.2,
            currency=currency,
            rationale="Recent sold listings.",
        ),
        photos=[ListingPhoto(path=p, sha256=f"sha-{sku}-{i}") for i, p in enumerate(photo_paths)],
        barcodes=barcodes or [],
        prompt_version="v1",
        vision_model="gemini-2.5-flash",
        pricing_model=None if price is None else "gemini-2.5-flash",
        offline=offline,
        created_at="2025-01-01T00:00:00Z",
    )


def varied_listings() -> list[Listing]:
    """Multi-photo, barcode, no price, offline, long multi-line description, non-ASCII title."""
    return [
        make_listing(
            "DS-0001",
            photos=["/photos/a/front.jpg", "/photos/a/back side.jpg", "/photos/a/label.jpg"],
            barcodes=["not-a-code", UPC_A],
        ),
        make_listing("DS-0002", price=None),
        make_listing("DS-0003", offline=True),
        make_listing(
            "DS-0004",
            title="Café crème mug – 12 oz",
            description="Stoneware mug.\nDishwasher safe.\n\n" + "Glazed inside and out. " * 40,
            defects=["Small chip on rim", "Faint <tea> stain"],
            condition=Condition.NEW_OTHER,
            brand="Émile Henry",
            price=18,
        ),
    ]


def export(fmt: ExportFormat, listings: list[Listing], **options) -> tuple[str, ExportReport]:
    out = io.StringIO(newline="")
    report = export_listings(listings, fmt, out, ExportOptions(**options))
    return out.getvalue(), report


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def column(fmt: ExportFormat, listings: list[Listing], name: str, **options) -> list[str]:
    """One column of an export, top to bottom."""
    return [row[name] for row in rows(export(fmt, listings, **options)[0])]


# --- csv ----------------------------------------------------------------------------------------


def test_csv_writes_every_listing_with_the_flat_columns():
    text, report = export(ExportFormat.CSV, varied_listings())
    assert report.written == 4 and report.skipped == []
    header = next(csv.reader(io.StringIO(text)))
    assert header[:3] == ["sku", "item_key", "title"]
    assert {"ebay_condition_id", "price_suggested", "barcodes", "photos", "offline"} <= set(header)
    assert [row["sku"] for row in rows(text)] == ["DS-0001", "DS-0002", "DS-0003", "DS-0004"]


def test_csv_keeps_a_listing_without_price_with_empty_price_cells():
    row = rows(export(ExportFormat.CSV, [make_listing(price=None)])[0])[0]
    assert (row["price_low"], row["price_suggested"], row["price_high"], row["currency"]) == (
        "", "", "", "",
    )  # fmt: skip


def test_csv_prices_are_two_decimal_strings():
    row = rows(export(ExportFormat.CSV, [make_listing(price=12.5)])[0])[0]
    assert (row["price_low"], row["price_suggested"], row["price_high"]) == (
        "10.00", "12.50", "15.00",
    )  # fmt: skip


def test_csv_marks_offline_listings():
    listings = [make_listing("DS-0001"), make_listing("DS-0002", offline=True)]
    assert column(ExportFormat.CSV, listings, "offline") == ["false", "true"]


def test_csv_joins_barcodes_and_photo_paths_with_semicolons():
    listing = make_listing(photos=["/p/a.jpg", "/p/b.jpg"], barcodes=[UPC_A, EAN_13])
    row = rows(export(ExportFormat.CSV, [listing])[0])[0]
    assert row["photos"] == "/p/a.jpg;/p/b.jpg"
    assert row["barcodes"] == f"{UPC_A};{EAN_13}"


def test_csv_photos_become_urls_when_a_base_url_is_given():
    listing = make_listing(photos=["/p/a.jpg", "/p/b.jpg"])
    row = rows(export(ExportFormat.CSV, [listing], photo_base_url=BASE_URL)[0])[0]
    assert row["photos"] == f"{BASE_URL}/a.jpg;{BASE_URL}/b.jpg"


def test_csv_rows_end_with_crlf():
    text, _ = export(ExportFormat.CSV, [make_listing()])
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")


def test_csv_round_trips_non_ascii_text_through_a_utf8_file(tmp_path):
    path = tmp_path / "listings.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        export_listings(varied_listings(), ExportFormat.CSV, out)
    with path.open(encoding="utf-8", newline="") as back:
        titles = [row["title"] for row in csv.DictReader(back)]
    assert "Café crème mug – 12 oz" in titles


def test_csv_keeps_newlines_of_a_long_description():
    listing = varied_listings()[3]
    row = rows(export(ExportFormat.CSV, [listing])[0])[0]
    assert row["description"] == listing.identification.description


# --- jsonl --------------------------------------------------------------------------------------


def test_jsonl_round_trips_each_listing_and_adds_its_ebay_condition_id():
    listings = varied_listings()
    text, report = export(ExportFormat.JSONL, listings)
    records = [json.loads(line) for line in text.splitlines()]
    assert report.written == len(records) == 4
    for listing, record in zip(listings, records, strict=True):
        assert record.pop("ebay_condition_id") == listing.identification.ebay_condition_id
        assert Listing.model_validate(record) == listing


def test_jsonl_keeps_offline_and_priceless_listings_marked():
    text, _ = export(ExportFormat.JSONL, varied_listings())
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["offline"] for r in records] == [False, False, True, False]
    assert records[1]["price"] is None


# --- ebay ---------------------------------------------------------------------------------------


def test_ebay_first_header_is_the_exact_action_cell():
    header = next(csv.reader(io.StringIO(export(ExportFormat.EBAY, [make_listing()])[0])))
    assert header == [
        EBAY_ACTION, "Custom label (SKU)", "Category ID", "Title", "UPC", "Price", "Quantity",
        "Item photo URL", "Condition ID", "Description", "Format",
    ]  # fmt: skip


def test_ebay_action_cell_follows_site_and_currency():
    listing = make_listing(currency="GBP")
    text, _ = export(ExportFormat.EBAY, [listing], ebay_site="UK", currency="GBP")
    assert text.startswith("Action(SiteID=UK|Country=GB|Currency=GBP|Version=1193|CC=UTF-8),")


def test_ebay_rows_are_fixed_price_drafts():
    for row in rows(export(ExportFormat.EBAY, varied_listings())[0]):
        assert (row[EBAY_ACTION], row["Format"]) == ("Draft", "FixedPrice")


def test_ebay_condition_ids_are_in_ebays_list():
    listings = [make_listing(f"DS-{i:04}", condition=c) for i, c in enumerate(Condition, start=1)]
    text, report = export(ExportFormat.EBAY, listings)
    assert report.written == len(Condition)
    assert {int(row["Condition ID"]) for row in rows(text)} <= EBAY_CONDITION_IDS


def test_ebay_price_and_quantity_are_plain_numbers():
    listings = [make_listing(price=7), make_listing("DS-0002", price=19.999)]
    text, _ = export(ExportFormat.EBAY, listings, quantity=3)
    assert [(row["Price"], row["Quantity"]) for row in rows(text)] == [
        ("7.00", "3"),
        ("20.00", "3"),
    ]
    assert all(MONEY.fullmatch(row["Price"]) for row in rows(text))


def test_ebay_titles_fit_80_characters_cut_at_a_word_boundary():
    listing = make_listing()
    listing.identification.title = "Vintage " + "enamel coffee pot " * 8  # bypasses validation
    title = rows(export(ExportFormat.EBAY, [listing])[0])[0]["Title"]
    assert len(title) <= 80
    assert listing.identification.title.startswith(title)
    assert listing.identification.title[len(title)] == " "


def test_ebay_photo_urls_are_the_base_url_plus_quoted_file_names_joined_by_pipes():
    listing = make_listing(photos=["/photos/a/front.jpg", "/photos/a/back side.jpg"])
    row = rows(export(ExportFormat.EBAY, [listing], photo_base_url=BASE_URL + "/")[0])[0]
    assert row["Item photo URL"] == f"{BASE_URL}/front.jpg|{BASE_URL}/back%20side.jpg"


def test_ebay_without_a_base_url_leaves_photos_empty_and_says_why():
    text, report = export(ExportFormat.EBAY, [make_listing()])
    assert rows(text)[0]["Item photo URL"] == ""
    assert any("--photo-base-url" in note for note in report.notes)


def test_ebay_upc_is_the_first_valid_upc_or_ean():
    listings = [
        make_listing("DS-0001", barcodes=["036000291453", "ABC", UPC_A, EAN_13]),  # bad check digit
        make_listing("DS-0002", barcodes=[EAN_13]),
        make_listing("DS-0003", barcodes=["12345"]),
    ]
    assert column(ExportFormat.EBAY, listings, "UPC") == [UPC_A, EAN_13, ""]


def test_ebay_category_id_is_left_empty_unless_numeric():
    listings = [make_listing("DS-0001"), make_listing("DS-0002", category="20625")]
    assert column(ExportFormat.EBAY, listings, "Category ID") == ["", "20625"]


def test_ebay_description_is_html_with_line_breaks_and_defects():
    listing = make_listing(description="Line one.\nLine two & more.", defects=["Chip <2mm"])
    description = rows(export(ExportFormat.EBAY, [listing])[0])[0]["Description"]
    assert description.startswith("Line one.<br>Line two &amp; more.")
    assert "<li>Chip &lt;2mm</li>" in description
    assert "\n" not in description


def test_ebay_skips_a_listing_without_price_and_reports_it():
    text, report = export(ExportFormat.EBAY, [make_listing("DS-0001", price=None)])
    assert rows(text) == []
    assert report.skipped == [("DS-0001", "no price yet")]


def test_default_price_stands_in_for_a_missing_price():
    text, report = export(ExportFormat.EBAY, [make_listing(price=None)], default_price=Decimal("5"))
    assert report.skipped == []
    assert rows(text)[0]["Price"] == "5.00"


def test_a_listing_priced_in_another_currency_is_skipped():
    _, report = export(ExportFormat.EBAY, [make_listing(currency="EUR")])
    assert report.skipped == [("DS-0001", "priced in EUR, exporting in USD")]


# --- marketplaces and offline listings ----------------------------------------------------------


@pytest.mark.parametrize("fmt", [ExportFormat.EBAY, ExportFormat.SHOPIFY, ExportFormat.META])
def test_marketplaces_skip_offline_listings_and_report_them(fmt):
    listings = [make_listing("DS-0001"), make_listing("DS-0002", offline=True)]
    text, report = export(fmt, listings, photo_base_url=BASE_URL, product_url=PRODUCT_URL)
    assert report.written == 1
    assert report.skipped == [("DS-0002", OFFLINE_REASON)]
    assert "DS-0002" not in text


def test_include_offline_exports_offline_listings():
    listing = make_listing(offline=True)
    _, report = export(ExportFormat.EBAY, [listing], include_offline=True)
    assert (report.written, report.skipped) == (1, [])


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_every_format_round_trips_non_ascii_text(fmt):
    listing = make_listing(title="Café crème mug – 12 oz", brand="Émile Henry")
    text, report = export(fmt, [listing], photo_base_url=BASE_URL, product_url=PRODUCT_URL)
    assert report.written == 1
    assert "Café crème mug – 12 oz" in text


def test_one_folder_per_product_keeps_its_folder_in_the_photo_urls():
    # The common layout: every product folder has its own front.jpg. File names alone
    # would give two products one URL; paths below the shared folder keep them apart.
    listings = [make_listing("DS-0001", photos=["/home/me/photos/mug/front.jpg"]),
                make_listing("DS-0002", photos=["/home/me/photos/shoe/front.jpg",
                                                "/home/me/photos/shoe/sole 2.jpg"])]  # fmt: skip
    text, report = export(ExportFormat.EBAY, listings, photo_base_url=BASE_URL)
    assert [r["Item photo URL"] for r in rows(text)] == [
        f"{BASE_URL}/mug/front.jpg",
        f"{BASE_URL}/shoe/front.jpg|{BASE_URL}/shoe/sole%202.jpg",
    ]
    assert report.notes == []


def test_photo_root_sets_the_folder_urls_start_from():
    listing = make_listing(photos=["/home/me/photos/mug/front.jpg"])
    urls = column(ExportFormat.SHOPIFY, [listing], "Image Src",
                  photo_base_url=BASE_URL, photo_root="/home/me/")  # fmt: skip
    assert urls == [f"{BASE_URL}/photos/mug/front.jpg"]


def test_photo_outside_the_photo_root_is_refused_naming_it():
    listing = make_listing("DS-0007", photos=["/elsewhere/front.jpg"])
    with pytest.raises(UsageError, match=r"/elsewhere/front.jpg \(item DS-0007\) is not in"):
        export(ExportFormat.EBAY, [listing], photo_base_url=BASE_URL, photo_root="/home/me")


def test_windows_paths_become_url_paths():
    listings = [make_listing("DS-0001", photos=[r"C:\Photos\mug\front.jpg"]),
                make_listing("DS-0002", photos=[r"C:\Photos\shoe\front.jpg"])]  # fmt: skip
    urls = column(ExportFormat.EBAY, listings, "Item photo URL", photo_base_url=BASE_URL)
    assert urls == [f"{BASE_URL}/mug/front.jpg", f"{BASE_URL}/shoe/front.jpg"]


def test_a_photo_changed_at_the_same_path_is_noted():
    first = make_listing("DS-0001", photos=["/p/a/IMG_1.jpg"])
    second = make_listing("DS-0002", photos=["/p/a/IMG_1.jpg"])  # same path, other content
    _, report = export(ExportFormat.EBAY, [first, second], photo_base_url=BASE_URL)
    assert any("IMG_1.jpg" in note for note in report.notes)


# --- shopify ------------------------------------------------------------------------------------


def test_shopify_header_has_the_import_columns_in_order():
    header = next(csv.reader(io.StringIO(export(ExportFormat.SHOPIFY, [make_listing()])[0])))
    assert header == SHOPIFY_COLUMNS
    assert header[:3] == ["Handle", "Title", "Body (HTML)"] and header[-1] == "Status"


def test_shopify_products_are_unpublished_drafts_with_price_and_sku():
    row = rows(export(ExportFormat.SHOPIFY, [make_listing(barcodes=[UPC_A])])[0])[0]
    assert (row["Status"], row["Published"]) == ("draft", "FALSE")
    assert (row["Variant SKU"], row["Variant Price"], row["Variant Barcode"]) == (
        "DS-0001", "12.50", UPC_A,
    )  # fmt: skip
    assert (row["Option1 Name"], row["Option1 Value"]) == ("Title", "Default Title")


def test_shopify_extra_photos_go_on_image_only_rows():
    listing = make_listing(photos=["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"])
    first, *extra = rows(export(ExportFormat.SHOPIFY, [listing], photo_base_url=BASE_URL)[0])
    assert (first["Image Src"], first["Image Position"]) == (f"{BASE_URL}/a.jpg", "1")
    assert [(r["Image Src"], r["Image Position"]) for r in extra] == [
        (f"{BASE_URL}/b.jpg", "2"), (f"{BASE_URL}/c.jpg", "3"),
    ]  # fmt: skip
    for row in extra:
        assert row["Handle"] == first["Handle"]
        assert {k for k, v in row.items() if v} == {"Handle", "Image Src", "Image Position"}


def test_shopify_handle_is_an_ascii_slug_of_the_title_with_the_item_key():
    listing = make_listing(title="Café crème mug – 12 oz")
    handle = rows(export(ExportFormat.SHOPIFY, [listing])[0])[0]["Handle"]
    assert handle == f"cafe-creme-mug-12-oz-{listing.item_key[:8]}"


def test_shopify_puts_the_category_text_in_type_not_product_category():
    row = rows(export(ExportFormat.SHOPIFY, [make_listing()])[0])[0]
    assert (row["Product Category"], row["Type"]) == ("", "Home & Garden > Kitchen")


# --- meta ---------------------------------------------------------------------------------------


def test_meta_needs_a_photo_base_url():
    with pytest.raises(UsageError, match="--photo-base-url"):
        export(ExportFormat.META, [make_listing()], product_url=PRODUCT_URL)


def test_meta_without_a_base_url_is_refused_before_anything_is_written():
    with pytest.raises(UsageError):
        check_options(ExportFormat.META, ExportOptions())


def test_meta_conditions_are_new_refurbished_or_used():
    listings = [make_listing(f"DS-{i:04}", condition=c) for i, c in enumerate(Condition, start=1)]
    text, _ = export(ExportFormat.META, listings, photo_base_url=BASE_URL, product_url=PRODUCT_URL)
    by_sku = {row["id"]: row["condition"] for row in rows(text)}
    assert set(by_sku.values()) == {"new", "refurbished", "used"}
    assert by_sku["DS-0003"] == "new"  # new_with_defects
    assert by_sku["DS-0004"] == "refurbished"  # certified_refurbished


def test_meta_row_has_price_with_currency_links_and_stock():
    listing = make_listing(photos=["/p/front.jpg", "/p/back.jpg"])
    meta = export(ExportFormat.META, [listing], photo_base_url=BASE_URL, product_url=PRODUCT_URL)
    row = rows(meta[0])[0]
    assert row["price"] == "12.50 USD"
    assert MONEY.fullmatch(row["price"].split()[0])
    link = "https://shop.example.com/p/DS-0001"
    assert (row["link"], row["image_link"]) == (link, f"{BASE_URL}/front.jpg")
    assert (row["availability"], row["brand"]) == ("in stock", "Pyrex")


def test_meta_skips_a_listing_without_a_brand():
    _, report = export(
        ExportFormat.META,
        [make_listing(brand=None)],
        photo_base_url=BASE_URL,
        product_url=PRODUCT_URL,
    )
    assert report.skipped == [("DS-0001", "no brand (Meta's catalog requires one)")]


# --- values and options -------------------------------------------------------------------------


def test_shorten_cuts_one_overlong_word_mid_word():
    assert shorten("x" * 100, 80) == "x" * 80


@pytest.mark.parametrize(
    "options",
    [{"currency": "usd"}, {"quantity": 0}, {"ebay_site": "Mars"}, {"photo_base_url": "photos/"}],
)
def test_options_refuse_values_the_marketplaces_would_reject(options):
    with pytest.raises(UsageError):
        ExportOptions(**options)


@pytest.mark.parametrize(("amount", "cents", "text"), [(2.675, 268, "2.68"), (1.005, 101, "1.01")])
def test_a_listing_is_stored_at_the_cents_the_export_writes(
    amount: float, cents: int, text: str
) -> None:
    # a hair under in binary: round(1.005 * 100) gave 100; f"{2.675:.2f}" (the grid) 2.67
    listing = make_listing(price=amount)
    assert listing.price is not None and listing.price.suggested_cents() == cents
    assert rows(export(ExportFormat.CSV, [listing])[0])[0]["price_suggested"] == text
