"""Answers that fit a response schema, filled with plausible values by field name.

Both schema dialects Gemini accepts are handled: `responseSchema` (the OpenAPI
subset: uppercase types, `nullable`, and — as google-genai 3.x sends a pydantic
class — snake_case keywords such as `max_length`, `property_ordering`) and
`responseJsonSchema` (JSON Schema with `$defs`/`$ref`, `anyOf`, type lists).
`normalize_schema` turns either into one JSON-Schema-like form; `generate` walks it.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from .catalogue import DEFECTS, CatalogueItem, ImageFacts

_VERBATIM_KEYS = {
    "enum",
    "required",
    "propertyOrdering",
    "const",
    "default",
    "example",
    "examples",
    "description",
    "title",
    "format",
    "pattern",
}
_NAMED_CHILDREN = {"properties", "$defs", "definitions", "patternProperties"}
_KEY_ALIASES = {"defs": "$defs", "ref": "$ref"}
_MAX_DEPTH = 12


def _camel(key: str) -> str:
    if "_" not in key or key.startswith("$"):
        return _KEY_ALIASES.get(key, key)
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def normalize_schema(node: Any) -> Any:
    """Either schema dialect, as JSON Schema with camelCase keys and lowercase types."""
    if isinstance(node, list):
        return [normalize_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for raw_key, value in node.items():
        key = _camel(raw_key)
        if key in _NAMED_CHILDREN and isinstance(value, dict):
            out[key] = {name: normalize_schema(sub) for name, sub in value.items()}
        elif key == "type":
            out[key] = [t.lower() for t in value] if isinstance(value, list) else value.lower()
        elif key in _VERBATIM_KEYS:
            out[key] = value
        else:
            out[key] = normalize_schema(value)
    if out.pop("nullable", False) and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


@dataclass
class Subject:
    """What the answer is about: a catalogue item, the images' facts, and a seeded RNG."""

    item: CatalogueItem
    images: list[ImageFacts]
    rng: random.Random

    @property
    def colour(self) -> str:
        return self.images[0].colours[0] if self.images else "Black"

    def prices(self) -> tuple[float, float, float]:
        spread = self.item.price_high - self.item.price_low
        low = round(self.item.price_low + spread * self.rng.uniform(0.0, 0.2), 2)
        high = round(self.item.price_high - spread * self.rng.uniform(0.0, 0.2), 2)
        suggested = round(low + (high - low) * self.rng.uniform(0.35, 0.65), 2)
        return low, suggested, high

    def title(self) -> str:
        return f"{self.item.brand} {self.item.model} {self.item.name} {self.colour}"

    def description(self) -> str:
        item = self.item
        seen = ""
        if self.images:
            first = self.images[0]
            shades = " and ".join(c.lower() for c in first.colours)
            seen = f" Photographed at {first.width}x{first.height}; mostly {shades}."
        return (
            f"Pre-owned {item.brand} {item.model} {item.name.lower()} in "
            f"{self.colour.lower()}, {item.material.lower()}. Works as it should.{seen}"
        )

    def rationale(self) -> str:
        return (
            f"Recent sold listings for used {self.item.brand} {self.item.model} "
            f"{self.item.name.lower()} range from ${self.item.price_low:.0f} to "
            f"${self.item.price_high:.0f}; priced for a quick sale."
        )


def generate(schema: dict[str, Any], subject: Subject) -> Any:
    """A value that validates against the normalized `schema`."""
    return _Generator(schema, subject).value(schema, "", 0)


