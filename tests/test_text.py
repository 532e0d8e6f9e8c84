"""The two rules for outside text: shown on a terminal, written to a spreadsheet cell."""

from __future__ import annotations

import pytest

from dealscout_cli.text import printable, spreadsheet_cell


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]8;;http://evil\x1b\\link", "\\x1b]8;;http://evil\\x1b\\link"),
        ("bell\x07", "bell\\x07"),
        ("a\nb\r\nc\td", "a\\nb\\r\\nc\\td"),
        ("\x7f\x9b31m", "\\x7f\\x9b31m"),
        ("\u202egpj.exe", "\\u202egpj.exe"),
        ("\u2066isolated\u2069 \u200f", "\\u2066isolated\\u2069 \\u200f"),
        ("line\u2028sep", "line\\u2028sep"),
        ("\ud800", "\\ud800"),  # a lone surrogate would make the UTF-8 write raise
    ],
)
def test_control_characters_are_shown_as_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.mark.parametrize(
    "text", ["Café crème – 12 oz", "Lot [NEW] 日本語", "C:\\photos\\a.jpg", "😀 👍🏽", "a\u00a0b"]
)
def test_ordinary_text_is_shown_as_it_is(text: str) -> None:
    assert printable(text) == text


def test_multiline_keeps_newlines_and_escapes_the_rest() -> None:
    assert printable("one\r\ntwo\n\x1b[5mthree\r", multiline=True) == "one\ntwo\n\\x1b[5mthree\\r"


def test_anything_is_shown_as_its_text() -> None:
    assert printable(None) == "None" and printable(3) == "3"


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "=cmd|'/c calc'!A1",
        " =1+1", "\u3000=1+1", "\n@SUM(A1)", "\u200b=1", "＝1+1", "＋1", "－1", "＠SUM(A1)", "-",
    ],
)  # fmt: skip
def test_a_cell_a_spreadsheet_would_run_gets_a_quote(text: str) -> None:
    assert spreadsheet_cell(text) == "'" + text


@pytest.mark.parametrize(
    "text",
    ["", "Pyrex cup", "12.50", "3000", "https://x/a.jpg", "a=b", "1+1", "'=already text", "DS-1"],
)
def test_other_cells_are_left_as_they_are(text: str) -> None:
    assert spreadsheet_cell(text) == text


def test_a_quoted_cell_is_not_quoted_twice() -> None:
    once = spreadsheet_cell("=1+1")
    assert spreadsheet_cell(once) == once
