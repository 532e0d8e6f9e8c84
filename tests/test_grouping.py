"""`--group auto`: a flat folder of a shoot split into products, the groups stored with why,
corrected with `dealscout group --merge/--split`, and never regrouped by a rerun."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from photo_factory import make_jpeg
from shoot_factory import IMAGE_DESCRIPTION, _label_shot, _product, _product_shot, _save, make_shoot
from typer.testing import CliRunner

from dealscout_cli.cli import app
from dealscout_cli.scan import item_key, scan


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def groups(db: Path) -> list[dict[str, Any]]:
    result = run("group", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def truth_of(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return str(image.getexif().get(IMAGE_DESCRIPTION))


@pytest.fixture
def shoot(tmp_path: Path) -> Path:
    folder = tmp_path / "shoot"
    make_shoot(folder, products=8, seed=3)
    return folder


def test_auto_groups_a_flat_shoot_into_products(shoot: Path) -> None:
    found = scan([shoot], group="auto")
    made = {photo.path.name: n for n, item in enumerate(found.items) for photo in item.photos}
    truth = {path.name: truth_of(path) for path in shoot.iterdir()}
    assert sorted(made) == sorted(truth)  # every photo in exactly one item
    # Pairs of photos put together that belong together, and the other way round.
    names = sorted(truth)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    agree = sum((made[a] == made[b]) == (truth[a] == truth[b]) for a, b in pairs)
    assert agree / len(pairs) > 0.95
    assert 6 <= len(found.items) <= 11  # 8 products


def _shot(folder: Path, name: str, product: Any, when: datetime, *, label: bool = False) -> None:
    import random

    rng = random.Random(name)
    image = _label_shot(rng, product) if label else _product_shot(rng, product, (236, 234, 228))
    _save(image, folder / name, when, f"product-{product.number:02d}")


def test_capture_time_orders_photos_whatever_their_names(tmp_path: Path) -> None:
    import random

    rng = random.Random(5)
    red, blue = _product(rng, 1), _product(rng, 2)
    start = datetime(2026, 5, 1, 9, 0, 0)
    # Renamed files: the names interleave the two products, the clock does not.
    for n, (name, product) in enumerate(
        [("b.jpg", red), ("d.jpg", red), ("a.jpg", red), ("c.jpg", blue), ("e.jpg", blue)]
    ):
        _shot(tmp_path, name, product, start + timedelta(seconds=4 * n + (90 if n >= 3 else 0)))
    found = scan([tmp_path], group="auto")
    assert sorted(sorted(p.path.name for p in item.photos) for item in found.items) == [
        ["a.jpg", "b.jpg", "d.jpg"],
        ["c.jpg", "e.jpg"],
    ]


def test_a_label_close_up_goes_with_the_product_shot_just_before_it(tmp_path: Path) -> None:
    import random

    rng = random.Random(9)
    first, second = _product(rng, 1), _product(rng, 2)
    start = datetime(2026, 5, 1, 9, 0, 0)
    _shot(tmp_path, "IMG_0001.jpg", first, start)
    _shot(tmp_path, "IMG_0002.jpg", first, start + timedelta(seconds=5))
    _shot(tmp_path, "IMG_0003.jpg", first, start + timedelta(seconds=9), label=True)
    _shot(tmp_path, "IMG_0004.jpg", second, start + timedelta(seconds=70))
    _shot(tmp_path, "IMG_0005.jpg", second, start + timedelta(seconds=75))
    found = scan([tmp_path], group="auto")
    assert sorted(sorted(p.path.name for p in item.photos) for item in found.items) == [
        ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"],
        ["IMG_0004.jpg", "IMG_0005.jpg"],
    ]


def test_a_label_shot_after_a_pause_goes_with_the_product_its_rim_shows(tmp_path: Path) -> None:
    import random

    rng = random.Random(9)
    first, second = _product(rng, 1), _product(rng, 2)
    start = datetime(2026, 5, 1, 9, 0, 0)
    for n, seconds in enumerate((0, 5, 10)):
        _shot(tmp_path, f"IMG_000{n + 1}.jpg", first, start + timedelta(seconds=seconds))
    # The seller fetched the box and shot its label 80 s later, then the next product a
    # minute after that: nearer in time to the second product, but the first one's colour
    # shows around the label.
    _shot(tmp_path, "IMG_0004.jpg", first, start + timedelta(seconds=90), label=True)
    for n, seconds in enumerate((150, 155, 160)):
        _shot(tmp_path, f"IMG_000{n + 5}.jpg", second, start + timedelta(seconds=seconds))
    found = scan([tmp_path], group="auto")
    assert sorted(sorted(p.path.name for p in item.photos) for item in found.items) == [
        ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg", "IMG_0004.jpg"],
        ["IMG_0005.jpg", "IMG_0006.jpg", "IMG_0007.jpg"],
    ]


def test_photos_without_exif_or_unreadable_still_end_in_one_item_each(tmp_path: Path) -> None:
    make_jpeg(tmp_path / "IMG_0001.jpg", kind="mug", seed=1)
    make_jpeg(tmp_path / "IMG_0002.jpg", kind="mug", seed=2)
    (tmp_path / "IMG_0003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    make_jpeg(tmp_path / "IMG_0004.heic.jpg", kind="lamp", seed=3)
    for n, path in enumerate(sorted(tmp_path.iterdir())):  # no EXIF time: the file time
        os.utime(path, (1_700_000_000 + n * 3, 1_700_000_000 + n * 3))
    found = scan([tmp_path], group="auto")
    names = sorted(p.path.name for item in found.items for p in item.photos)
    assert names == sorted(path.name for path in tmp_path.iterdir())


def test_snap_says_how_it_grouped_before_spending(shoot: Path, db: Path) -> None:
    result = run("snap", str(shoot), "--group", "auto", "--db", str(db), "--offline")
    assert result.exit_code == 0, result.output
    photos = len(list(shoot.iterdir()))
    line = next(line for line in result.stderr.splitlines() if line.startswith("grouped:"))
    assert f"{photos} photos → {len(groups(db))} items;" in line
    assert "boundaries unsure" in line
    # The line comes before the run's own output, and the groups say why they start.
    assert result.stderr.index("grouped:") < result.stderr.index("found ")
    assert {g["why"] for g in groups(db)} <= {
        "first photo",
        "time gap",
        "visual change",
        "time gap and visual change",
    }


def test_estimate_shows_the_grouping_and_spends_nothing(shoot: Path, db: Path) -> None:
    result = run("estimate", str(shoot), "--group", "auto", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    estimate = json.loads(result.stdout)
    assert estimate["grouping"].startswith(f"{len(list(shoot.iterdir()))} photos → ")
    assert f"→ {estimate['items']} items;" in estimate["grouping"]
    assert not db.exists()  # estimate only reads


def test_group_then_merge_makes_exactly_one_new_item(shoot: Path, db: Path) -> None:
    result = run("group", str(shoot), "--db", str(db))
    assert result.exit_code == 0, result.output
    before = groups(db)
    keys_before = dict(rows(db, "SELECT id, key FROM items"))
    first, second = before[0], before[1]
    result = run("group", "--db", str(db), "--merge", f"{first['item']},{second['item']}")
    assert result.exit_code == 0, result.output
    after = groups(db)
    assert len(after) == len(before) - 1
    new = [g for g in after if g["item"] not in keys_before]
    assert len(new) == 1 and new[0]["why"] == "merged"
    assert new[0]["photos"] == first["photos"] + second["photos"]
    keys_after = dict(rows(db, "SELECT id, key FROM items"))
    # Nothing else changed: every other item keeps its id and key.
    untouched = {i: k for i, k in keys_before.items() if i not in (first["item"], second["item"])}
    assert {i: keys_after[i] for i in untouched} == untouched
    assert len(keys_after) == len(untouched) + 1
    shas = [
        s for (s,) in rows(db, "SELECT sha256 FROM photos WHERE item_id = ?", (new[0]["item"],))
    ]
    assert keys_after[new[0]["item"]] == item_key(shas)
    # ...and a rerun of the same folder regroups none of it.
    result = run("group", str(shoot), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert groups(db) == after
    assert dict(rows(db, "SELECT id, key FROM items")) == keys_after


def test_split_by_number_or_by_photo_name(shoot: Path, db: Path) -> None:
    run("group", str(shoot), "--db", str(db))
    big = next(g for g in groups(db) if len(g["photos"]) >= 3)
    result = run("group", "--db", str(db), "--split", f"{big['item']}:2")
    assert result.exit_code == 0, result.output
    parts = [g for g in groups(db) if g["photos"][0] in big["photos"]]
    assert [g["photos"] for g in parts] == [big["photos"][:1], big["photos"][1:]]
    assert all(g["why"] == "split" for g in parts)
    second = parts[1]
    result = run("group", "--db", str(db), "--split", second["photos"][1])
    assert result.exit_code == 0, result.output
    assert [g["photos"] for g in groups(db) if g["photos"][0] in big["photos"]] == [
        big["photos"][:1],
        big["photos"][1:2],
        big["photos"][2:],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--merge", "1"), "at least two different groups"),
        (("--merge", "1,1"), "at least two different groups"),
        (("--merge", "1,999"), "no group 999"),
        (("--merge", "one,two"), "--merge takes group numbers"),
        (("--split", "1:1"), "split it before photo 2"),
        (("--split", "1:99"), "split it before photo 2"),
        (("--split", "nosuch.jpg"), "no group has a photo of that name"),
    ],
)
def test_regrouping_mistakes_are_usage_errors(
    shoot: Path, db: Path, args: tuple[str, ...], message: str
) -> None:
    run("group", str(shoot), "--db", str(db))
    first = groups(db)[0]
    if len(first["photos"]) < 2:
        pytest.fail("the first group of this shoot should have several photos")
    before = groups(db)
    result = run("group", "--db", str(db), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert groups(db) == before


def test_a_done_group_is_not_regrouped(shoot: Path, db: Path) -> None:
    run("snap", str(shoot), "--group", "auto", "--db", str(db), "--offline")
    done = groups(db)
    result = run("group", "--db", str(db), "--merge", f"{done[0]['item']},{done[1]['item']}")
    assert result.exit_code == 2
    assert "is done" in result.stderr
    assert groups(db) == done


def test_rerun_of_snap_makes_no_new_items_or_calls(shoot: Path, db: Path) -> None:
    run("snap", str(shoot), "--group", "auto", "--db", str(db), "--offline")
    calls = rows(db, "SELECT COUNT(*) FROM calls")
    items = rows(db, "SELECT id, key FROM items ORDER BY id")
    result = run("snap", str(shoot), "--group", "auto", "--db", str(db), "--offline")
    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT id, key FROM items ORDER BY id") == items
    assert rows(db, "SELECT COUNT(*) FROM calls") == calls
    assert "items kept as grouped before" in result.stderr


def test_new_photos_beside_grouped_ones_make_new_items_only(
    shoot: Path, db: Path, tmp_path: Path
) -> None:
    run("group", str(shoot), "--db", str(db))
    before = groups(db)
    later = tmp_path / "later"
    make_shoot(later, products=2, seed=11)
    for path in later.iterdir():
        path.rename(shoot / f"LATER_{path.name}")
    run("group", str(shoot), "--db", str(db))
    after = groups(db)
    assert after[: len(before)] == before
    assert all(g["photos"][0].startswith("LATER_") for g in after[len(before) :])


def test_confirm_groups_without_auto_is_refused(shoot: Path, db: Path) -> None:
    result = run("snap", str(shoot), "--confirm-groups", "--db", str(db), "--offline")
    assert result.exit_code == 2
    assert "--group auto" in result.stderr


def test_confirm_groups_asks_the_model_once_and_remembers(shoot: Path, tmp_path: Path) -> None:
    from dealscout_cli.config import Settings
    from dealscout_cli.emulator import Emulator, EmulatorConfig
    from dealscout_cli.emulator.catalogue import shoot_truth
    from dealscout_cli.grouping import confirm_groups
    from dealscout_cli.store import Store

    truth = {path.name: truth_of(path) for path in shoot.iterdir()}
    found = scan([shoot], group="auto")
    unsure = found.groupings[0].unsure
    assert unsure, "this shoot should have boundaries the local signals are unsure of"
    db = tmp_path / "confirm.db"
    with Emulator(EmulatorConfig(seed=1, group_truth=shoot_truth(shoot))) as emulator:
        settings = Settings(db_path=db, base_url=emulator.url, api_key="test-key")
        with Store.open(db) as store:
            done = confirm_groups(found, store, settings)
            again = confirm_groups(scan([shoot], group="auto"), store, settings)
        requests = emulator.stats().requests
    assert (done.asked, done.cached, done.calls) == (len(unsure), 0, 1)
    assert (again.asked, again.cached, again.calls) == (len(unsure), len(unsure), 0)
    assert requests == 1
    # One call, recorded like every call: stage "group", no item, priced.
    calls = rows(db, "SELECT stage, item_id, outcome, cost_micro_usd > 0 FROM calls")
    assert calls == [("group", None, "ok", 1)]
    # Every boundary the model was asked about now matches the truth.
    grouping = found.groupings[0]
    for boundary in grouping.boundaries:
        if boundary.index in {b.index for b in unsure}:
            before = grouping.photos[boundary.index - 1].path.name
            after = grouping.photos[boundary.index].path.name
            assert boundary.split == (truth[before] != truth[after])
            assert not boundary.unsure


def test_auto_keeps_product_folders_whole_and_a_lone_photo_alone(tmp_path: Path) -> None:
    import random

    rng = random.Random(2)
    product = _product(rng, 1)
    when = datetime(2026, 5, 1, 9, 0, 0)
    # Subfolders are products already (as with --group folder), even shot far apart.
    (tmp_path / "sneaker").mkdir()
    _shot(tmp_path / "sneaker", "front.jpg", product, when)
    _shot(tmp_path / "sneaker", "back.jpg", _product(rng, 2), when + timedelta(hours=2))
    _shot(tmp_path, "IMG_0001.jpg", _product(rng, 3), when)  # the only loose photo
    found = scan([tmp_path], group="auto")
    assert sorted(sorted(p.path.name for p in item.photos) for item in found.items) == [
        ["IMG_0001.jpg"],
        ["back.jpg", "front.jpg"],
    ]
    assert [len(g.photos) for g in found.groupings] == [1]


def test_a_burst_of_the_same_second_stays_one_item(tmp_path: Path) -> None:
    import random

    rng = random.Random(4)
    product = _product(rng, 1)
    when = datetime(2026, 5, 1, 9, 0, 0)
    for n in range(4):  # four shots stamped the same second (a burst): gap 0
        _shot(tmp_path, f"IMG_000{n}.jpg", product, when)
    _shot(tmp_path, "IMG_0009.jpg", _product(rng, 2), when + timedelta(seconds=80))
    found = scan([tmp_path], group="auto")
    assert sorted(len(item.photos) for item in found.items) == [1, 4]


def _lit(product: Any, cast: float, path: Path) -> Path:
    """The product on a grey card under a warm (+) or cool (-) light, nothing else changed."""
    from PIL import Image
    from shoot_factory import _object

    image = Image.new("RGB", (640, 480), (190, 190, 186))
    shape = _object(product, 300)
    image.paste(shape, (170, 90), shape)
    r, g, b = image.split()
    r = r.point(lambda v: min(255, round(v * (1 + cast))))
    b = b.point(lambda v: min(255, round(v * (1 - cast))))
    Image.merge("RGB", (r, g, b)).save(path, quality=90)
    return path


def test_a_warm_and_a_cool_light_do_not_make_one_product_look_like_two(tmp_path: Path) -> None:
    import random

    from dealscout_cli.grouping import distance, signature

    products = [_product(random.Random(seed), 1) for seed in (1, 4, 5, 9)]
    for n, product in enumerate(products):
        warm = signature(_lit(product, 0.12, tmp_path / f"warm{n}.jpg"), 0)
        cool = signature(_lit(product, -0.12, tmp_path / f"cool{n}.jpg"), 0)
        # The backdrop carries the same cast: divided out, the product's colours agree.
        assert distance(warm, cool) < 0.25
        other = signature(_lit(products[n - 1], 0.12, tmp_path / f"other{n}.jpg"), 0)
        assert distance(warm, other) > 2 * distance(warm, cool)


def test_a_boundary_thumbnail_refuses_a_hostile_file_like_any_photo(tmp_path: Path) -> None:
    from photo_factory import make_png_bomb

    from dealscout_cli.errors import BadPhoto
    from dealscout_cli.grouping import thumbnail

    (tmp_path / "IMG_0001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for path in (tmp_path / "IMG_0001.jpg", make_png_bomb(tmp_path / "IMG_0002.png")):
        with pytest.raises(BadPhoto, match=path.name):
            thumbnail(path)


def test_a_boundary_thumbnail_shows_transparency_on_white(tmp_path: Path) -> None:
    from PIL import Image

    from dealscout_cli.grouping import QUESTION_SIDE, thumbnail

    path = tmp_path / "IMG_0001.png"
    Image.new("RGBA", (600, 300), (255, 0, 0, 0)).save(path)
    made = thumbnail(path)
    assert (made.width, made.height) == (QUESTION_SIDE, QUESTION_SIDE // 2)
    with Image.open(io.BytesIO(made.data)) as image:
        assert image.format == "JPEG" and not image.info.get("exif")
        assert image.convert("L").getextrema()[0] > 240  # white, not the hidden red or black


def test_a_file_snap_would_refuse_is_placed_by_time_alone(tmp_path: Path) -> None:
    from PIL import Image

    from dealscout_cli.grouping import signature

    make_jpeg(tmp_path / "IMG_0001.jpg", kind="mug", seed=1)
    Image.new("RGB", (400, 300), (200, 30, 30)).save(tmp_path / "IMG_0002.jpg", "BMP")
    assert not signature(tmp_path / "IMG_0001.jpg", 0).blind
    assert signature(tmp_path / "IMG_0002.jpg", 0).blind  # a BMP: "not an image" to snap
