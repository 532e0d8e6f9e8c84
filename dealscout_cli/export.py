"""Listings out of dealscout: a flat CSV, JSON Lines, and three marketplace bulk-upload files.

    csv      one row per listing, every field we know, for spreadsheets and scripts
    jsonl    one JSON object per listing (the full `Listing`, plus its eBay condition ID)
    ebay     eBay Seller Hub "draft listings" upload: each row becomes a draft to finish on eBay
    shopify  Shopify product CSV import, products created as drafts
    meta     Meta (Facebook/Instagram) catalog data feed

csv and jsonl keep everything, priceless and offline listings included. The
marketplace formats only take what the marketplace can accept: a listing with no
price (unless `ExportOptions.default_price`), a price in another currency than
the export's, or one made offline against the emulator (unless
`include_offline`) is left out and reported in `ExportReport.skipped`.

Marketplace quirks, decided here once:

- eBay `Category ID` is eBay's numeric leaf category. Our `Identification.category`
  is a text path ("Home & Garden > Kitchen"), so the column stays empty (Seller Hub
  lets the seller pick a category when finishing the draft) unless the category
  is all digits, i.e. already an eBay ID.
- eBay `UPC` takes the first barcode that is a valid UPC-A (12 digits) or EAN-13
  (13 digits, check digit verified). Otherwise it stays empty rather than
  "Does not apply": that phrase tells eBay the product has no GTIN, which is false
  for most branded goods whose barcode simply was not photographed.
- Descriptions become HTML for eBay and Shopify: the text is HTML-escaped (so a
  "<" or "&" shows as typed) and newlines become `<br>`; defects are appended as a list.
- Photo URLs are `photo_base_url` + the photo's path below `photo_root` (by default
  the deepest folder holding every exported photo): the seller uploads that folder
  as it is, and `shoes/front.jpg` and `mugs/front.jpg` stay two URLs. A flat
  folder gives plain file names. eBay and Shopify need hosted URLs; without a base
  URL their photo columns stay empty and the report says so.
- Meta's catalog data feed requires id, title, description, availability, condition,
  price, link, image_link and brand for every item (Meta's "Catalog Fields" reference,
  developers.facebook.com/docs/commerce-platform/catalog/fields/). `link` is the item's
  page in the seller's shop, which only the seller knows: `product_url` is a pattern
  such as "https://shop.example.com/p/{sku}" ({sku} and {item_id} are filled in), and a
  Meta feed is refused without it (and without `photo_base_url` for image_link) rather
  than written with links that lead nowhere.
- csv and jsonl carry `price_sources`: the web pages a grounded price (--grounded-prices)
  was based on; in csv one cell, the URLs joined by a space.
- Shopify `Product Category` must be a Standard Product Taxonomy category, so it
  stays empty; our category text goes in the free-form `Type` column.
- No cell runs as a spreadsheet formula: every CSV format writes its rows through
  `_Sheet`, which quotes each data cell and passes each text cell through
  `text.spreadsheet_cell` (a title "=HYPERLINK(...)" is written "'=HYPERLINK(...)").
  Our own values (prices, quantities, condition IDs, dates, the header rows) never
  start with a formula character, so they are written as they are. Length limits
  count the quote: a prefixed eBay title is still at most 80 characters.
"""

from __future__ import annotations

import csv
import html
import json
import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from pathlib import PurePosixPath, PureWindowsPath
from typing import TextIO
from urllib.parse import quote

from dealscout_cli.errors import UsageError
from dealscout_cli.models import (
    EBAY_CONDITION_ID,
    Condition,
    Identification,
    Listing,
    price_decimal,
)
from dealscout_cli.text import spreadsheet_cell

