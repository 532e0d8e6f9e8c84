"""The review app's Groups page, in a real Chromium: the groups `--group auto` made as rows
of thumbnails, merged and split by clicking, with the same store functions (and so the same
items and keys) as `dealscout group --merge/--split`.

Also the store's side of it: splitting before a photo, the one rule for what can be
regrouped, and a regrouped group standing where its photos were taken.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shoot_factory import make_shoot
from test_review_browser import Review, screenshot_folder, start_review

from dealscout_cli.errors import UsageError
from dealscout_cli.review.app import GROUPS_A_PAGE
from dealscout_cli.store import Store
from dealscout_cli.store.groups import REGROUPABLE_STATES, regroup_refusal

pytestmark = pytest.mark.slow

HOSTILE_NAME = "<img src=x onerror=window.pwned=1><script>.jpg"


def dealscout(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "dealscout_cli.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=True,
    )


def cli_groups(db: Path) -> list[dict[str, Any]]:
    return json.loads(dealscout("group", "--db", str(db), "--json").stdout)  # type: ignore[no-any-return]


def items_and_keys(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, key FROM items ORDER BY id").fetchall()


def copy_db(source: Path, target: Path) -> Path:
    with Store.open(source) as store:  # a consistent copy, WAL included
        store.conn.execute("VACUUM INTO ?", [str(target)])
    return target


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once: a small shoot already listed (`snap --group auto --offline`: its groups
    are done), then another grouped by `dealscout group` (queued), one of whose photos has
    a file name that is HTML."""
    root = tmp_path_factory.mktemp("groups")
    db = root / "template.db"
    make_shoot(root / "a-listed", products=2, seed=5)
    dealscout("snap", str(root / "a-listed"), "--group", "auto", "--offline", "--db", str(db))
    shots = make_shoot(root / "b-shoot", products=4, seed=3, min_photos=3, max_photos=5)
    hostile = shots[4].name  # inside a group: its name is shown under its thumbnail
    (root / "b-shoot" / hostile).rename(root / "b-shoot" / HOSTILE_NAME)
    dealscout("group", str(root / "b-shoot"), "--db", str(db))
    return db


@pytest.fixture
def review(template_db: Path, tmp_path: Path) -> Review:
    return start_review(copy_db(template_db, tmp_path / "review.db"))


@pytest.fixture
def page(browser: Any, review: Review) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(review.url)
    page.locator("#nav-groups").click()  # the grid's header links to the Groups page
    page.wait_for_url("**/groups")
    yield page
    context.close()


def shown_groups(page: Any) -> list[dict[str, Any]]:
    """The groups as the page shows them: item, state, photo names, buttons."""
    return page.locator("#groups > li.group").evaluate_all(
        """groups => groups.map(g => ({
            item: Number(g.dataset.id),
            state: g.querySelector('.state').textContent,
            photos: Array.from(g.querySelectorAll('.photo-name')).map(n => n.textContent),
            splits: g.querySelectorAll('form.split').length,
            locked: (g.querySelector('.locked') || {}).textContent || null,
        }))"""
    )


def merge_buttons(page: Any) -> list[tuple[int, int]]:
    pairs = page.locator("form.merge").evaluate_all(
        "fs => fs.map(f => [Number(f.first.value), Number(f.second.value)])"
    )
    return [tuple(pair) for pair in pairs]


def queued(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for g in groups if g["state"] == "queued"]


def test_the_page_shows_the_groups_as_dealscout_group_lists_them(
    page: Any, review: Review, tmp_path: Path
) -> None:
    shown = shown_groups(page)
    listed = cli_groups(review.db)
    assert [(g["item"], g["photos"]) for g in shown] == [(g["item"], g["photos"]) for g in listed]
    assert {g["state"] for g in shown} == {"done", "queued"}
    assert page.locator("#groups .why").first.inner_text().startswith("starts: first photo")
    thumbs = page.locator("#groups img")
    assert thumbs.count() == sum(len(g["photos"]) for g in shown)
    page.locator(".unsure, .group").first.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('#groups img').naturalWidth > 0")
    shots = screenshot_folder(tmp_path)
    shots.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    page.screenshot(path=str(shots / "review-groups.png"))
    assert (shots / "review-groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merging_with_the_next_group_makes_the_item_dealscout_group_would(
    page: Any, review: Review, tmp_path: Path
) -> None:
    by_cli = copy_db(review.db, tmp_path / "cli.db")  # the same database, merged by the CLI
    first, second = queued(shown_groups(page))[:2]
    page.locator("form.merge").filter(
        has=page.locator(f"input[name=second][value='{second['item']}']")
    ).locator("button").click()
    page.wait_for_url("**/groups?page=1&done=merged*")
    dealscout("group", "--db", str(by_cli), "--merge", f"{first['item']},{second['item']}")
    assert items_and_keys(review.db) == items_and_keys(by_cli)  # the same one new item and key
    assert cli_groups(review.db) == cli_groups(by_cli)
    after = shown_groups(page)
    assert len(after) == len(cli_groups(by_cli))
    merged = next(g for g in after if g["photos"] == first["photos"] + second["photos"])
    assert merged["item"] not in (first["item"], second["item"])
    assert queued(after)[0] == merged  # it stands where its photos were taken
    # the item page and the grid know it; the merged groups are gone
    page.goto(f"{review.base}/item/{merged['item']}")
    assert page.locator("#photos img").count() == len(merged["photos"])
    page.goto(review.base + "/")
    ids = page.locator("#grid .card").evaluate_all("cs => cs.map(c => Number(c.dataset.id))")
    assert merged["item"] in ids and first["item"] not in ids and second["item"] not in ids


