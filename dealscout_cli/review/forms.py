"""The item page's form, both ways: a listing's fields as form values, and the seller's posted
values back as a listing, checked by the same models that check a model's answer (a title
over 80 characters, a price range upside down are refused with the field named)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dealscout_cli.models import Condition, Identification, PriceEstimate

SELLER_RATIONALE = "set by the seller"

TEXT_FIELDS = ("title", "description", "category", "brand", "model")
PRICE_FIELDS = ("price_low", "price_suggested", "price_high")


def form_values(fields: dict[str, Any]) -> dict[str, str]:
    """A revision's fields as the form shows them (attributes one `Name: value` a line)."""
    ident = fields.get("identification") or {}
    price = fields.get("price") or {}
    values = {name: ident.get(name) or "" for name in TEXT_FIELDS}
    values["condition"] = ident.get("condition") or ""
    values["attributes"] = "\n".join(
        f"{a['name']}: {a['value']}" for a in ident.get("attributes") or []
    )
    values["defects"] = "\n".join(ident.get("defects") or [])
    for name in PRICE_FIELDS:
        amount = price.get(name.removeprefix("price_"))
        values[name] = f"{amount:.2f}" if isinstance(amount, int | float) else ""
    values["currency"] = price.get("currency") or "USD"
    values["rationale"] = price.get("rationale") or ""
    return values


def listing_from_form(
    form: dict[str, str], current: dict[str, Any]
) -> tuple[Identification, PriceEstimate | None] | dict[str, str]:
    """The seller's listing, or {field: what is wrong} to show beside each field. What the
    form does not edit (the model's confidence) is kept from the current revision."""
    errors: dict[str, str] = {}
    ident = current.get("identification") or {}
    attributes, bad_line = _attributes(form.get("attributes", ""))
    if bad_line:
        errors["attributes"] = f"write each attribute as Name: value (not {bad_line!r})"
    raw = {
        **{name: form.get(name, "") for name in TEXT_FIELDS},
        "brand": form.get("brand", "").strip() or None,
        "model": form.get("model", "").strip() or None,
        "condition": form.get("condition", ""),
        "attributes": attributes,
        "defects": [line for line in form.get("defects", "").splitlines() if line.strip()],
        "confidence": ident.get("confidence", 1.0),
    }
    identification = None
    try:
        identification = Identification.model_validate(raw)
    except ValidationError as exc:
        errors.update(_field_errors(exc, ""))
    price = _price(form, current, errors)
    if errors or identification is None:
        return errors
    return identification, price


def _price(
    form: dict[str, str], current: dict[str, Any], errors: dict[str, str]
) -> PriceEstimate | None:
    amounts = {name: form.get(name, "").strip() for name in PRICE_FIELDS}
    if not any(amounts.values()):
        return None
    before = current.get("price") or {}
    numbers: dict[str, float] = {}
    for name, text in amounts.items():
        try:
            numbers[name.removeprefix("price_")] = float(text.replace(",", ""))
        except ValueError:
            errors[name] = f"{text!r} is not a price" if text else "give all three prices"
    if len(numbers) < 3:
        return None
    # The form shows a price to the cent: one the seller left as shown is the model's own,
    # kept exactly (0.1234567891 shown as 0.12 is not the seller's 0.12).
    changed = any(not _same_cents(numbers[key], before.get(key)) for key in numbers)
    if not changed:
        numbers = {key: float(before[key]) for key in numbers}
    rationale = form.get("rationale", "").strip() or before.get("rationale") or SELLER_RATIONALE
    try:
        return PriceEstimate.model_validate(
            {
                **numbers,
                "currency": form.get("currency", "").strip() or "USD",
                # a seller's price keeps the model's reasoning only while it is the model's
                "rationale": SELLER_RATIONALE
                if changed and rationale == before.get("rationale")
                else rationale,
            }
        )
    except ValidationError as exc:
        errors.update(_field_errors(exc, "price_"))
        return None


def _same_cents(typed: float, shown: Any) -> bool:
    if not isinstance(shown, int | float) or isinstance(shown, bool):
        return False
    return f"{typed:.2f}" == f"{shown:.2f}"


def _attributes(text: str) -> tuple[list[dict[str, str]], str | None]:
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or not value.strip():
            return [], line.strip()
        found.append({"name": name.strip(), "value": value.strip()})
    return found, None


def _field_errors(exc: ValidationError, prefix: str) -> dict[str, str]:
    """Each error under the form field it is about (a price's under `price_low` etc.)."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "form"
        if prefix and name in ("low", "suggested", "high"):
            name = prefix + name
        errors.setdefault(name, error["msg"].removeprefix("Value error, "))
    return errors


CONDITIONS = [condition.value for condition in Condition]
