"""`dealscout review`, `export --approved` and `dealscout group` tried from outside: odd but
legal model answers shown, saved and exported; hostile requests; odd regroup arguments."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from photo_factory import make_jpeg

from dealscout_cli.models import Identification, PriceEstimate
from dealscout_cli.review.app import EXPORT_FORMATS, ReviewApp
from dealscout_cli.scan import scan
from dealscout_cli.store import Store

PORT = 8765
EXPORT_URLS = "photo_base_url=https://x.example/&product_url=https://x.example/p/%7Bsku%7D"

ODD_ANSWERS: list[dict[str, Any]] = [
    {"title": "   Vintage mug   ", "price": {"low": 1e6, "suggested": 1e7, "high": 1e7}},
    {"title": "\x1b[2J\x00\x07Mug\x7f \u202eevil", "description": "a\x00b\x1fc\x7f\u202ed"},
    {"title": "Mug", "price": {"low": 0.1234567891, "suggested": 1.0000001, "high": 2.999999}},
    {"title": "Mug", "confidence": 0.0, "attributes": []},
    {"title": "Mug", "confidence": 1.0, "price": {"low": -0.0, "suggested": 0, "high": 0}},
]


def call(
    app: ReviewApp,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> tuple[int, bytes, dict[str, str]]:
    """One request through the ASGI app, the path as sent (no client tidies it)."""
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    head = {
        "host": f"127.0.0.1:{PORT}",
        "cookie": f"dealscout_review={app.token}",
        **(headers or {}),
    }
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode("latin-1"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.items()],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    return (
        start["status"],
        b"".join(m.get("body", b"") for m in sent[1:]),
        {k.decode(): v.decode() for k, v in start["headers"]},
    )


def add_listing(store: Store, photo: Path, answer: dict[str, Any]) -> int:
    store.enqueue(scan([photo]).items, now=time.time())
    lease = store.claim_next_job("test", now=time.time(), lease_seconds=60)
    assert lease is not None
    ident = Identification.model_validate(
        {
            "description": "A mug.",
            "category": "Home",
            "condition": "good",
            "confidence": 0.5,
            "attributes": [{"name": "Colour", "value": "red"}],
        }
        | {k: v for k, v in answer.items() if k != "price"}
    )
    price = None
    if "price" in answer:
        price = PriceEstimate.model_validate(
            {"currency": "USD", "rationale": "seen"} | answer["price"]
        )
    store.complete(
        lease,
        now=time.time(),
        run_id=None,
        identification=ident,
        price=price,
        prompt_version="test",
        vision_model="gemini-test",
        pricing_model=None,
        offline=False,
    )
    return lease.item_id


@pytest.fixture
def odd_db(tmp_path: Path) -> tuple[Path, list[int]]:
    db = tmp_path / "odd.db"
    ids = []
    with Store.open(db) as store:
        for n, answer in enumerate(ODD_ANSWERS):
            photo = make_jpeg(tmp_path / "photos" / f"p{n}" / "a.jpg", kind="mug", seed=n)
            ids.append(add_listing(store, photo, answer))
    return db, ids


def open_app(db: Path) -> tuple[Store, ReviewApp]:
    store = Store.open(db)
    return store, ReviewApp(store, port=PORT)


def form_post(app: ReviewApp, path: str, fields: dict[str, str]) -> tuple[int, bytes]:
    body = urlencode({"csrf": app.csrf, **fields}).encode()
    status, page, _ = call(
        app,
        "POST",
        path,
        body,
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "origin": f"http://127.0.0.1:{PORT}",
        },
    )
    return status, page


def test_every_page_of_odd_answers_opens(odd_db: tuple[Path, list[int]]) -> None:
    db, ids = odd_db
    store, app = open_app(db)
    with store:
        paths = ["/", "/export", "/progress", "/progress/part", "/groups"]
        paths += [f"/item/{i}" for i in ids]
        for path in paths:
            status, page, _ = call(app, "GET", path)
            assert status == 200, (path, page[:500])
            assert b"\x00" not in page and b"\x1b" not in page, path
        for decision in ids:
            assert form_post(app, f"/item/{decision}/approve", {})[0] == 303
        for fmt in EXPORT_FORMATS:
            status, page, _ = call(app, "GET", "/export/file", query=f"format={fmt}&{EXPORT_URLS}")
            assert status == 200, (fmt, page[:500])


def test_saving_an_untouched_form_keeps_a_many_decimal_model_price(
    odd_db: tuple[Path, list[int]],
) -> None:
    """The form shows 0.1234567891 as 0.12: saving only a new title must neither change
    the model's price nor call it the seller's (its rationale kept)."""
    from dealscout_cli.review.forms import form_values

    db, ids = odd_db
    store, app = open_app(db)
    with store:
        item = ids[2]
        values = form_values(store.revisions(item)[-1].fields)
        status, _ = form_post(app, f"/item/{item}/save", values | {"title": "Red mug"})
        assert status == 303
        latest = store.revisions(item)[-1].fields
    assert latest["identification"]["title"] == "Red mug"
    assert latest["price"] == {
        "low": 0.1234567891,
        "suggested": 1.0000001,
        "high": 2.999999,
        "currency": "USD",
        "rationale": "seen",
    }


def test_a_bad_price_or_title_the_seller_types_is_a_400_naming_the_field(
    odd_db: tuple[Path, list[int]],
) -> None:
    db, ids = odd_db
    store, app = open_app(db)
    base = {
        "title": "Red mug",
        "description": "A mug.",
        "category": "Home",
        "condition": "good",
        "price_low": "1",
        "price_suggested": "2",
        "price_high": "3",
        "currency": "USD",
    }
    bad = [
        ("price_low", "Infinity"),
        ("price_low", "nan"),
        ("price_suggested", "-inf"),
        ("price_low", "-5"),
        ("price_high", "1e400"),
        ("price_high", "1e308"),
        ("price_low", "0x10"),
        ("title", "x" * 300),
        ("title", "     "),
        ("title", "\x00\x01\x7f\u202e"),
        ("description", "x" * 5000),
        ("condition", "mint"),
    ]
    with store:
        before = len(store.revisions(ids[0]))
        for name, value in bad:
            status, page = form_post(app, f"/item/{ids[0]}/save", base | {name: value})
            assert status == 400, (name, value)
            assert f'id="error-{name}"'.encode() in page, (name, value)
        assert len(store.revisions(ids[0])) == before
        status, _ = form_post(app, f"/item/{ids[0]}/save", base | {"title": "Red\nmug\r\nbig"})
        assert status == 303
        assert store.revisions(ids[0])[-1].fields["identification"]["title"] == "Red mug big"


def test_a_negative_zero_price_exports_as_a_number(odd_db: tuple[Path, list[int]]) -> None:
    """A model's -0.0 is a price of 0.00, not the text '-0.00 a spreadsheet keeps as text."""
    db, ids = odd_db
    store, app = open_app(db)
    with store:
        for item in ids:
            assert form_post(app, f"/item/{item}/approve", {})[0] == 303
        status, csv_bytes, _ = call(app, "GET", "/export/file", query="format=csv")
    assert status == 200
    assert b"-0.00" not in csv_bytes
    assert b'"0.00","0.00","0.00"' in csv_bytes


def test_an_ask_again_note_is_stored_without_control_characters(
    odd_db: tuple[Path, list[int]],
) -> None:
    """The seller's note goes into the prompt, the item page and `listings --item`: the
    same cleaning as a model's one-line answer (no NUL, ESC, U+202E); only controls is none."""
    db, ids = odd_db
    store, app = open_app(db)
    note = "%00%ff%1b[2J%e2%80%aeit%7f is%0a%09a Staub"
    with store:
        status, _ = form_post_raw(app, f"/item/{ids[0]}/ask", f"csrf={app.csrf}&note={note}")
        assert status == 303
        stored = store.review_of(ids[0])
        assert stored is not None
        assert stored["note"] == "\ufffd[2Jit is a Staub"
        status, page, _ = call(app, "GET", f"/item/{ids[0]}")
        assert status == 200
        assert b"\x00" not in page and b"\x1b" not in page and "\u202e".encode() not in page
        status, page = form_post_raw(app, f"/item/{ids[1]}/ask", f"csrf={app.csrf}&note=%00%1b%7f")
        assert status == 400 and b"say what the model got wrong" in page


