"""scan.py: every photo found lands in one item, a problem or a duplicate; keys follow content."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from photo_factory import make_jpeg

from dealscout_cli.errors import BadPhoto, ScanError
from dealscout_cli.images import prepare_photo
from dealscout_cli.scan import FoundItem, ScanResult, item_key, scan


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    return make_jpeg(path, size, seed=seed)


def labels(result: ScanResult) -> list[str]:
    return [item.label for item in result.items]


def reasons(result: ScanResult) -> dict[str, str]:
    return {Path(problem.path).name: problem.reason for problem in result.problems}


def only_item(result: ScanResult) -> FoundItem:
    assert len(result.items) == 1, result
    return result.items[0]


def accounted_paths(result: ScanResult) -> set[str]:
    found = {photo.display for item in result.items for photo in item.photos}
    return found | {problem.path for problem in result.problems} | {d[0] for d in result.duplicates}


# -- folders and grouping


def test_photo_grouping_makes_one_item_per_photo(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg", 1)
    photo(tmp_path / "lamp.png", 2)
    assert labels(scan([tmp_path])) == ["lamp", "mug"]


def test_folder_grouping_makes_one_item_per_leaf_folder(tmp_path: Path) -> None:
    photo(tmp_path / "01-mug" / "front.jpg", 1)
    photo(tmp_path / "01-mug" / "back.jpg", 2)
    photo(tmp_path / "02-lamp" / "side.jpg", 3)
    result = scan([tmp_path], group="folder")
    assert labels(result) == ["01-mug", "02-lamp"]
    assert [p.path.name for p in result.items[0].photos] == ["back.jpg", "front.jpg"]


def test_folder_with_photos_and_subfolders_is_its_own_item(tmp_path: Path) -> None:
    photo(tmp_path / "shelf" / "overview.jpg", 1)
    photo(tmp_path / "shelf" / "vase" / "vase.jpg", 2)
    assert labels(scan([tmp_path], group="folder")) == ["shelf", "vase"]


def test_loose_photos_in_the_folder_named_are_one_item_each(tmp_path: Path) -> None:
    # A shoot's top folder holds products: its loose photos were lumped into one item.
    for seed, name in enumerate(["vase.jpg", "zebra.png", "mug.jpg", "lamp/side.jpg"]):
        photo(tmp_path / name, seed)
    photo(tmp_path / "lamp" / "top.jpg", 9)
    result = scan([tmp_path], group="folder")
    assert labels(result) == ["lamp", "mug", "vase", "zebra"]
    assert [len(item.photos) for item in result.items] == [2, 1, 1, 1]


def test_a_named_folder_of_loose_photos_only_is_one_item_per_photo(tmp_path: Path) -> None:
    photo(tmp_path / "a" / "1.jpg", 1)
    photo(tmp_path / "a" / "2.jpg", 2)
    photo(tmp_path / "b" / "3.jpg", 3)
    result = scan([tmp_path / "a", tmp_path / "b"], group="folder")
    assert labels(result) == ["1", "2", "3"]
    # Named through its parent, the same folder is one item.
    assert labels(scan([tmp_path], group="folder")) == ["a", "b"]


def test_many_photos_in_one_item_is_a_warning_naming_the_folder_and_count(
    tmp_path: Path,
) -> None:
    for seed in range(13):
        photo(tmp_path / "shoot" / f"{seed:02d}.jpg", seed)
    for seed in range(12):
        photo(tmp_path / "dozen" / f"{seed:02d}.jpg", 100 + seed)
    result = scan([tmp_path], group="folder")
    assert labels(result) == ["dozen", "shoot"]  # still items, nothing skipped
    assert result.problems == []
    [warning] = result.warnings
    assert warning.path == str(tmp_path / "shoot")
    assert warning.reason.startswith("13 photos in one item")


def test_many_photos_in_one_manifest_item_is_a_warning(tmp_path: Path) -> None:
    lines = ["path,item"]
    for seed in range(14):
        photo(tmp_path / f"{seed}.jpg", seed)
        lines.append(f"{seed}.jpg,everything")
    result = scan([write_csv(tmp_path, "\n".join(lines))])
    assert labels(result) == ["everything"] and result.problems == []
    assert [w.reason[:20] for w in result.warnings] == ["14 photos in one ite"]
    assert result.warnings[0].path == "manifest.csv:2"


def test_recursive_walk_finds_nested_photos(tmp_path: Path) -> None:
    photo(tmp_path / "a" / "b" / "c" / "deep.jpg")
    assert labels(scan([tmp_path])) == ["deep"]


def test_extensions_are_case_insensitive(tmp_path: Path) -> None:
    photo(tmp_path / "IMG_0001.JPG", 1)
    photo(tmp_path / "IMG_0002.Jpeg", 2)
    (tmp_path / "IMG_0003.JPE").write_bytes(photo(tmp_path / "x" / "3.jpg", 3).read_bytes())
    assert {"IMG_0001", "IMG_0002", "IMG_0003"} <= set(labels(scan([tmp_path])))


def test_hidden_files_and_system_litter_ignored(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg")
    photo(tmp_path / ".hidden.jpg", 1)
    photo(tmp_path / ".thumbnails" / "t.jpg", 2)
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "notes.txt").write_text("price: 10")
    result = scan([tmp_path])
    assert labels(result) == ["mug"]
    assert result.problems == []


def test_unsupported_format_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "scan.TIFF").write_bytes(b"II*\0")
    (tmp_path / "raw.cr2").write_bytes(b"II*\0")
    found = reasons(scan([tmp_path]))
    assert found["scan.TIFF"] == "unsupported format (.tiff); convert to JPEG or PNG"
    assert found["raw.cr2"] == "unsupported format (.cr2); convert to JPEG or PNG"


def test_single_photo_path_is_one_item(tmp_path: Path) -> None:
    path = photo(tmp_path / "mug.jpg")
    item = only_item(scan([path]))
    assert item.label == "mug"
    assert item.photos[0].path == path


def test_missing_path_is_scan_error(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="does not exist"):
        scan([tmp_path / "nowhere"])


def test_non_photo_file_argument_is_scan_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ScanError, match="not a folder, a photo"):
        scan([tmp_path / "notes.txt"])


def test_unknown_grouping_is_scan_error(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="unknown grouping"):
        scan([tmp_path], group="album")  # type: ignore[arg-type]


def test_overlapping_arguments_count_each_photo_once(tmp_path: Path) -> None:
    path = photo(tmp_path / "mug.jpg")
    result = scan([tmp_path, path])
    assert labels(result) == ["mug"]
    assert result.duplicates == []


# -- content keys and duplicates


def test_photo_records_hash_size_and_mtime(tmp_path: Path) -> None:
    path = photo(tmp_path / "mug.jpg")
    found = only_item(scan([tmp_path])).photos[0]
    assert found.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert found.size_bytes == path.stat().st_size
    assert found.mtime_ns == path.stat().st_mtime_ns


def test_renamed_photo_keeps_its_key(tmp_path: Path) -> None:
    path = photo(tmp_path / "mug.jpg")
    before = only_item(scan([tmp_path])).key
    path.rename(tmp_path / "coffee-mug.jpg")
    assert only_item(scan([tmp_path])).key == before


def test_moved_folder_keeps_its_key(tmp_path: Path) -> None:
    photo(tmp_path / "a" / "mug" / "1.jpg", 1)
    photo(tmp_path / "a" / "mug" / "2.jpg", 2)
    before = only_item(scan([tmp_path], group="folder")).key
    (tmp_path / "a" / "mug").rename(tmp_path / "cup")
    assert only_item(scan([tmp_path], group="folder")).key == before


def test_key_is_hash_of_sorted_photo_hashes(tmp_path: Path) -> None:
    photo(tmp_path / "mug" / "1.jpg", 1)
    photo(tmp_path / "mug" / "2.jpg", 2)
    item = only_item(scan([tmp_path], group="folder"))
    shas = sorted(p.sha256 for p in item.photos)
    assert item.key == hashlib.sha256("\n".join(shas).encode()).hexdigest()
    assert item.key == item_key(list(reversed(shas)))


def test_changed_photo_changes_key(tmp_path: Path) -> None:
    path = photo(tmp_path / "mug.jpg", 1)
    before = only_item(scan([tmp_path])).key
    photo(path, 2)
    assert only_item(scan([tmp_path])).key != before


def test_same_photo_twice_is_duplicate_item(tmp_path: Path) -> None:
    first = photo(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(first.read_bytes())
    result = scan([tmp_path])
    assert labels(result) == ["a"]
    assert result.duplicates == [(str(tmp_path / "b.jpg"), str(first))]


def test_identical_photos_in_one_item_collapse(tmp_path: Path) -> None:
    first = photo(tmp_path / "mug" / "1.jpg")
    (tmp_path / "mug" / "1 copy.jpg").write_bytes(first.read_bytes())
    result = scan([tmp_path], group="folder")
    assert len(only_item(result).photos) == 1
    assert len(result.duplicates) == 1


def test_results_are_deterministic(tmp_path: Path) -> None:
    for seed, name in enumerate(["z.jpg", "a.jpg", "m/q.jpg", "m/b.png"]):
        photo(tmp_path / name, seed)
    assert scan([tmp_path]) == scan([tmp_path])
    assert labels(scan([tmp_path])) == ["a", "b", "q", "z"]


# -- manifests


def write_csv(folder: Path, text: str, name: str = "manifest.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_lists_photos_one_item_each(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg", 1)
    photo(tmp_path / "lamp.jpg", 2)
    result = scan([write_csv(tmp_path, "path\nmug.jpg\nlamp.jpg\n")])
    assert labels(result) == ["mug", "lamp"]
    assert result.items[1].source == "manifest.csv:3"


def test_manifest_item_column_groups_rows(tmp_path: Path) -> None:
    for seed, name in enumerate(["m1.jpg", "m2.jpg", "l1.jpg"]):
        photo(tmp_path / "photos" / name, seed)
    text = "path,item,notes\nphotos/m1.jpg,Blue mug,chip on rim\nphotos/l1.jpg,Lamp,\n"
    text += "photos/m2.jpg,Blue mug,\n"
    result = scan([write_csv(tmp_path, text)])
    assert labels(result) == ["Blue mug", "Lamp"]
    assert len(result.items[0].photos) == 2
    assert result.items[0].notes == "chip on rim"
    assert result.items[1].notes is None


def test_manifest_jsonl_read(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg")
    lines = [json.dumps({"path": "mug.jpg", "item": "Mug", "notes": "boxed"})]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    item = only_item(scan([path]))
    assert (item.label, item.notes, item.source) == ("Mug", "boxed", "items.jsonl:1")


def test_manifest_without_path_column_is_an_error_naming_its_columns(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path, "file,title\nmug.jpg,Mug\n")
    with pytest.raises(ScanError, match=r"manifest.csv: no 'path' column .*'file', 'title'"):
        scan([manifest])


def test_unreadable_manifest_stops_the_scan_before_anything_is_stored(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path, "file,title\nmug.jpg,Mug\n")
    make_jpeg(tmp_path / "photos" / "lamp.jpg")
    with pytest.raises(ScanError):  # a usage error: the seller fixes the file, runs again
        scan([tmp_path / "photos", manifest])


def test_manifest_unknown_path_is_a_problem(tmp_path: Path) -> None:
    result = scan([write_csv(tmp_path, "path\nghost.jpg\n")])
    assert result.items == []
    [problem] = result.problems
    assert (problem.line, "ghost.jpg not found" in problem.reason) == (2, True)


def test_manifest_path_outside_its_folder_is_a_problem(tmp_path: Path) -> None:
    photo(tmp_path / "outside.jpg")
    (tmp_path / "inner").mkdir()
    result = scan([write_csv(tmp_path / "inner", "path\n../outside.jpg\n")])
    assert result.items == []
    assert "outside the manifest's folder" in result.problems[0].reason


def test_manifest_duplicate_lines_are_problems_not_fatal(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg")
    result = scan([write_csv(tmp_path, "path\nmug.jpg\nmug.jpg\n")])
    assert labels(result) == ["mug"]
    [problem] = result.problems
    assert (problem.line, problem.reason) == (3, "mug.jpg is a duplicate of line 2")


def test_manifest_not_utf8_is_a_problem_with_offset(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"path,notes\nmug.jpg,caf\xe9\n")
    with pytest.raises(ScanError, match=r"not UTF-8 text .*offset 22"):
        scan([manifest])


def test_manifest_utf8_bom_accepted(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg")
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbfpath\nmug.jpg\n")
    assert labels(scan([tmp_path / "m.csv"])) == ["mug"]


def test_manifest_bad_json_line_is_a_problem_with_line_number(tmp_path: Path) -> None:
    photo(tmp_path / "mug.jpg")
    path = tmp_path / "items.ndjson"
    path.write_text('{"path": "mug.jpg"}\n{"path": oops}\n')
    result = scan([path])
    assert labels(result) == ["mug"]
    assert result.problems[0].line == 2
    assert "not valid JSON" in result.problems[0].reason


def test_manifest_unsupported_format_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "old.bmp").write_bytes(b"BM")
    result = scan([write_csv(tmp_path, "path\nold.bmp\n")])
    assert "unsupported format (.bmp)" in result.problems[0].reason


# -- hostile file systems


def test_zero_byte_photo_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reasons(scan([tmp_path])) == {"empty.jpg": "empty file (0 bytes)"}


def test_fifo_named_like_photo_is_a_problem(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    assert "not a regular file" in reasons(scan([tmp_path]))["pipe.jpg"]


def test_folder_named_like_photo_is_walked(tmp_path: Path) -> None:
    photo(tmp_path / "album.jpg" / "mug.jpg")
    assert labels(scan([tmp_path])) == ["mug"]


def test_symlink_to_photo_followed(tmp_path: Path) -> None:
    target = photo(tmp_path / "real" / "mug.jpg")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "cup.jpg").symlink_to(target)
    assert labels(scan([tmp_path / "links"])) == ["cup"]


def test_broken_symlink_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert "broken symlink" in reasons(scan([tmp_path]))["gone.jpg"]


def test_symlink_loop_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    photo(tmp_path / "a" / "mug.jpg")
    (tmp_path / "a" / "back").symlink_to(tmp_path)
    (tmp_path / "self.jpg").symlink_to(tmp_path / "self.jpg")
    result = scan([tmp_path])
    assert labels(result) == ["mug"]
    found = reasons(result)
    assert "symlink loop" in found["back"]
    assert "symlink loop" in found["self.jpg"]


def test_unreadable_photo_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, for whom chmod 000 changes nothing: make open() refuse instead.
    locked = photo(tmp_path / "locked.jpg", 1)
    photo(tmp_path / "open.jpg", 2)
    real_open = os.open

    def refusing_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    result = scan([tmp_path])
    assert labels(result) == ["open"]
    assert reasons(result)["locked.jpg"] == "permission denied (cannot read the file)"


def test_photo_vanishing_mid_scan_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = photo(tmp_path / "doomed.jpg")
    real_open = os.open

    def deleting_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if Path(path) == doomed:
            doomed.unlink()
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deleting_open)
    assert "vanished during the scan" in reasons(scan([tmp_path]))["doomed.jpg"]


def test_non_utf8_file_name_works_and_prints(tmp_path: Path) -> None:
    raw_name = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    with open(raw_name, "wb") as file:
        file.write(photo(tmp_path / "src" / "x.jpg").read_bytes())
    (tmp_path / "src" / "x.jpg").unlink()
    found = only_item(scan([tmp_path])).photos[0]
    assert found.path.read_bytes()[:2] == b"\xff\xd8"  # the real path still opens the file
    assert found.display.endswith("caf\\xe9.jpg")
    assert found.display.isprintable()


def test_very_long_file_name_works(tmp_path: Path) -> None:
    name = "x" * 246 + ".jpg"
    photo(tmp_path / name)
    assert labels(scan([tmp_path])) == ["x" * 246]


def test_every_photo_accounted_for(tmp_path: Path) -> None:
    a = photo(tmp_path / "a.jpg", 1)
    (tmp_path / "a copy.jpg").write_bytes(a.read_bytes())
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "s.tif").write_bytes(b"II*\0")
    photo(tmp_path / "d" / "b.jpg", 2)
    everything = {str(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert accounted_paths(scan([tmp_path])) == everything


def test_thousands_of_small_files_scan_fast(tmp_path: Path) -> None:
    # 2,000 files, as creating 10,000 takes ~9 s here; scanning 10,000 takes ~0.4 s.
    for index in range(2_000):
        folder = tmp_path / f"{index // 500:02d}"
        if index % 500 == 0:
            folder.mkdir()
        (folder / f"{index:05d}.jpg").write_bytes(b"\xff\xd8\xff" + index.to_bytes(4, "big"))
    started = time.perf_counter()
    result = scan([tmp_path])
    elapsed = time.perf_counter() - started
    assert len(result.items) == 2_000
    assert elapsed < 2, f"{elapsed:.1f}s"  # about 0.08 s on an idle 2-core machine


# -- the bad-input corpus (test_images/make_bad_inputs.py)


def corpus_outcomes(folder: Path) -> dict[str, str]:
    """What scan + prepare_photo say about each input: "ok" or the reason."""
    outcomes: dict[str, str] = {}

    def relative(path: str) -> str:
        return os.path.relpath(path, folder)

    result = scan([folder])
    for problem in result.problems:
        outcomes[relative(problem.path)] = problem.reason
    for item in result.items:
        for found in item.photos:
            try:
                prepare_photo(found.path, expected_sha256=found.sha256)
                outcomes[relative(found.display)] = "ok"
            except BadPhoto as error:
                outcomes[relative(found.display)] = error.reason
    for manifest in sorted((folder / "manifests").glob("*.*sv")) + sorted(
        (folder / "manifests").glob("*.jsonl")
    ):
        try:
            reasons_found = [problem.reason for problem in scan([manifest]).problems]
            outcomes[relative(str(manifest))] = " | ".join(reasons_found) or "ok"
        except ScanError as error:
            outcomes[relative(str(manifest))] = str(error)
    return outcomes


def test_bad_input_corpus_every_file_has_its_reason(tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "test_images" / "make_bad_inputs.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    expected = json.loads((tmp_path / "expected.json").read_text())
    outcomes = corpus_outcomes(tmp_path)
    for name, outcome in expected.items():
        assert name in outcomes, f"{name} vanished"
        assert outcome in outcomes[name], f"{name}: {outcomes[name]!r} lacks {outcome!r}"


def test_scan_counts_each_photo_it_reads_for_a_progress_counter(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c/d.jpg"):
        make_jpeg(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"")  # read too, even though it is no use
    (tmp_path / "notes.txt").write_text("not a photo")
    counts: list[int] = []
    scan([tmp_path, tmp_path / "a.jpg"], on_photo=counts.append)  # a.jpg twice: read once
    assert counts == [1, 2, 3, 4]


def test_scan_counter_stays_silent_off_a_terminal() -> None:
    import io

    from rich.console import Console

    from dealscout_cli.cli.progress import ScanCounter

    console = Console(file=io.StringIO(), force_terminal=False)
    counter = ScanCounter(console)
    for n in range(1, 1000):
        counter(n)
    counter.close()
    assert console.file.getvalue() == ""  # cron logs get the "found N items" line only


def test_scan_counter_shows_the_count_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from dealscout_cli.cli.progress import ScanCounter

    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    counter = ScanCounter(console)
    counter(1)
    counter.close()
    assert "scanning: 1 photo read" in console.file.getvalue()


def test_a_problem_is_placed_by_its_path_or_its_manifest_line() -> None:
    from dealscout_cli.scan import ScanProblem

    assert ScanProblem("shoot/a.jpg", "not an image").place == "shoot/a.jpg"
    assert ScanProblem("items.csv", "no photo", line=3).place == "items.csv:3"
    assert ScanProblem("weird:name.csv", "no photo", line=12).place == "weird:name.csv:12"