def test_splitting_before_a_photo_makes_two_items(
    page: Any, review: Review, tmp_path: Path
) -> None:
    by_cli = copy_db(review.db, tmp_path / "cli.db")
    group = next(g for g in queued(shown_groups(page)) if len(g["photos"]) >= 3)
    assert group["splits"] == len(group["photos"]) - 1  # every photo but the first
    page.locator(f"#group-{group['item']} .group-photo").nth(2).locator("button").click()
    page.wait_for_url("**/groups?page=1&done=split*")
    dealscout("group", "--db", str(by_cli), "--split", f"{group['item']}:3")
    assert items_and_keys(review.db) == items_and_keys(by_cli)
    after = shown_groups(page)
    parts = [g for g in queued(after) if g["photos"][0] in group["photos"]]
    assert [g["photos"] for g in parts] == [group["photos"][:2], group["photos"][2:]]
    assert group["item"] not in [g["item"] for g in after]
    for part in parts:
        assert page.goto(f"{review.base}/item/{part['item']}").status == 200
        assert page.locator("#photos img").count() == len(part["photos"])


def test_a_done_group_shows_why_and_no_buttons(page: Any, review: Review) -> None:
    done = [g for g in shown_groups(page) if g["state"] == "done"]
    assert done
    for group in done:
        assert group["splits"] == 0
        assert "only queued or failed groups can be regrouped" in group["locked"]
    # merge buttons only between two regroupable groups of one folder, each with the next
    waiting = queued(shown_groups(page))
    assert merge_buttons(page) == [
        (a["item"], b["item"]) for a, b in zip(waiting, waiting[1:], strict=False)
    ]
    # a hand-made form is refused by the store, as the CLI's --merge is
    before = cli_groups(review.db)
    csrf = page.locator("form.merge input[name=csrf]").first.input_value()
    first, second = done[-1]["item"], queued(shown_groups(page))[0]["item"]
    status, body = post(review, "/groups/merge", f"csrf={csrf}&first={first}&second={second}")
    assert status == 400 and b"only queued or failed groups can be regrouped" in body
    assert cli_groups(review.db) == before


