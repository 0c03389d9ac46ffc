"""`python chains.py chain <counter>`: back by RETRY_PARENT, forward by the heir each record names."""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses
from conftest import HOST, PROJECT_ID, TOKEN
from responses import matchers

import chains
import retry

AUTH = matchers.header_matcher({"Authorization": f"Token {TOKEN}"})


def execution(
    counter: int, retry_number: int, status: str, words: str | None, parent: str | None, heir: str | None = None
) -> dict[str, Any]:
    tags = ["nightly"] + ([f"retry: {retry_number}"] if retry_number else [])
    variables = {"RETRY_PARENT": {"value": parent, "secret": False}} if parent else {}
    record = retry.Record("started", retry_number + 1, heir=heir, cause="ConnectionError: refused") if heir else None
    return {
        "id": f"id-{counter}",
        "counter": counter,
        "status": status,
        "status_detail": retry.status_with_record(words, record) if words and record else words,
        "tags": tags,
        "environment_variables": variables,
        "urls": {"display": f"{HOST}/p/acme/churn-model/execution/id-{counter}/"},
    }


@pytest.fixture
def token(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    clean_env.setenv("VH_API_TOKEN", TOKEN)
    return clean_env


def test_chain_lists_every_attempt_oldest_first(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    first = execution(41, 0, "error", "ConnectionError: refused - retry 1/2 started as #42", None, "id-42")
    second = execution(42, 1, "error", "ConnectionError: refused - retry 2/2 started as #44", "id-41", "id-44")
    third = execution(44, 2, "complete", None, "id-42")
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:42/", json=second, match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/id-41/", json=first, match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/id-44/", json=third, match=[AUTH])

    assert chains.main(["chain", "42", "--project", PROJECT_ID]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["#41", "#42", "#44"]
    assert lines[1] == (
        "#42  retry 1  error  ConnectionError: refused - retry 2/2 started as #44"
        f"  {HOST}/p/acme/churn-model/execution/id-42/"
    )
    assert len(api.calls) == 3  # one detail per attempt, whatever the project holds


def test_chain_without_a_project_says_how_to_give_one(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(["chain", "42"])
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    assert "pass --project" in capsys.readouterr().err


def test_chain_without_a_token_says_to_export_it(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(["chain", "42", "--project", PROJECT_ID])
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert "VH_API_TOKEN is not set: export VH_API_TOKEN=<your token> in this shell" in capsys.readouterr().err


def test_a_parent_or_heir_loop_cannot_hang_the_query(token: pytest.MonkeyPatch, api: responses.RequestsMock) -> None:
    first = execution(41, 1, "error", "x", "id-42", heir="id-42")  # tampered: each names the other
    looping = execution(42, 1, "error", "x", "id-41", heir="id-41")
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:42/", json=looping)
    api.get(f"{HOST}/api/v0/executions/id-41/", json=first)

    attempts = chains.chain(retry.ValohaiAPI(TOKEN), PROJECT_ID, 42)
    assert [item["counter"] for item in attempts] == [41, 42]
    assert len(api.calls) == 2


def test_the_chain_query_walks_at_most_the_retry_ceiling(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    for n in range(150):
        step = execution(n, n, "error", "x", f"id-{n - 1}" if n else None, heir=f"id-{n + 1}")
        api.get(
            f"{HOST}/api/v0/executions/{PROJECT_ID}:0/" if n == 0 else f"{HOST}/api/v0/executions/id-{n}/", json=step
        )

    try:
        assert chains.main(["chain", "0", "--project", PROJECT_ID]) == 0
    finally:
        api.assert_all_requests_are_fired = False  # the rest were never asked for: that is the point
    assert len(capsys.readouterr().out.splitlines()) == retry.MAX_RETRIES + 1


@pytest.mark.parametrize("detail", [{}, {"id": ["odd"], "counter": 42}, None, {"status_detail": "\x1b[2J\u202e"}])
def test_the_chain_query_ends_odd_answers_in_one_line(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any, detail: Any
) -> None:
    body = "[" * 5000 if detail is None else json.dumps(detail)
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:42/", body=body, content_type="application/json")

    try:
        code = chains.main(["chain", "42", "--project", PROJECT_ID])
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) <= 1
    assert "\x1b" not in captured.out + captured.err and "\u202e" not in captured.out + captured.err
    assert code in (0, retry.EXIT_RELAUNCH_FAILED)


def test_chain_of_a_retry_controller_is_the_chain_of_the_failure_it_acted_for(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    crashed = execution(43, 0, "error", None, None)
    said = "Started retry 1/3 of #43 as #48: #43 ended 'error' without a verdict"
    record = retry.Record("started", 1, heir="id-48", failed="id-43")
    controller = {**execution(46, 0, "complete", None, None), "status_detail": retry.status_with_record(said, record)}
    retried = execution(48, 1, "complete", None, "id-43")
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:46/", json=controller, match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/id-43/", json=crashed, match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/", json={"count": 2, "next": None, "results": [retried, crashed]})
    api.get(f"{HOST}/api/v0/executions/id-48/", json=retried, match=[AUTH])

    assert chains.main(["chain", "46", "--project", PROJECT_ID]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == ["#43", "#48"]


def test_chain_whose_named_retry_was_deleted_lists_what_is_left(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    first = execution(41, 0, "error", "ConnectionError: refused - retry 1/2 started as #42", None, "id-42")
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:41/", json=first, match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/id-42/", status=404, json={"detail": "Not found."}, match=[AUTH])

    assert chains.main(["chain", "41", "--project", PROJECT_ID]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == ["#41"]