EBAY_TITLE_MAX = 80
META_TITLE_MAX = 150
META_DESCRIPTION_MAX = 9999
EBAY_PHOTOS_MAX = 24  # eBay's per-listing photo limit
EBAY_TEMPLATE_VERSION = 1193  # the Version in Seller Hub's draft template Action header
# Seller Hub site names and the country code each takes in the Action header.
EBAY_SITE_COUNTRY = {
    "US": "US",
    "UK": "GB",
    "Australia": "AU",
    "Canada": "CA",
    "Germany": "DE",
    "France": "FR",
    "Italy": "IT",
    "Spain": "ES",
}
OFFLINE_REASON = "offline (made by the emulator, not a real model)"
CENTS = Decimal("0.01")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    EBAY = "ebay"
    SHOPIFY = "shopify"
    META = "meta"


@dataclass(frozen=True)
class ExportOptions:
    """How to export. `default_price` (in `currency`) stands in for a missing price in the
    marketplace formats; left None, priceless listings are skipped there and reported."""

    photo_base_url: str | None = None
    product_url: str | None = None  # the item's shop page, e.g. "https://x.example/p/{sku}"
    photo_root: str | None = None  # photo URLs are paths below this folder (default: common)
    currency: str = "USD"
    quantity: int = 1
    ebay_site: str = "US"
    default_price: Decimal | None = None
    include_offline: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise UsageError(f"currency {self.currency!r} is not an ISO 4217 code like USD")
        if self.quantity < 1:
            raise UsageError(f"quantity must be at least 1, not {self.quantity}")
        if self.ebay_site not in EBAY_SITE_COUNTRY:
            raise UsageError(
                f"unknown eBay site {self.ebay_site!r}; use one of {', '.join(EBAY_SITE_COUNTRY)}"
            )
        if self.photo_base_url is not None and not re.match(
            r"https?://[^/\s]+", self.photo_base_url
        ):
            raise UsageError(
                f"photo base URL {self.photo_base_url!r} must start with http:// or https://"
            )
        if self.product_url is not None:
            _check_product_url(self.product_url)
        if self.default_price is not None:
            price = Decimal(str(self.default_price)).quantize(CENTS, rounding=ROUND_HALF_UP)
            if not price > 0:
                raise UsageError(f"default price must be above zero, not {price}")
            object.__setattr__(self, "default_price", price)


@dataclass
class ExportReport:
    """What an export did: listings written, listings left out (sku, reason), and notes."""

    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def export_listings(
    listings: Iterable[Listing],
    fmt: ExportFormat,
    out: TextIO,
    options: ExportOptions = ExportOptions(),  # noqa: B008 - frozen, so one shared default is safe
) -> ExportReport:
    """Write `listings` to `out` in `fmt`. `out` should be opened with newline="" and UTF-8."""
    fmt = ExportFormat(fmt)
    chosen = list(listings)  # photo URLs depend on every photo exported (see _PhotoLinks)
    check_options(fmt, options, chosen)
    writer = _WRITERS[fmt]
    report = ExportReport()
    writer(chosen, out, options, report)
    return report


def check_options(
    fmt: ExportFormat, options: ExportOptions, listings: Sequence[Listing] = ()
) -> None:
    """Raise `UsageError` if `fmt` cannot be written with `options`; call it before opening
    the output file, so a refused export leaves no empty file behind."""
    if fmt is ExportFormat.META and not options.product_url:
        raise UsageError(
            "Meta's catalog needs a link to each item's page in your shop: pass --product-url "
            "with its address, {sku} standing for the SKU, "
            "e.g. --product-url 'https://shop.example.com/p/{sku}'"
        )
    if fmt is ExportFormat.META and not options.photo_base_url:
        raise UsageError(
            "Meta's catalog needs an image URL for every item: "
            "pass --photo-base-url with the address where the photos are hosted"
        )
    if options.photo_base_url:
        _PhotoLinks(options, listings)  # a photo outside --photo-root is refused here


# --- csv and jsonl: everything, as is ---------------------------------------------------------