def post(review: Review, path: str, body: str, **headers: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", review.port, timeout=10)
    conn.request(
        "POST",
        path,
        body,
        {
            "Cookie": f"dealscout_review={review.token}",
            "Content-Type": "application/x-www-form-urlencoded",
            **headers,
        },
    )
    reply = conn.getresponse()
    answer = reply.status, reply.read()
    conn.close()
    return answer


def test_a_regrouping_post_without_the_csrf_field_is_refused(page: Any, review: Review) -> None:
    before = cli_groups(review.db)
    first, second = merge_buttons(page)[0]
    photo = page.locator("form.split input[name=photo]").first.input_value()
    csrf = page.locator("form.merge input[name=csrf]").first.input_value()
    for path, body, headers in [
        ("/groups/merge", f"first={first}&second={second}", {}),
        ("/groups/split", f"photo={photo}", {}),
        ("/groups/merge", f"csrf=wrong&first={first}&second={second}", {}),
        ("/groups/split", f"csrf={csrf}&photo={photo}", {"Origin": "http://evil.example"}),
    ]:
        assert post(review, path, body, **headers)[0] == 403, (path, body, headers)
    assert cli_groups(review.db) == before
    # with the page's own field it goes through
    assert post(review, "/groups/split", f"csrf={csrf}&photo={photo}")[0] == 303
    assert len(cli_groups(review.db)) == len(before) + 1


def test_a_file_name_with_a_script_tag_is_shown_as_text(page: Any) -> None:
    names = page.locator(".photo-name").all_inner_texts()
    assert HOSTILE_NAME in names
    assert page.evaluate("window.pwned") is None
    assert page.locator("#groups script").count() == 0


def test_many_groups_come_a_page_at_a_time_and_merge_across_pages(
    browser: Any, tmp_path: Path
) -> None:
    from photo_factory import make_jpeg

    from dealscout_cli.scan import scan

    loose = tmp_path / "loose"
    for n in range(GROUPS_A_PAGE + 5):  # one item a photo (--group photo): any item is a group
        make_jpeg(loose / f"item{n:03d}.jpg", kind="mug", seed=n, size=(64, 48))
    db = tmp_path / "many.db"
    with Store.open(db) as store:
        store.enqueue(scan([loose]).items, now=time.time())
    review = start_review(db)
    context = browser.new_context(bypass_csp=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto(review.url)
        page.goto(review.base + "/groups")
        first_page = shown_groups(page)
        assert len(first_page) == GROUPS_A_PAGE
        assert "page 1 of 2" in page.locator("#count").inner_text()
        last, following = merge_buttons(page)[-1]  # the last group's next is on page 2
        assert last == first_page[-1]["item"]
        page.locator("form.merge button").last.click()
        page.wait_for_url("**/groups?page=1&done=merged*")  # where the merged group stands
        merged = shown_groups(page)[-1]
        assert merged["photos"] == [f"item{n:03d}.jpg" for n in (GROUPS_A_PAGE - 1, GROUPS_A_PAGE)]
        page.locator("#next-page").click()
        assert len(shown_groups(page)) == 4 and following not in [
            g["item"] for g in shown_groups(page)
        ]
        assert page.goto(review.base + "/groups?page=99").status == 200  # the last page
        assert "page 2 of 2" in page.locator("#count").inner_text()
    finally:
        context.close()


# ------------------------------------------------------------------ the store


def regroupable_store(tmp_path: Path) -> Store:
    shoot = tmp_path / "shoot"
    make_shoot(shoot, products=3, seed=3, min_photos=3, max_photos=4)
    dealscout("group", str(shoot), "--db", str(tmp_path / "s.db"))
    return Store.open(tmp_path / "s.db")


def test_split_before_a_photo_by_id_or_by_name_is_one_split(tmp_path: Path) -> None:
    with regroupable_store(tmp_path) as store:
        group = store.groups()[0]
        first, second = store.split_before_photo(group.photo_ids[1], now=time.time())
        parts = {g.item_id: g for g in store.groups()}
        assert parts[first].photos == group.photos[:1]
        assert parts[second].photos == group.photos[1:]
        assert parts[second].photo_ids == group.photo_ids[1:]
        again = store.split_before_photo_named(group.photos[2], now=time.time())
        assert [{g.item_id: g for g in store.groups()}[i].photos for i in again] == [
            group.photos[1:2],
            group.photos[2:],
        ]
        with pytest.raises(UsageError, match="nothing to split"):
            store.split_before_photo(group.photo_ids[0], now=time.time())  # a one-photo group
        with pytest.raises(UsageError, match="no photo 99999"):
            store.split_before_photo(99999, now=time.time())
        with pytest.raises(UsageError, match="no group has a photo of that name"):
            store.split_before_photo_named("<nosuch>.jpg", now=time.time())


def test_a_regrouped_group_stands_where_its_photos_were_taken(tmp_path: Path) -> None:
    with regroupable_store(tmp_path) as store:
        before = store.groups()
        merged = store.merge_groups([before[0].item_id, before[1].item_id], now=time.time())
        after = store.groups()
        assert [g.item_id for g in after] == [merged, *(g.item_id for g in before[2:])]
        first, second = store.split_before_photo(after[0].photo_ids[1], now=time.time())
        assert [g.item_id for g in store.groups()][:2] == [first, second]


def test_every_item_is_a_group_on_the_review_page(tmp_path: Path) -> None:
    from photo_factory import make_jpeg

    with regroupable_store(tmp_path) as store:
        grouped = store.groups()
        made = make_jpeg(tmp_path / "loose" / "kettle.jpg", kind="mug", seed=4)
        from dealscout_cli.scan import scan

        store.enqueue(scan([made]).items, now=time.time())
        every = store.groups(every_item=True)
        assert len(every) == len(grouped) + 1
        loose = next(g for g in every if g.photos == ("kettle.jpg",))
        assert loose.why == "" and not loose.unsure and loose.refusal is None


def test_only_queued_or_failed_groups_can_be_regrouped() -> None:
    assert REGROUPABLE_STATES == ("queued", "failed")
    for state in REGROUPABLE_STATES:
        assert regroup_refusal(state) is None
    for state in ("done", "running", "skipped"):
        refusal = regroup_refusal(state)
        assert refusal is not None and refusal.startswith(f"it is {state}: only queued")


def test_a_photo_name_in_two_folders_is_not_guessed(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    for seed, folder in enumerate(("monday", "tuesday")):  # an IMG_0002.jpg in each
        make_shoot(tmp_path / folder, products=2, seed=seed, min_photos=3, max_photos=3)
        dealscout("group", str(tmp_path / folder), "--db", str(db))
    before = cli_groups(db)
    holding = [g["item"] for g in before if "IMG_0002.jpg" in g["photos"]]
    assert len(holding) == 2
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    refused = subprocess.run(
        [sys.executable, "-m", "dealscout_cli.cli", "group", "--db", str(db)]
        + ["--split", "IMG_0002.jpg"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"groups {holding[0]} and {holding[1]} each have a photo named" in refused.stderr
    assert cli_groups(db) == before
