"""Every message a user sees can be found in the source with ``grep -F``.

A message is greppable when it contains a distinctive piece of a string literal of the
source (``retry.py``, ``chains.py``, ``train.py``): at least :data:`DISTINCTIVE` characters
written out as they are printed.  A message assembled from constants (``{TOKEN_VARIABLE}
is not set``) or from values alone has none, and fails the check.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("retry.py", "chains.py", "train.py", "controller.py")
#: Shorter pieces (" - retry ", ": HTTP ") are too common to find a line by.
DISTINCTIVE = 12
#: What the printing adds in front of every line; not part of the message.
PREFIXES = ("[retry] ", "[chains] ", "[retry-controller] ")


@functools.lru_cache(maxsize=1)
def literal_pieces() -> tuple[str, ...]:
    """The text of every string literal in the sources, and every literal part of an f-string."""
    pieces: set[str] = set()
    for name in SOURCES:
        for node in ast.walk(ast.parse((ROOT / name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                pieces.add(node.value)
    return tuple(piece.strip() for piece in pieces if len(piece.strip()) >= DISTINCTIVE)


@functools.lru_cache(maxsize=1)
def source_lines() -> tuple[str, ...]:
    """Every line of the sources, as ``grep -F`` reads them."""
    return tuple(line for name in SOURCES for line in (ROOT / name).read_text(encoding="utf-8").splitlines())


def grep_finds(piece: str) -> bool:
    """Whether ``grep -F piece`` finds a line of the sources."""
    return any(piece in line for line in source_lines())


def is_greppable(message: str) -> bool:
    text = message.strip()
    for prefix in PREFIXES:
        text = text[len(prefix) :] if text.startswith(prefix) else text
    return any(piece in text for piece in literal_pieces())


def not_greppable(messages: Iterable[str]) -> list[str]:
    """The messages of ``messages`` that cannot be found in the source."""
    return [message for message in messages if message.strip() and not is_greppable(message)]


def retry_lines(output: str) -> list[str]:
    """The lines of a process's output that retry.py or chains.py printed."""
    return [line for line in output.splitlines() if line.startswith(PREFIXES)]
