"""Outside text made safe for where it is shown: a terminal, or a spreadsheet cell.

Model answers, server messages and file names are untrusted (DESIGN.md, Invariants). Stored
as they came, they are only made harmless on the way out, each by one rule here:

    printable(text)         for a terminal: control characters shown as visible escapes
    spreadsheet_cell(text)  for a CSV cell: a would-be formula kept as text

JSON output needs neither: `json.dumps` escapes control characters, and a JSON file is not
opened by a spreadsheet.
"""

from __future__ import annotations

import re
import unicodedata

# C0 controls, DEL and C1 controls (ESC starts colour, clear-screen and OSC 8 link sequences;
# C1 0x9b is a one-byte CSI to some terminals), lone surrogates (writing one to a UTF-8 stream
# raises), the line and paragraph separators, and the bidi controls that reorder what follows
# ("photo\u202egpj.exe" shows as "photoexe.jpg"; the "Trojan Source" ones, CVE-2021-42574).
_OTHER_CONTROLS = (
    r"\x7f-\x9f\ud800-\udfff\u2028\u2029"  # DEL, C1, lone surrogates, line/paragraph separator
    r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
)
_CONTROL = re.compile(rf"[\x00-\x1f{_OTHER_CONTROLS}]")
_CONTROL_BUT_NEWLINE = re.compile(rf"[\x00-\x09\x0b-\x1f{_OTHER_CONTROLS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object, *, multiline: bool = False) -> str:
    """`text` with every control character shown as a Python-style escape (ESC as the four
    characters `\\x1b`, U+202E as `\\u202e`, a newline as `\\n`), so it cannot move the
    cursor, clear the screen, hide a link or reorder a line. `multiline` keeps newlines (a
    description in a table cell of its own); a `\\r\\n` then counts as one newline."""
    value = str(text)
    if multiline:
        return _CONTROL_BUT_NEWLINE.sub(_escape, value.replace("\r\n", "\n"))
    return _CONTROL.sub(_escape, value)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# OWASP, "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection): a cell that
# begins with =, +, -, @, tab or carriage return is run as a formula by Excel, LibreOffice
# and Google Sheets (=HYPERLINK(...) sends data away, =cmd|'...'!A1 ran programs through DDE).
# Its advice: prefix such a cell with a single quote, which spreadsheets read as "this is
# text", and quote the cell (our CSV writers quote every data cell; the csv module already
# quotes a cell holding a separator or a quote, so no text can start a cell of its own,
# which the page also warns about). We add NUL (OWASP ASVS 1.2.10) and the full-width forms
# (＝＋－＠), which Japanese and Chinese input methods type and some spreadsheets also take
# as the start of a formula.
FORMULA_STARTS = frozenset("=+-@\t\r\x00\uff1d\uff0b\uff0d\uff20")


def spreadsheet_cell(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs: prefixed with `'` when it starts with a
    formula character, also when only blanks or invisible characters come before it
    (" =1+1", "\\u200b=1+1"). Otherwise, and when it is already prefixed, unchanged."""
    if text[:1] in FORMULA_STARTS or _first_visible(text) in FORMULA_STARTS:
        return "'" + text
    return text


def _first_visible(text: str) -> str:
    for char in text:
        if not (char.isspace() or unicodedata.category(char).startswith("C")):
            return char
    return ""
