"""The messages docs/troubleshooting.md and docs/faults.md quote are the ones the code prints.

A quoted message is split at its placeholders (``...`` and ``<...>``, the parts that vary);
each piece of at least :data:`greppable.DISTINCTIVE` characters must be written out on one
line of the source, so that ``grep -F`` finds it there.  A message reworded in the
code and not in the docs fails here.

What counts as a quoted message: every backticked text in the first column of the tables of
troubleshooting.md, and every backticked text with a space in it in the "what happens"
column of faults.md (a name such as ``RETRY_PARENT`` is not a message).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from greppable import DISTINCTIVE, PREFIXES, ROOT, grep_finds

TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
FAULTS = ROOT / "docs" / "faults.md"
#: The parts of a quoted message that vary: ``...`` and ``<name>``.
PLACEHOLDER = re.compile(r"<[^<>]*>|\.\.\.")
CODE = re.compile(r"`([^`]+)`")


def cells(row: str) -> list[str]:
    """The cells of one table row; a ``|`` inside backticks or escaped does not split."""
    found, current, in_code, index = [], "", False, 0
    text = row.strip().strip("|")
    while index < len(text):
        character = text[index]
        if character == "\\" and index + 1 < len(text):
            current += text[index : index + 2]
            index += 2
            continue
        if character == "`":
            in_code = not in_code
        if character == "|" and not in_code:
            found.append(current.strip())
            current = ""
        else:
            current += character
        index += 1
    return [*found, current.strip()]


def tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """Every table of a page: its header cells and its rows' cells."""
    found: list[tuple[list[str], list[list[str]]]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        starts = line.startswith("|") and (number == 0 or not lines[number - 1].startswith("|"))
        if starts and number + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[number + 1].strip()):
            rows = []
            for row in lines[number + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            found.append((cells(line), rows))
    return found


def quoted(path: Path, column: str, *, sentences_only: bool) -> list[str]:
    """The backticked texts of one column of every table of ``path`` that has that column."""
    messages = []
    for header, rows in tables(path):
        if column in header:
            for row in rows:
                texts = CODE.findall(row[header.index(column)])
                messages += [text for text in texts if " " in text.strip() or not sentences_only]
    return messages


def pieces(message: str) -> list[str]:
    """The literal pieces of a quoted message long enough to find a line by."""
    text = message.strip()
    for prefix in PREFIXES:
        text = text[len(prefix) :] if text.startswith(prefix) else text
    return [piece.strip() for piece in PLACEHOLDER.split(text) if len(piece.strip()) >= DISTINCTIVE]


def not_in_source(message: str) -> list[str]:
    """The pieces of ``message`` that ``grep -F`` finds on no line of the source."""
    return [piece for piece in pieces(message) if not grep_finds(piece)]


TROUBLESHOOTING_MESSAGES = quoted(TROUBLESHOOTING, "what you see", sentences_only=False)
FAULTS_MESSAGES = [message for message in quoted(FAULTS, "what happens", sentences_only=True) if pieces(message)]


def test_the_pages_quote_messages() -> None:
    # A table whose columns were renamed or reshaped would leave nothing to check.
    assert len(TROUBLESHOOTING_MESSAGES) >= 80
    assert len(FAULTS_MESSAGES) >= 20


@pytest.mark.parametrize("message", TROUBLESHOOTING_MESSAGES)
def test_each_message_troubleshooting_quotes_is_in_the_source(message: str) -> None:
    assert pieces(message), f"{message!r} has no literal piece of {DISTINCTIVE} characters to find it by"
    assert not_in_source(message) == [], f"docs/troubleshooting.md quotes {message!r}; grep -F finds no such text"


@pytest.mark.parametrize("message", FAULTS_MESSAGES)
def test_each_message_faults_quotes_is_in_the_source(message: str) -> None:
    assert not_in_source(message) == [], f"docs/faults.md quotes {message!r}; grep -F finds no such text"


def test_a_reworded_message_is_caught() -> None:
    assert not_in_source("Stood down: ... named another execution as retry <N>/<R>; this copy did nothing") == []
    assert not_in_source("Stood down: ... picked another execution as retry <N>/<R>; this copy did nothing") == [
        "picked another execution as retry"
    ]


def test_placeholders_split_a_message_and_short_pieces_are_not_checked() -> None:
    assert pieces("[retry] ... - retry <N>/<R> started as #<C>") == ["started as #"]
    assert cells("| `a | b` | c \\| d |") == ["`a | b`", "c \\| d"]