CSV_COLUMNS = [
    "sku", "item_key", "title", "description", "category", "brand", "model", "condition",
    "ebay_condition_id", "price_low", "price_suggested", "price_high", "currency",
    "price_sources", "barcodes",
    "photos", "quality_warnings", "prompt_version", "vision_model", "pricing_model", "offline",
    "created_at",
]  # fmt: skip


def _write_csv(
    listings: Sequence[Listing], out: TextIO, options: ExportOptions, report: ExportReport
) -> None:
    writer = _Sheet(out, CSV_COLUMNS)
    links = _PhotoLinks(options, listings)
    for listing in listings:
        ident, price = listing.identification, listing.price
        urls = links.urls(listing)
        writer.writerow({
            "sku": listing.sku,
            "item_key": listing.item_key,
            "title": ident.title,
            "description": ident.description,
            "category": ident.category,
            "brand": ident.brand or "",
            "model": ident.model or "",
            "condition": ident.condition.value,
            "ebay_condition_id": EBAY_CONDITION_ID[ident.condition],
            "price_low": _money(price.low) if price else "",
            "price_suggested": _money(price.suggested) if price else "",
            "price_high": _money(price.high) if price else "",
            "currency": price.currency if price else "",
            "price_sources": " ".join(_one_word(url) for url in listing.price_sources),
            "barcodes": ";".join(listing.barcodes),
            "photos": ";".join(urls if links.base_url else [p.path for p in listing.photos]),
            "quality_warnings": ";".join(listing.quality_warnings),
            "prompt_version": listing.prompt_version,
            "vision_model": listing.vision_model,
            "pricing_model": listing.pricing_model or "",
            "offline": "true" if listing.offline else "false",
            "created_at": listing.created_at,
        })  # fmt: skip
        report.written += 1
    links.note_clashes(report)


def _write_jsonl(
    listings: Sequence[Listing], out: TextIO, options: ExportOptions, report: ExportReport
) -> None:
    for listing in listings:
        record = listing.model_dump(mode="json")
        record["ebay_condition_id"] = EBAY_CONDITION_ID[listing.identification.condition]
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        report.written += 1


# --- marketplaces: only what they accept --------------------------------------------------------


def _ready(
    listings: Iterable[Listing],
    options: ExportOptions,
    report: ExportReport,
    required: Callable[[Listing], str | None] = lambda listing: None,
) -> Iterator[tuple[Listing, Decimal]]:
    """The listings a marketplace can take, each with its price; the others go to `skipped`.
    `required` names what else a marketplace needs, returning a reason when it is missing."""
    for listing in listings:
        price = price_decimal(listing.price.suggested) if listing.price else options.default_price
        reason: str | None
        if listing.offline and not options.include_offline:
            reason = OFFLINE_REASON
        elif price is None:
            reason = "no price yet"
        elif listing.price is not None and listing.price.currency != options.currency:
            reason = f"priced in {listing.price.currency}, exporting in {options.currency}"
        elif price <= 0:
            reason = "suggested price is 0.00"
        else:
            reason = required(listing)
        if reason is None:
            assert price is not None
            yield listing, price
        else:
            report.skipped.append((listing.sku, reason))


def _write_ebay(
    listings: Sequence[Listing], out: TextIO, options: ExportOptions, report: ExportReport
) -> None:
    action = (
        f"Action(SiteID={options.ebay_site}|Country={EBAY_SITE_COUNTRY[options.ebay_site]}"
        f"|Currency={options.currency}|Version={EBAY_TEMPLATE_VERSION}|CC=UTF-8)"
    )
    writer = _Sheet(out, [
        action, "Custom label (SKU)", "Category ID", "Title", "UPC", "Price", "Quantity",
        "Item photo URL", "Condition ID", "Description", "Format",
    ])  # fmt: skip
    if not options.photo_base_url:
        report.note("eBay needs hosted photo URLs: pass --photo-base-url to fill 'Item photo URL'")
    links = _PhotoLinks(options, listings)
    for listing, price in _ready(listings, options, report):
        ident = listing.identification
        photos = links.urls(listing)
        if len(photos) > EBAY_PHOTOS_MAX:
            report.note(f"{listing.sku}: eBay takes {EBAY_PHOTOS_MAX} photos, the rest left out")
        writer.writerow([
            "Draft",
            listing.sku,
            ident.category if ident.category.isdigit() else "",
            _fit(ident.title, EBAY_TITLE_MAX),
            first_gtin(listing.barcodes) or "",
            f"{price:.2f}",
            options.quantity,
            "|".join(photos[:EBAY_PHOTOS_MAX]),
            EBAY_CONDITION_ID[ident.condition],
            _description_html(ident),
            "FixedPrice",
        ])  # fmt: skip
        report.written += 1
    links.note_clashes(report)