class _Generator:
    def __init__(self, root: dict[str, Any], subject: Subject) -> None:
        self.root = root
        self.subject = subject
        self.rng = subject.rng

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < _MAX_DEPTH:
            target: Any = self.root
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")] if part else target
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **rest}
            seen += 1
        if "allOf" in node:
            merged = {k: v for k, v in node.items() if k != "allOf"}
            for part in node["allOf"]:
                part = self.resolve(part)
                for key, value in part.items():
                    if key == "properties":
                        merged.setdefault("properties", {}).update(value)
                    elif key == "required":
                        merged["required"] = [*merged.get("required", []), *value]
                    else:
                        merged.setdefault(key, value)
            node = merged
        return node

    def value(self, node: Any, name: str, depth: int) -> Any:
        if not isinstance(node, dict) or depth > _MAX_DEPTH:
            return None
        node = self.resolve(node)
        if "const" in node:
            return node["const"]
        if "enum" in node and node["enum"]:
            return self.choose_enum(node["enum"], name)
        for key in ("anyOf", "oneOf"):
            if node.get(key):
                options = [self.resolve(o) for o in node[key]]
                real = [o for o in options if o.get("type") != "null"] or options
                return self.value(real[0], name, depth + 1)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node else "string"
        method = getattr(self, f"make_{kind}", None)
        return method(node, name, depth) if method else None

    def choose_enum(self, options: list[Any], name: str) -> Any:
        preferred = ("good", "used", "very_good", "like_new", "USED", "GOOD")
        if name.lower() == "condition":
            for choice in preferred:
                if choice in options and self.rng.random() < 0.6:
                    return choice
        return self.rng.choice(options)

    def make_null(self, node: dict[str, Any], name: str, depth: int) -> None:
        return None

    def make_boolean(self, node: dict[str, Any], name: str, depth: int) -> bool:
        return self.rng.random() < 0.5

    def make_object(self, node: dict[str, Any], name: str, depth: int) -> dict[str, Any]:
        props: dict[str, Any] = node.get("properties", {})
        order = [p for p in node.get("propertyOrdering", []) if p in props]
        order += [p for p in props if p not in order]
        prices = self.price_triple(props)
        out: dict[str, Any] = {}
        for prop in order:
            sub = self.resolve(props[prop]) if isinstance(props[prop], dict) else {}
            if prop in prices and _numeric(sub):
                out[prop] = self.fit_number(sub, prices[prop])
            else:
                out[prop] = self.value(sub, prop, depth + 1)
        return out

    def price_triple(self, props: dict[str, Any]) -> dict[str, float]:
        """low <= suggested <= high, whichever of those names the object has."""
        names = {p.lower(): p for p in props}
        if not {"low", "high"} & set(names) and "suggested" not in names:
            return {}
        low, suggested, high = self.subject.prices()
        wanted = {
            "low": low,
            "min": low,
            "suggested": suggested,
            "mid": suggested,
            "high": high,
            "max": high,
        }
        return {names[k]: v for k, v in wanted.items() if k in names}

    def make_array(self, node: dict[str, Any], name: str, depth: int) -> list[Any]:
        low = int(node.get("minItems", 0))
        high = int(node.get("maxItems", max(low, 3)))
        items = self.resolve(node.get("items", {})) if isinstance(node.get("items"), dict) else {}
        key = name.lower()
        if key in ("attributes", "item_specifics", "specifics", "aspects"):
            return self.attributes(items, low, high, depth)
        if key in ("defects", "flaws", "damage", "issues"):
            count = self.rng.choice((0, 0, 1, 2))
        else:
            count = self.rng.randint(1, 3)
        count = max(low, min(high, count))
        singular = key[:-1] if key.endswith("s") else key
        return [self.value(items, singular, depth + 1) for _ in range(count)]

    def attributes(self, items: dict[str, Any], low: int, high: int, depth: int) -> list[Any]:
        item = self.subject.item
        facts = [
            ("Color", self.subject.colour),
            ("Brand", item.brand),
            ("Model", item.model),
            ("Material", item.material),
            ("Type", item.name),
        ]
        count = max(low, min(high, len(facts)))
        props = items.get("properties", {})
        keys = [k for k in props if k.lower() in ("name", "key", "label")]
        values = [k for k in props if k.lower() in ("value", "text")]
        if not (keys and values):
            return [self.value(items, "attribute", depth + 1) for _ in range(count)]
        out = []
        for i in range(count):
            attr = self.make_object(items, "attribute", depth + 1)
            label, text = facts[i % len(facts)]
            attr[keys[0]] = self.fit_string(self.resolve(props[keys[0]]), label)
            attr[values[0]] = self.fit_string(self.resolve(props[values[0]]), text)
            out.append(attr)
        return out

    def make_string(self, node: dict[str, Any], name: str, depth: int) -> str:
        return self.fit_string(node, self.text_for(name, node))

    def text_for(self, name: str, node: dict[str, Any]) -> str:
        subject, item, key = self.subject, self.subject.item, name.lower()
        fmt = node.get("format")
        if fmt == "date-time":
            return "2024-05-01T12:00:00Z"
        if fmt == "date":
            return "2024-05-01"
        if fmt == "email":
            return "seller@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/item"
        by_name = {
            "title": subject.title,
            "name": lambda: f"{item.brand} {item.name}",
            "brand": lambda: item.brand,
            "manufacturer": lambda: item.brand,
            "model": lambda: item.model,
            "category": lambda: item.category,
            "description": subject.description,
            "currency": lambda: "USD",
            "color": lambda: subject.colour,
            "colour": lambda: subject.colour,
            "material": lambda: item.material,
            "rationale": subject.rationale,
            "reasoning": subject.rationale,
            "reason": subject.rationale,
            "defect": lambda: self.rng.choice(DEFECTS),
            "condition": lambda: "used",
        }
        for field_name, make in by_name.items():
            if key == field_name or key.endswith("_" + field_name):
                return make()
        return f"{item.name} {key.replace('_', ' ')}".strip()

    def fit_string(self, node: dict[str, Any], text: str) -> str:
        pattern = node.get("pattern")
        if isinstance(pattern, str) and not _matches(pattern, text):
            return string_for_pattern(pattern, self.rng) or text
        high = node.get("maxLength")
        low = int(node.get("minLength", 0))
        if node.get("format") in ("date", "date-time", "email", "uri", "url"):
            return text
        if high is not None and len(text) > int(high):
            text = text[: int(high)].rstrip()
            cut = text.rfind(" ")
            if cut >= max(low, int(high) // 2):
                text = text[:cut]
        while len(text) < low:
            text = f"{text} {self.subject.item.name}".strip()
        if high is not None:
            text = text[: int(high)]
        return text

    def make_integer(self, node: dict[str, Any], name: str, depth: int) -> int:
        lo, hi = _bounds(node, 0.0, 100.0)
        lo_i, hi_i = math.ceil(lo), math.floor(hi)
        if name.lower() in ("quantity", "count") and lo_i <= 1 <= hi_i:
            return 1
        return self.rng.randint(lo_i, hi_i) if lo_i <= hi_i else lo_i

    def make_number(self, node: dict[str, Any], name: str, depth: int) -> float:
        key = name.lower()
        if key in ("confidence", "score", "probability", "certainty"):
            guess = round(self.rng.uniform(0.6, 0.95), 2)
        elif "price" in key or key in ("amount", "suggested", "value"):
            guess = self.subject.prices()[1]
        else:
            guess = round(self.rng.uniform(0, 100), 2)
        return self.fit_number(node, guess)

    def fit_number(self, node: dict[str, Any], guess: float) -> float:
        lo, hi = _bounds(node, -math.inf, math.inf)
        if node.get("type") == "integer" or "integer" in (node.get("type") or []):
            guess = round(guess)
        return min(max(guess, lo), hi)


def _numeric(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return bool({"number", "integer"} & set(kinds))


def _bounds(node: dict[str, Any], lo: float, hi: float) -> tuple[float, float]:
    lo = float(node.get("minimum", lo))
    hi = float(node.get("maximum", hi))
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        lo = max(lo, float(node["exclusiveMinimum"]) + 0.01)
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        hi = min(hi, float(node["exclusiveMaximum"]) - 0.01)
    return lo, hi


def plain_text_answer(subject: Subject) -> str:
    """The answer when no JSON was asked for: a short paragraph about the item."""
    low, suggested, high = subject.prices()
    return (
        f"This looks like a {subject.title()}. {subject.description()} "
        f"Similar items sell for ${low:.2f}-${high:.2f}; a fair asking price is "
        f"${suggested:.2f}."
    )


# ---------------------------------------------------------------- strings for a `pattern`

_REPEAT_EXTRA = 2  # an open-ended quantifier (*, +, {n,}) repeats up to this many more


def _matches(pattern: str, text: str) -> bool:
    """JSON Schema's rule: the pattern matches anywhere in the string (not anchored)."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True  # not a pattern Python can read: leave the text alone


def string_for_pattern(pattern: str, rng: random.Random) -> str | None:
    """A short string `pattern` matches, or None when it uses what we cannot generate
    (backreferences, lookarounds) or is not a regular expression Python reads."""
    try:
        tree = re._parser.parse(pattern)  # type: ignore[attr-defined]
        text = _emit(tree, rng)
    except (re.error, _Unsupported, RecursionError):
        return None
    return text if _matches(pattern, text) else None


class _Unsupported(Exception):
    pass


def _emit(tree: Any, rng: random.Random) -> str:
    from re import _constants as c  # type: ignore[attr-defined]

    out: list[str] = []
    for op, arg in tree:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is c.ANY:
            out.append("x")
        elif op is c.IN:
            out.append(_from_set(arg, rng))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, sub = arg
            top = low + _REPEAT_EXTRA if high is c.MAXREPEAT else min(high, low + _REPEAT_EXTRA)
            out.extend(_emit(sub, rng) for _ in range(rng.randint(low, top)))
        elif op is c.SUBPATTERN:
            out.append(_emit(arg[-1], rng))
        elif op is c.ATOMIC_GROUP:
            out.append(_emit(arg, rng))
        elif op is c.BRANCH:
            out.append(_emit(rng.choice(arg[1]), rng))
        elif op is c.AT:
            continue  # ^ $ \b: positions, no characters
        else:  # backreferences, lookarounds, conditionals
            raise _Unsupported(str(op))
    return "".join(out)


def _from_set(items: list[tuple[Any, Any]], rng: random.Random) -> str:
    from re import _constants as c  # type: ignore[attr-defined]

    if items and items[0][0] is c.NEGATE:
        allowed = re.compile("[" + "".join(_set_source(items[1:])) + "]")
        for candidate in "aA0_- xZ9":
            if not allowed.match(candidate):
                return candidate
        raise _Unsupported("negated set")
    op, arg = rng.choice(items)
    if op is c.LITERAL:
        return chr(arg)
    if op is c.RANGE:
        return chr(rng.randint(arg[0], arg[1]))
    if op is c.CATEGORY:
        return {c.CATEGORY_DIGIT: "7", c.CATEGORY_SPACE: " ", c.CATEGORY_WORD: "k"}.get(arg, "x")
    raise _Unsupported(str(op))


def _set_source(items: list[tuple[Any, Any]]) -> list[str]:
    from re import _constants as c  # type: ignore[attr-defined]

    parts = []
    for op, arg in items:
        if op is c.LITERAL:
            parts.append(re.escape(chr(arg)))
        elif op is c.RANGE:
            parts.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
        elif op is c.CATEGORY:
            parts.append(
                {c.CATEGORY_DIGIT: r"\d", c.CATEGORY_SPACE: r"\s", c.CATEGORY_WORD: r"\w"}.get(
                    arg, ""
                )
            )
        else:
            raise _Unsupported(str(op))
    return parts
