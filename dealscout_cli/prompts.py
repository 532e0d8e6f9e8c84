"""Prompt texts sent to the models, versioned.

Bump PROMPT_VERSION whenever a text below changes: it is stored with every
listing, so a seller can tell which drafts came from which wording.
"""

from __future__ import annotations

import json

from dealscout_cli.models import Condition, Identification

PROMPT_VERSION = "2026-11-29.1"

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


def identify_prompt(notes: str | None = None) -> str:
    conditions = ", ".join(c.value for c in Condition)
    note_line = f"Seller's notes about this item: {notes}" if notes else ""
    return IDENTIFY_USER.format(conditions=conditions, notes=note_line).strip()


def price_prompt(identification: Identification) -> str:
    facts = identification.model_dump(
        mode="json",
        include={"title", "category", "brand", "model", "condition", "defects", "attributes"},
    )
    return PRICE_USER.format(identification=json.dumps(facts, ensure_ascii=False, indent=1))


def price_system(currency: str = "USD") -> str:
    return PRICE_SYSTEM.format(currency=currency)