def form_post_raw(app: ReviewApp, path: str, body: str) -> tuple[int, bytes]:
    headers = {"origin": f"http://127.0.0.1:{PORT}"}
    status, page, _ = call(app, "POST", path, body.encode("latin-1"), headers=headers)
    return status, page


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--merge", "99999999999999999999999,1", "no group 99999999999999999999999"),
        ("--split", "99999999999999999999999:2", "no group 99999999999999999999999"),
        ("--split", "1:\u00b2", "no group has a photo of that name"),
        ("--split", "\u00b2:1", "no group has a photo of that name"),
        ("--merge", "0,1", "no group 0"),
        ("--merge", "-1,1", "no group -1"),
        ("--merge", "1,1", "at least two different groups"),
        ("--merge", "a,b", "takes group numbers"),
        ("--split", "1:0", "split it before photo 2 to"),
    ],
)
def test_group_with_odd_numbers_is_one_line_not_a_traceback(
    tmp_path: Path, flag: str, value: str, said: str
) -> None:
    for n, kind in enumerate(("mug", "mug", "book")):
        make_jpeg(tmp_path / "shoot" / f"IMG_{n:04d}.jpg", kind=kind, seed=n)
    db = str(tmp_path / "a.db")
    dealscout("group", str(tmp_path / "shoot"), "--db", db, "--offline")
    result = dealscout("group", "--db", db, flag, value, check=False)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr


