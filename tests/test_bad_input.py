"""The bad-input corpus (test_images/make_bad_inputs.py) in one batch through `dealscout snap`:
every bad file gets its reason, every good file its listing, and the exit code says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dealscout_cli.cli import app

SCRIPT = Path(__file__).parent.parent / "test_images" / "make_bad_inputs.py"


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "corpus"
    subprocess.run([sys.executable, str(SCRIPT), str(folder)], check=True, capture_output=True)
    return folder, json.loads((folder / "expected.json").read_text())


def snap_json(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["snap", *args, "--offline", "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def listed_paths() -> set[str]:
    result = CliRunner().invoke(app, ["listings", "--json"], catch_exceptions=False)
    return {photo["path"] for listing in json.loads(result.stdout) for photo in listing["photos"]}


def test_every_bad_file_has_its_reason_and_every_good_file_its_listing(corpus) -> None:
    folder, expected = corpus
    code, report = snap_json(str(folder))
    assert code == 1
    reasons = {os.path.relpath(p["path"], folder): p["reason"] for p in report["problems"]}
    for failure in report["failed"]:
        where = failure.get("first_photo") or failure["source"]
        reasons[os.path.relpath(where, folder)] = failure["error"]
    listed = {os.path.relpath(p, folder) for p in listed_paths()}
    for name, outcome in expected.items():
        if name.startswith("manifests/") and not name.startswith("manifests/photos/"):
            continue  # manifests are scanned on their own below
        if name.startswith("manifests/photos/") or name == "outside.jpg":
            continue  # only reachable through a manifest
        if outcome == "ok":
            assert name in listed, f"{name} has no listing"
        else:
            assert name in reasons, f"{name} vanished without a reason"
            assert outcome in reasons[name], f"{name}: {reasons[name]!r} lacks {outcome!r}"


# Manifests that cannot be read at all: a usage error, not an item (see the next test).
UNREADABLE_MANIFESTS = ("manifests/missing-column.csv", "manifests/latin1.csv")


def test_each_broken_manifest_line_is_named_and_the_good_lines_run(corpus) -> None:
    folder, expected = corpus
    manifests = sorted(
        name
        for name, outcome in expected.items()
        if name.startswith("manifests/")
        and not name.startswith("manifests/photos/")
        and name not in UNREADABLE_MANIFESTS
    )
    code, report = snap_json(*(str(folder / name) for name in manifests))
    assert code == 1
    problems = " | ".join(f"{p['path']}:{p['line']} {p['reason']}" for p in report["problems"])
    for name in manifests:
        assert Path(name).name in problems, f"{name} has no problem reported"
        assert expected[name] in problems
    assert listed_paths(), "the manifests' good lines made no listings"


@pytest.mark.parametrize("name", UNREADABLE_MANIFESTS)
def test_a_manifest_that_cannot_be_read_is_a_usage_error_and_stores_nothing(
    corpus, name: str
) -> None:
    folder, expected = corpus
    result = CliRunner().invoke(app, ["snap", str(folder / name), "--offline"])
    assert result.exit_code == 2
    assert result.output.count(expected[name]) == 1  # one message, said once
    assert Path(name).name in result.output
    assert not Path(os.environ["DEALSCOUT_DB"]).exists()


def test_a_file_that_is_neither_photo_nor_manifest_is_a_usage_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# notes")
    result = CliRunner().invoke(app, ["snap", str(readme), "--offline"])
    assert result.exit_code == 2
    assert "is not a folder, a photo" in result.output
