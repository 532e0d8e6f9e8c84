"""The shapes that cross modules: what the models must answer, and what a listing is.

`Identification` and `PriceEstimate` are sent to Gemini as response schemas and
validated on the way back; `Listing` is what the store keeps and the exports read.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

TITLE_MAX = 80  # eBay's title limit; the tightest of the marketplaces we export to


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

    @field_validator("title")
    @classmethod
    def _title_is_one_line(cls, title: str) -> str:
        if "\n" in title:
            raise ValueError("title must be one line")
        return title.strip()

    @property
    def ebay_condition_id(self) -> int:
        return EBAY_CONDITION_ID[self.condition]


class PriceEstimate(BaseModel):
    """What the pricing model says the item will sell for, in major currency units."""

    low: float = Field(ge=0)
    suggested: float = Field(ge=0)
    high: float = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3, description="ISO 4217 code, e.g. USD")
    rationale: str = Field(min_length=1, max_length=1000)

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        suggested = info.data.get("suggested")
        if low is not None and suggested is not None and not (low <= suggested <= high):
            raise ValueError("prices must satisfy low <= suggested <= high")
        return high

    def suggested_cents(self) -> int:
        return round(self.suggested * 100)


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
    notes: str | None = None
    prompt_version: str
    vision_model: str
    pricing_model: str | None
    offline: bool = False
    created_at: str
