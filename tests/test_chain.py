"""`python chains.py chain <counter>` walks a chain of attempts through the API."""

from __future__ import annotations

from typing import Any

import pytest
import responses
from conftest import HOST, PROJECT_ID, TOKEN
from responses import matchers

import chains
import retry

AUTH = matchers.header_matcher({"Authorization": f"Token {TOKEN}"})


def execution(counter: int, retry_number: int, status: str, detail: str | None, parent: str | None) -> dict[str, Any]:
    tags = ["nightly"] + ([f"retry: {retry_number}"] if retry_number else [])
    variables = {"RETRY_PARENT": {"value": parent, "secret": False}} if parent else {}
    return {
        "id": f"id-{counter}",
        "counter": counter,
        "status": status,
        "status_detail": detail,
        "tags": tags,
        "environment_variables": variables,
        "urls": {"display": f"{HOST}/p/acme/churn-model/execution/id-{counter}/"},
    }


def test_chain_lists_every_attempt_oldest_first(
    clean_env: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    clean_env.setenv("VH_API_TOKEN", TOKEN)
    first = execution(41, 0, "error", "ConnectionError: refused - retry 1/2 started as #42", None)
    second = execution(42, 1, "error", "ConnectionError: refused - retry 2/2 started as #44", "id-41")
    third = execution(44, 2, "complete", None, "id-42")
    unrelated = execution(43, 1, "queued", None, "id-7")
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:42/", json=second, match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/id-41/", json=first, match=[AUTH])
    abridged = {key: value for key, value in third.items() if key != "environment_variables"}
    api.get(
        f"{HOST}/api/v0/executions/",
        json={"results": [abridged, unrelated, second, first], "next": None},
        match=[
            AUTH,
            matchers.query_param_matcher(
                {"project": PROJECT_ID, "ordering": "-counter", "deleted": "false", "limit": "100", "offset": "0"}
            ),
        ],
    )
    api.get(f"{HOST}/api/v0/executions/id-44/", json=third, match=[AUTH])

    assert chains.main(["chain", "42", "--project", PROJECT_ID]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["#41", "#42", "#44"]
    assert lines[1].startswith("#42  retry 1  error  ConnectionError: refused - retry 2/2 started as #44  https://")
    assert lines[2].endswith("/execution/id-44/")


def test_chain_without_a_project_says_how_to_give_one(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(["chain", "42"])
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    assert "pass --project" in capsys.readouterr().err


def test_chain_without_a_token_names_the_variable(clean_env: pytest.MonkeyPatch, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(["chain", "42", "--project", PROJECT_ID])
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert "VH_API_TOKEN is not set" in capsys.readouterr().err


def test_a_parent_loop_cannot_hang_the_query(clean_env: pytest.MonkeyPatch, api: responses.RequestsMock) -> None:
    first = execution(41, 1, "error", None, "id-42")  # tampered: 41 and 42 name each other as parent
    looping = execution(42, 1, "error", None, "id-41")
    api.get(f"{HOST}/api/v0/executions/{PROJECT_ID}:42/", json=looping)
    api.get(f"{HOST}/api/v0/executions/id-41/", json=first)
    api.get(f"{HOST}/api/v0/executions/", json={"results": [looping, first], "next": None})

    attempts = chains.chain(retry.ValohaiAPI(TOKEN), PROJECT_ID, 42)
    assert [item["counter"] for item in attempts] == [41, 42]
    assert len(api.calls) == 3