SHOPIFY_COLUMNS = [
    "Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Published",
    "Option1 Name", "Option1 Value", "Variant SKU", "Variant Price", "Variant Barcode",
    "Variant Inventory Qty", "Variant Inventory Policy", "Variant Fulfillment Service",
    "Variant Requires Shipping", "Image Src", "Image Position", "Image Alt Text", "Status",
]  # fmt: skip


def _write_shopify(
    listings: Sequence[Listing], out: TextIO, options: ExportOptions, report: ExportReport
) -> None:
    writer = _Sheet(out, SHOPIFY_COLUMNS)
    if not options.photo_base_url:
        report.note("Shopify needs hosted photo URLs: pass --photo-base-url to fill 'Image Src'")
    links = _PhotoLinks(options, listings)
    for listing, price in _ready(listings, options, report):
        ident = listing.identification
        handle = shopify_handle(ident.title, listing.item_key)
        photos = links.urls(listing)
        brand = ident.brand or ""
        writer.writerow({
            "Handle": handle,
            "Title": ident.title,
            "Body (HTML)": _description_html(ident),
            "Vendor": brand if len(brand) >= 2 else "",  # Shopify wants two characters or none
            "Type": ident.category,
            "Tags": ident.condition.value.replace("_", " "),
            "Published": "FALSE",
            "Option1 Name": "Title",  # Shopify's convention for a product with one variant
            "Option1 Value": "Default Title",
            "Variant SKU": listing.sku,
            "Variant Price": f"{price:.2f}",
            "Variant Barcode": first_gtin(listing.barcodes) or "",
            "Variant Inventory Qty": options.quantity,
            "Variant Inventory Policy": "deny",
            "Variant Fulfillment Service": "manual",
            "Variant Requires Shipping": "TRUE",
            "Image Src": photos[0] if photos else "",
            "Image Position": 1 if photos else "",
            "Image Alt Text": ident.title if photos else "",
            "Status": "draft",
        })  # fmt: skip
        for position, url in enumerate(photos[1:], start=2):
            writer.writerow({"Handle": handle, "Image Src": url, "Image Position": position})
        report.written += 1
    links.note_clashes(report)


META_COLUMNS = [
    "id", "title", "description", "availability", "condition", "price", "link", "image_link",
    "brand",
]  # fmt: skip


def _write_meta(
    listings: Sequence[Listing], out: TextIO, options: ExportOptions, report: ExportReport
) -> None:
    # check_options refuses Meta without either
    assert options.photo_base_url and options.product_url
    writer = _Sheet(out, META_COLUMNS)
    links = _PhotoLinks(options, listings)
    for listing, price in _ready(listings, options, report, required=_meta_requirements):
        ident = listing.identification
        writer.writerow({
            "id": listing.sku,
            "title": _fit(ident.title, META_TITLE_MAX),
            "description": spreadsheet_cell(_description_text(ident))[:META_DESCRIPTION_MAX],
            "availability": "in stock",
            "condition": meta_condition(ident.condition),
            "price": f"{price:.2f} {options.currency}",
            "link": product_link(options.product_url, listing),
            "image_link": links.urls(listing)[0],
            "brand": ident.brand,
        })  # fmt: skip
        report.written += 1
    links.note_clashes(report)


