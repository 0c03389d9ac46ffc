"""Messages are written out in the source, so that grep -F finds the line that printed them.

Every test checks the messages it makes the code print or send (the ``messages_are_greppable``
fixture, the stand-in, the local process helpers); these tests check the check.
"""

from __future__ import annotations

import ast

import pytest
from greppable import ROOT, SOURCES, is_greppable, not_greppable


@pytest.mark.parametrize(
    "message",
    [
        "[retry] ConnectionError: refused - retry 1/3 started as #42",
        "[retry] VH_API_TOKEN is not set: add your Valohai API token as a secret project environment variable",
        "[retry] attempt 2 of up to 4, running locally as 'retry: 1'",
        "[chains] no project: pass --project <id> (Project settings shows it) or set VH_PROJECT_ID",
        "train.py: invalid parameter: unknown parameter '--bogus'; the parameters are --retries, --delay",
    ],
)
def test_messages_the_code_prints_are_found(message: str) -> None:
    assert is_greppable(message)


@pytest.mark.parametrize(
    "message",
    [
        "[retry] attempt 2 of up to 4 locally, tag 'retry: 1'",  # assembled from short pieces
        "[retry] ConnectionError: could not connect to db.internal",  # values only
        "[retry] 13 s left",
    ],
)
def test_messages_made_of_values_and_short_pieces_are_not(message: str) -> None:
    assert not_greppable([message]) == [message]


def test_the_fixture_sees_the_messages_of_a_test(
    messages_are_greppable: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import retry

    retry._say("warning: VH_API_TOKEN is not set, so a failure here cannot start a retry")
    assert messages_are_greppable == ["warning: VH_API_TOKEN is not set, so a failure here cannot start a retry"]


def constant_names(tree: ast.Module) -> set[str]:
    """Module-level names bound to a string: text that an f-string could hide from grep."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if isinstance(node.value.value, str):
                names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def regular_expressions(tree: ast.Module) -> set[int]:
    """The f-strings that build regular expressions (``re.compile(f"...")``): not messages."""
    return {
        id(argument)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
        if node.func.value.id == "re"
        for argument in node.args
        if isinstance(argument, ast.JoinedStr)
    }


def hidden_constants(tree: ast.Module) -> list[tuple[int, str]]:
    """Where a message's f-string puts a text constant instead of the text: line and name."""
    constants, patterns = constant_names(tree), regular_expressions(tree)
    return [
        (node.lineno, part.value.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr) and id(node) not in patterns
        for part in node.values
        if isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id in constants
    ]


@pytest.mark.parametrize("source", SOURCES)
def test_no_message_interpolates_a_text_constant(source: str) -> None:
    tree = ast.parse((ROOT / source).read_text(encoding="utf-8"))
    assert hidden_constants(tree) == []  # write the text itself, e.g. VH_API_TOKEN, not {TOKEN_VARIABLE}


def test_the_static_check_finds_a_hidden_constant() -> None:
    source = 'TOKEN_VARIABLE = "VH_API_TOKEN"\nmessage = f"{TOKEN_VARIABLE} is not set"\n'
    assert hidden_constants(ast.parse(source)) == [(2, "TOKEN_VARIABLE")]
