"""What the emulated model says: a seeded answer derived from the request's images and text.

The catalogue entry is picked by the hash of the images (or of the text, for a
text-only request that names no catalogue item), so the same request always gets
the same answer under the same seed, and different photos get different items.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dealscout_cli.tokens import DEFAULT_RULE, text_tokens

from .catalogue import CATALOGUE, ImageFacts, find_named_item
from .schema import Subject, generate, normalize_schema, plain_text_answer
from .wire import ModelRequest

# Used when JSON is asked for without a schema: the shape of a listing identification.
DEFAULT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "brand": {"type": "string"},
        "model": {"type": "string"},
        "category": {"type": "string"},
        "description": {"type": "string"},
        "price": {
            "type": "object",
            "properties": {
                "low": {"type": "number"},
                "suggested": {"type": "number"},
                "high": {"type": "number"},
                "currency": {"type": "string"},
            },
        },
    },
}


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    output_tokens: int


def subject_for(request: ModelRequest, facts: list[ImageFacts], seed: int) -> Subject:
    """The item this request is about, and the RNG every other choice is drawn from."""
    text = "\n".join(request.texts)
    digest = hashlib.sha256(f"{seed}\0".encode())
    for sha in request.image_hashes:
        digest.update(sha.encode())
    item_digest = digest.copy()
    digest.update(text.encode("utf-8", "replace"))
    rng = random.Random(digest.digest())
    named = None if request.images else find_named_item(text)
    if named is not None:
        item = named
    else:
        pick = item_digest if request.images else digest
        item = CATALOGUE[int.from_bytes(pick.digest()[:8], "big") % len(CATALOGUE)]
    return Subject(item=item, images=facts, rng=rng)


def answer(
    request: ModelRequest, subject: Subject, group_truth: Mapping[str, str] | None = None
) -> Answer:
    """The model's full text, then truncated to maxOutputTokens like the real model."""
    prompt_schema = _schema_in_prompt(request) if request.google_search else None
    if is_boundary_question(request):
        text = json.dumps(boundary_answer(request, subject, group_truth or {}))
    elif request.response_schema is not None:
        text = json.dumps(generate(normalize_schema(request.response_schema), subject))
    elif prompt_schema is not None:  # JSON asked for in words (tools rule out JSON mode)
        text = (
            "```json\n" + json.dumps(generate(normalize_schema(prompt_schema), subject)) + "\n```"
        )
    elif request.response_mime_type == "application/json":
        text = json.dumps(generate(DEFAULT_JSON_SCHEMA, subject))
    else:
        text = plain_text_answer(subject)
    limit = request.max_output_tokens
    if limit is not None and text_tokens(text) > limit:
        text = text[: limit * DEFAULT_RULE.chars_per_token]
        return Answer(text, "MAX_TOKENS", text_tokens(text))
    return Answer(text, "STOP", text_tokens(text))


_FENCED_JSON = re.compile(r"```json\s*\n(\{.*?\})\s*\n```", re.DOTALL)


def _schema_in_prompt(request: ModelRequest) -> dict[str, Any] | None:
    """A JSON Schema quoted in a ```json block of the prompt, as models follow one."""
    for text in request.texts:
        for found in _FENCED_JSON.findall(text):
            try:
                schema = json.loads(found)
            except ValueError:
                continue
            if isinstance(schema, dict) and "properties" in schema:
                return schema
    return None


def truncated(full: Answer) -> Answer:
    """The MAX_TOKENS fault: the answer cut off part-way, JSON left open."""
    cut = full.text[: max(1, len(full.text) * 3 // 5)]
    return Answer(cut, "MAX_TOKENS", text_tokens(cut))


def malformed(full: Answer) -> Answer:
    """The malformed fault: chatty preamble and single quotes, which no JSON parser accepts."""
    text = "Sure! Here is the listing:\n" + full.text.replace('"', "'")
    return Answer(text, "STOP", text_tokens(text))


# Answers a model may give that fit the schema's letter and break its spirit: each one
# (field, value) is applied where the answer has that field. JSON out of `json.dumps`, so
# an infinite float is written as the bare `Infinity` a lenient encoder produces.
ODDITIES: tuple[tuple[str, Any], ...] = (
    ("title", "TV "),  # three characters, two after trimming
    ("title", "      "),
    ("title", "\x1b[2J\x1b[5mVintage mug"),  # clear screen, blink
    ("title", '=HYPERLINK("http://evil.example/","Vintage mug")'),
    ("description", "Nice.\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ \u202eevil"),
    ("brand", "+cmd|' /C calc'!A0"),
    ("high", float("inf")),
    ("suggested", 1e20),
    ("low", -0.0),
    ("currency", "usd "),
    ("rationale", "@SUM(1+1)*cmd|' /C calc'!A0"),
)


def odd(full: Answer, rng: random.Random) -> Answer:
    """The odd-answer fault: one of ODDITIES that this answer has a field for."""
    try:
        body = json.loads(full.text)
    except ValueError:
        return full
    if not isinstance(body, dict):
        return full
    fitting = [(field, value) for field, value in ODDITIES if field in body]
    if not fitting:
        return full
    field, value = fitting[rng.randrange(len(fitting))]
    body[field] = value
    if field == "suggested" and "high" in body:
        body["high"] = value * 10  # still low <= suggested <= high
    text = json.dumps(body)
    return Answer(text, full.finish_reason, text_tokens(text))


def grounding_metadata(subject: Subject) -> dict[str, Any]:
    """What a google_search-grounded answer carries: the queries run and the pages used."""
    name = subject.item.name
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40] or "item"
    queries = [f"{name} used price", f"{name} sold listings"]
    chunks = [
        {"web": {"uri": f"https://example.com/{site}/{slug}", "title": f"{site}.example.com"}}
        for site in ("market", "resale", "price-guide")
    ]
    return {
        "webSearchQueries": queries,
        "groundingChunks": chunks,
        "groundingSupports": [
            {"segment": {"startIndex": 0, "endIndex": 1}, "groundingChunkIndices": [0, 1]}
        ],
        "searchEntryPoint": {"renderedContent": "<div>search suggestions</div>"},
    }


def is_boundary_question(request: ModelRequest) -> bool:
    """`--confirm-groups`: pairs of photos, each answered same product or not."""
    schema = request.response_schema or {}
    items = schema.get("properties", {}).get("answers", {}).get("items", {})
    if "$ref" in items:  # pydantic's JSON Schema keeps the item in $defs
        name = str(items["$ref"]).rsplit("/", 1)[-1]
        items = schema.get("$defs", {}).get(name, {})
    return "same_product" in items.get("properties", {})


def boundary_answer(
    request: ModelRequest, subject: Subject, truth: Mapping[str, str]
) -> dict[str, Any]:
    """Images come two per pair: the same product when the truth says so, or, for photos it
    does not know, when their dominant colours agree."""
    hashes = request.image_hashes
    facts = subject.images
    pairs = []
    for number, start in enumerate(range(0, len(hashes) - 1, 2), start=1):
        before, after = hashes[start], hashes[start + 1]
        if before in truth and after in truth:
            same = truth[before] == truth[after]
        elif start + 1 < len(facts):
            same = bool(set(facts[start].colours) & set(facts[start + 1].colours))
        else:
            same = True
        pairs.append({"pair": number, "same_product": same})
    return {"answers": pairs}