def _meta_requirements(listing: Listing) -> str | None:
    """Meta rejects an item without a brand or an image, so those are skipped up front."""
    if not listing.identification.brand:
        return "no brand (Meta's catalog requires one)"
    if not listing.photos:
        return "no photos (Meta's catalog requires one)"
    return None


_WRITERS: dict[
    ExportFormat, Callable[[Sequence[Listing], TextIO, ExportOptions, ExportReport], None]
] = {
    ExportFormat.CSV: _write_csv,
    ExportFormat.JSONL: _write_jsonl,
    ExportFormat.EBAY: _write_ebay,
    ExportFormat.SHOPIFY: _write_shopify,
    ExportFormat.META: _write_meta,
}


# --- cells --------------------------------------------------------------------------------------


class _Sheet:
    """A CSV file as every format here writes it: our header row as it is, then data rows
    with every cell quoted and every text cell through `spreadsheet_cell` (see the module
    docstring). A row is a list in column order or a dict by column name (missing: empty)."""

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        csv.writer(out).writerow(self.columns)
        self._rows = csv.writer(out, quoting=csv.QUOTE_ALL)

    def writerow(self, row: Sequence[object] | Mapping[str, object]) -> None:
        if isinstance(row, Mapping):
            assert set(row) <= set(self.columns), f"not columns: {set(row) - set(self.columns)}"
            cells = [row.get(column, "") for column in self.columns]
        else:
            cells = list(row)
        assert len(cells) == len(self.columns), "one cell a column"
        self._rows.writerow(
            [spreadsheet_cell(cell) if isinstance(cell, str) else cell for cell in cells]
        )


def _fit(text: str, limit: int) -> str:
    """`text` shortened to `limit` characters counting the quote `spreadsheet_cell` may add
    (the writer then leaves it as it is: a prefixed cell starts with a quote)."""
    return shorten(spreadsheet_cell(shorten(text, limit)), limit)


# --- values -------------------------------------------------------------------------------------


def meta_condition(condition: Condition) -> str:
    """Meta allows only new, refurbished and used."""
    if condition in (Condition.NEW, Condition.NEW_OTHER, Condition.NEW_WITH_DEFECTS):
        return "new"
    if condition.value.endswith("_refurbished"):
        return "refurbished"
    return "used"


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters at a word boundary if it is longer
    (mid-word only when the first word alone is too long)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1]  # one past the limit: a space there means a whole last word fits
    cut = head.rsplit(" ", 1)[0] if " " in head else head[:limit]
    return cut.rstrip(" ,;:-–") or cut


def first_gtin(barcodes: Iterable[str]) -> str | None:
    """The first barcode that is a UPC-A (12 digits) or EAN-13 with a correct check digit."""
    for barcode in barcodes:
        code = barcode.strip().replace(" ", "").replace("-", "")
        if len(code) in (12, 13) and code.isascii() and code.isdigit() and _check_digit_ok(code):
            return code
    return None


def _check_digit_ok(code: str) -> bool:
    # GTIN mod-10: from the right, excluding the check digit, weights alternate 3, 1, 3, ...
    body = [int(d) for d in reversed(code[:-1])]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(body))
    return (10 - total % 10) % 10 == int(code[-1])


