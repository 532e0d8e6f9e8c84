"""Prompt texts sent to the models, versioned.

Bump PROMPT_VERSION whenever a text below changes: it is stored with every
listing, so a seller can tell which drafts came from which wording.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from dealscout_cli.models import Condition, Identification

PROMPT_VERSION = "2026-11-29.2"  # .2: barcodes read from the photos as a hint
# (--grounded-prices appends GROUNDED_PRICE_* below; the default texts are unchanged)

IDENTIFY_SYSTEM = """\
You are an experienced reseller writing a draft listing for an online marketplace.
You are shown photos of ONE item for sale, possibly from several angles.
Identify the item as precisely as the photos allow. Never invent a brand or model
number that is not visible or certain; use null instead. Describe condition honestly
and list every visible defect. Write for buyers: plain language, no emoji, no
ALL CAPS, no claims you cannot see."""

IDENTIFY_USER = """\
Identify this item and draft its listing.
- title: at most 80 characters, most important words first (brand, model, type, key attribute).
- condition: one of {conditions}.
- confidence: 0 to 1, how sure you are of the identification.
{notes}"""

PRICE_SYSTEM = """\
You estimate resale prices on second-hand marketplaces (eBay, Facebook Marketplace)
for the item described. Give a realistic low, suggested and high price for a quick
sale at the stated condition, in {currency}, and a one-sentence rationale."""

PRICE_USER = """\
Item (identified from photos):
{identification}

Estimate the resale price."""


BARCODE_HINT = (
    "Barcodes read from the photos (check digits verified): {codes}. Use them to name the "
    "exact product; if they contradict the photos, trust the photos."
)


def identify_prompt(notes: str | None = None, barcodes: Sequence[str] = ()) -> str:
    """The identify request. Only verified product codes are passed, never QR text: what a
    QR code says is untrusted and could carry instructions."""
    conditions = ", ".join(c.value for c in Condition)
    lines = [f"Seller's notes about this item: {notes}" if notes else ""]
    if barcodes:
        lines.append(BARCODE_HINT.format(codes=", ".join(barcodes)))
    return IDENTIFY_USER.format(conditions=conditions, notes="\n".join(filter(None, lines))).strip()


def price_prompt(identification: Identification, *, grounded: bool = False) -> str:
    facts = identification.model_dump(
        mode="json",
        include={"title", "category", "brand", "model", "condition", "defects", "attributes"},
    )
    text = PRICE_USER.format(identification=json.dumps(facts, ensure_ascii=False, indent=1))
    return text + GROUNDED_PRICE_SUFFIX.format(schema=_price_schema()) if grounded else text


def price_system(currency: str = "USD", *, grounded: bool = False) -> str:
    text = PRICE_SYSTEM.format(currency=currency)
    return text + GROUNDED_PRICE_SYSTEM if grounded else text


# --grounded-prices: Google Search grounding cannot be combined with JSON mode on most models,
# so the schema goes into the prompt and the answer is validated like any other.
GROUNDED_PRICE_SYSTEM = """
Search the web for current and recently sold listings of this item before you answer,
and base the prices on what you find."""

GROUNDED_PRICE_SUFFIX = """

Answer with one JSON object only, no other text, matching this JSON Schema:
```json
{schema}
```"""


def _price_schema() -> str:
    from dealscout_cli.models import PriceEstimate

    return json.dumps(PriceEstimate.model_json_schema(), separators=(",", ":"))


# --group auto --confirm-groups: one request asks about several unsure boundaries of a shoot
# (not part of a listing, so PROMPT_VERSION does not cover it).
GROUP_SYSTEM = """\
You help a reseller sort a photo shoot. The seller photographed products one after
another, several photos each (different angles, distances, backgrounds and light; a
close-up of a label or barcode belongs to the product it is on). For each numbered
pair of photos, say whether both show the same product."""


def group_prompt(boundaries: int) -> str:
    """The question for `boundaries` pairs: the images come two per pair, in order."""
    return (
        f"There are {boundaries} pairs. The images come in order, two per pair: images 1 and 2 "
        "are pair 1, images 3 and 4 pair 2, and so on. For every pair answer with its number "
        "and same_product: true when both photos show the same product, false when not."
    )
