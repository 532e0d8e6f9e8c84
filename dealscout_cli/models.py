"""The shapes that cross modules: what the models must answer, and what a listing is.

`Identification` and `PriceEstimate` are sent to Gemini as response schemas and
validated on the way back; `Listing` is what the store keeps and the exports read.

A model can answer anything its schema allows, so an answer is untrusted input: every
string is normalised first (control characters out, whitespace folded) and only then held
to its length rules, and every number must be finite and in a sane range. An answer that
breaks a rule fails validation (the pipeline's `bad_output`), so nothing odd is stored and
whatever is stored reads back through these same models. The extra rules are validators,
not schema keywords, so the schema Gemini is sent stays the one it was.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

TITLE_MAX = 80  # eBay's title limit; the tightest of the marketplaces we export to
MAX_PRICE = 10_000_000  # major units: above any resale listing, far inside int64 cents

# C0/C1 controls, DEL, and the Unicode format characters that reorder or hide text (bidi
# overrides and isolates, zero-width joiners): never part of a title a buyer should read.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
_SPACES = re.compile(r"\s+")


# Validation context for what the store kept: read back as it was written (an older version's
# row under looser rules included), not normalised again; the terminal and CSV layers make
# it safe to show (`text`).
STORED = {"stored": True}


def _stored(info: ValidationInfo | None) -> bool:
    return bool(info is not None and isinstance(info.context, dict) and info.context.get("stored"))


def one_line(value: Any, info: ValidationInfo | None = None) -> Any:
    """A single-line text as a buyer should see it: NFC, no controls, whitespace folded."""
    if not isinstance(value, str) or _stored(info):
        return value
    text = _INVISIBLE.sub("", unicodedata.normalize("NFC", value))
    return _SPACES.sub(" ", text).strip()


def paragraphs(value: Any, info: ValidationInfo | None = None) -> Any:
    """A multi-line text: lines kept (at most one blank line between), each line folded."""
    if not isinstance(value, str) or _stored(info):
        return value
    lines = [one_line(line) for line in value.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# Validators take `info` without a default: pydantic passes it only to a required parameter.
def _clean_line(value: Any, info: ValidationInfo) -> Any:
    return one_line(value, info)


def _clean_text(value: Any, info: ValidationInfo) -> Any:
    return paragraphs(value, info)


def _clean_optional(value: Any, info: ValidationInfo) -> Any:
    cleaned = one_line(value, info)
    return None if cleaned == "" else cleaned


class Condition(StrEnum):
    """Item condition, in the words a seller uses. Each maps to one eBay condition ID."""

    NEW = "new"
    NEW_OTHER = "new_other"
    NEW_WITH_DEFECTS = "new_with_defects"
    CERTIFIED_REFURBISHED = "certified_refurbished"
    EXCELLENT_REFURBISHED = "excellent_refurbished"
    VERY_GOOD_REFURBISHED = "very_good_refurbished"
    GOOD_REFURBISHED = "good_refurbished"
    SELLER_REFURBISHED = "seller_refurbished"
    LIKE_NEW = "like_new"
    USED = "used"
    VERY_GOOD = "very_good"
    GOOD = "good"
    ACCEPTABLE = "acceptable"
    FOR_PARTS = "for_parts"


# eBay's condition IDs (https://developer.ebay.com/devzone/finding/callref/enums/conditionIdList.html).
EBAY_CONDITION_ID: dict[Condition, int] = {
    Condition.NEW: 1000,
    Condition.NEW_OTHER: 1500,
    Condition.NEW_WITH_DEFECTS: 1750,
    Condition.CERTIFIED_REFURBISHED: 2000,
    Condition.EXCELLENT_REFURBISHED: 2010,
    Condition.VERY_GOOD_REFURBISHED: 2020,
    Condition.GOOD_REFURBISHED: 2030,
    Condition.SELLER_REFURBISHED: 2500,
    Condition.LIKE_NEW: 2750,
    Condition.USED: 3000,
    Condition.VERY_GOOD: 4000,
    Condition.GOOD: 5000,
    Condition.ACCEPTABLE: 6000,
    Condition.FOR_PARTS: 7000,
}


class Attribute(BaseModel):
    """One item specific, e.g. Color: Navy."""

    name: str = Field(max_length=65)
    value: str = Field(max_length=200)

    _clean = field_validator("name", "value", mode="before")(_clean_line)

    @field_validator("name", "value")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text:
            raise ValueError("must not be blank")
        return text


class Identification(BaseModel):
    """What the vision model says the item is."""

    title: str = Field(
        min_length=3,
        max_length=TITLE_MAX,
        description="Listing title, at most 80 characters, no emoji",
    )
    description: str = Field(
        min_length=1, max_length=4000, description="Plain-text description for buyers"
    )
    category: str = Field(
        min_length=1,
        max_length=200,
        description="Marketplace category path, e.g. Home & Garden > Kitchen",
    )
    brand: str | None = Field(
        default=None, max_length=100, description="Brand, or null if not visible"
    )
    model: str | None = Field(
        default=None, max_length=100, description="Model name or number, or null"
    )
    attributes: list[Attribute] = Field(default_factory=list, max_length=20)
    condition: Condition
    defects: list[str] = Field(
        default_factory=list, max_length=20, description="Visible defects; empty if none"
    )
    confidence: float = Field(ge=0.0, le=1.0, description="How sure the identification is, 0 to 1")

    model_config = ConfigDict(allow_inf_nan=False)

    _lines = field_validator("title", "category", mode="before")(_clean_line)
    _text = field_validator("description", mode="before")(_clean_text)
    _optional = field_validator("brand", "model", mode="before")(_clean_optional)

    @field_validator("defects", mode="before")
    @classmethod
    def _defects(cls, defects: Any, info: ValidationInfo) -> Any:
        if not isinstance(defects, list) or _stored(info):
            return defects
        cleaned = [one_line(defect) for defect in defects]
        return [defect for defect in cleaned if defect != ""]

    @property
    def ebay_condition_id(self) -> int:
        return EBAY_CONDITION_ID[self.condition]


def price_decimal(amount: float) -> Decimal:
    """A price to the cent, half up, as the model wrote it: the one rounding for listings'
    cents, every export and the review grid."""
    # str() first: Decimal(2.675) is 2.67499999..., Decimal("2.675") is what the model said.
    return Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class PriceEstimate(BaseModel):
    """What the pricing model says the item will sell for, in major currency units."""

    low: float = Field(ge=0)
    suggested: float = Field(ge=0)
    high: float = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217 code, e.g. USD")
    rationale: str = Field(min_length=1, max_length=1000)

    model_config = ConfigDict(allow_inf_nan=False)

    _text = field_validator("rationale", mode="before")(_clean_text)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency_code(cls, currency: Any, info: ValidationInfo) -> Any:
        if not isinstance(currency, str) or _stored(info):
            return currency
        return one_line(currency).upper()

    @field_validator("currency")
    @classmethod
    def _three_letters(cls, currency: str, info: ValidationInfo) -> str:
        if not re.fullmatch("[A-Z]{3}", currency) and not _stored(info):
            raise ValueError("currency must be an ISO 4217 code of three letters")
        return currency

    @field_validator("low", "suggested", "high")
    @classmethod
    def _sane(cls, price: float) -> float:
        if price > MAX_PRICE:
            raise ValueError(f"a price above {MAX_PRICE:,} is not a resale price")
        return 0.0 if price == 0 else price  # -0.0 would print as "-0.00", a formula to a sheet

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        suggested = info.data.get("suggested")
        if low is not None and suggested is not None and not (low <= suggested <= high):
            raise ValueError("prices must satisfy low <= suggested <= high")
        return high

    def suggested_cents(self) -> int:
        return int(price_decimal(self.suggested) * 100)


class ListingPhoto(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str


class Listing(BaseModel):
    """A draft listing as the store keeps it and the exports read it."""

    item_id: int
    item_key: str
    sku: str
    identification: Identification
    price: PriceEstimate | None
    photos: list[ListingPhoto]
    barcodes: list[str] = Field(default_factory=list)
    quality_warnings: list[str] = Field(default_factory=list)
    # The web pages a grounded price (`--grounded-prices`) was based on; empty otherwise.
    price_sources: list[str] = Field(default_factory=list)
    notes: str | None = None
    prompt_version: str
    vision_model: str
    pricing_model: str | None
    offline: bool = False
    created_at: str