def shopify_handle(title: str, item_key: str) -> str:
    """A lowercase-hyphen slug of the title plus a short item key, unique per item."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:60].rstrip("-") or "item"
    suffix = re.sub(r"[^a-z0-9]+", "", item_key.lower())[:8]
    return f"{slug}-{suffix}" if suffix else slug


def _description_text(ident: Identification) -> str:
    text = ident.description.strip()
    if ident.defects:
        text += "\n\nDefects: " + "; ".join(ident.defects)
    return text


def _description_html(ident: Identification) -> str:
    body = _html_lines(ident.description.strip())
    if ident.defects:
        items = "".join(f"<li>{_html_lines(d)}</li>" for d in ident.defects)
        body += f"<br><br>Defects:<ul>{items}</ul>"
    return body


def _html_lines(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return re.sub(r"\r\n|\r|\n", "<br>", escaped)


class _PhotoLinks:
    """Photo URLs: `photo_base_url` + each photo's path below the photo root, watching for
    two different photos (by content) at one path (a file changed between runs)."""

    def __init__(self, options: ExportOptions, listings: Sequence[Listing]) -> None:
        self.base_url = options.photo_base_url
        self._sha256_by_path: dict[str, str] = {}
        self._clashes: list[str] = []
        self._root: tuple[str, ...] = ()
        if not self.base_url:
            return
        paths = [_parts(photo.path) for listing in listings for photo in listing.photos]
        if options.photo_root is None:
            self._root = _common_folder(paths)
            return
        self._root = _parts(options.photo_root.rstrip("/\\") or "/")
        for listing in listings:
            for photo in listing.photos:
                if _parts(photo.path)[: len(self._root)] != self._root:
                    raise UsageError(
                        f"photo {photo.path} (item {listing.sku}) is not in --photo-root "
                        f"{options.photo_root}: pass the folder the photos are uploaded from"
                    )

    def urls(self, listing: Listing) -> list[str]:
        if not self.base_url:
            return []
        urls = []
        for photo in listing.photos:
            below = "/".join(_parts(photo.path)[len(self._root) :])
            seen = self._sha256_by_path.setdefault(below, photo.sha256)
            if seen != photo.sha256 and below not in self._clashes:
                self._clashes.append(below)
            urls.append(_url(self.base_url, below))
        return urls

    def note_clashes(self, report: ExportReport) -> None:
        if self._clashes:
            report.note(
                "different photos at the same path (changed since they were processed?) "
                "would share one URL: " + ", ".join(self._clashes)
            )


PRODUCT_URL_FIELDS = ("sku", "item_id")


def _check_product_url(pattern: str) -> None:
    """A --product-url pattern: http(s), and placeholders that name each item apart."""
    example = "e.g. 'https://shop.example.com/p/{sku}'"
    if not re.match(r"https?://[^/\s{}]+", pattern):
        raise UsageError(
            f"product URL {pattern!r} must start with http:// or https:// and a host, {example}"
        )
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as exc:
        raise UsageError(
            f"product URL {pattern!r} is not a pattern ({exc}); write a literal brace as "
            "{{ or }}"
        ) from None
    unknown = sorted(fields - set(PRODUCT_URL_FIELDS))
    if unknown:
        raise UsageError(
            f"product URL {pattern!r} has an unknown placeholder {{{unknown[0]}}}; "
            "use {sku} or {item_id}"
        )
    if not fields:
        raise UsageError(
            f"product URL {pattern!r} would give every item the same link: put {{sku}} or "
            f"{{item_id}} where the item goes, {example}"
        )


def product_link(pattern: str, listing: Listing) -> str:
    """The item's page in the seller's shop: `pattern` with its SKU and item id filled in."""
    return pattern.format(sku=quote(listing.sku, safe=""), item_id=listing.item_id)


def _one_word(url: str) -> str:
    """A URL with its whitespace percent-encoded, so URLs joined by spaces stay apart."""
    return re.sub(r"\s", lambda m: quote(m.group()), url)


def _url(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{quote(path, safe='/')}"


def _parts(path: str) -> tuple[str, ...]:
    # Paths may come from Windows or POSIX machines; either separator ends a folder.
    return PurePosixPath(PureWindowsPath(path).as_posix()).parts


def _common_folder(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """The deepest folder that holds every path (each path's last part is its file name)."""
    if not paths:
        return ()
    common = paths[0][:-1]
    for parts in paths[1:]:
        folder = parts[:-1]
        n = 0
        while n < min(len(common), len(folder)) and common[n] == folder[n]:
            n += 1
        common = common[:n]
    return common


def _money(amount: float) -> str:
    return f"{price_decimal(amount):.2f}"