def dealscout(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "dealscout_cli.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=check,
    )


GARBAGE_TIMES = [
    "0000:00:00 00:00:00",
    "9999:12:31 23:59:59",
    "2024:13:45 99:99:99",
    "\uff12\uff10\uff12\uff14:01:01 10:00:00",
    "\u00e9t\u00e9",
    "    :  :     :  :  ",
    "2024:01:01 10:00:00\x00junk",
    "1:1:1 1:1:1",
]


def test_group_auto_over_a_folder_of_odd_files_groups_every_photo(tmp_path: Path) -> None:
    """Garbage EXIF times, no EXIF, a text file named .jpg: every photo is in one group, and
    an empty file, in none, is named on stderr rather than left out without a word."""
    from photo_factory import product_image
    from PIL import Image

    shoot = tmp_path / "shoot"
    shoot.mkdir()
    for n, taken in enumerate(GARBAGE_TIMES):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = taken  # DateTimeOriginal
        exif[306] = taken  # DateTime
        image = product_image(("mug", "book")[n % 2], (320, 240), seed=n)
        image.save(shoot / f"IMG_{n:04d}.jpg", "JPEG", exif=exif)
    make_jpeg(shoot / "no-exif.jpg", kind="lamp", seed=20)
    (shoot / "zero.jpg").write_bytes(b"")
    (shoot / "text.jpg").write_bytes(b"hello, not a jpeg")
    db = str(tmp_path / "a.db")
    result = dealscout("group", str(shoot), "--db", db, "--offline")
    groups = json.loads(dealscout("group", "--db", db, "--json").stdout)
    grouped = sorted(name for row in groups for name in row["photos"])
    assert grouped == sorted(path.name for path in shoot.iterdir() if path.name != "zero.jpg")
    # the one file in no group is named, as `snap` names it
    assert f"skipped {shoot / 'zero.jpg'}: empty file (0 bytes)" in result.stderr
