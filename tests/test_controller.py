"""The retry controller against a strictly mocked API: what it reads, decides and sends."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import (
    AUTH,
    HOST,
    PROJECT_ID,
    STATUS_URL,
    FakeClock,
    load_fixture,
    records,
    set_tags,
    status_details,
)

import controller
import retry

FAILED_ID = "0193a8e2-0000-7d0e-8b1a-00000000c0de"
FAILED_URL = f"{HOST}/api/v0/executions/{FAILED_ID}/"
EVENTS_URL = f"{FAILED_URL}events/"
LIST_URL = f"{HOST}/api/v0/executions/"
DATA_URL = f"{HOST}/api/v0/data/"


def settings(**changes: Any) -> argparse.Namespace:
    return controller._parser().parse_args([f"--{name}={value}" for name, value in changes.items()])


def crashed(**changes: Any) -> dict[str, Any]:
    detail = load_fixture("execution-detail.json")
    detail.update({"id": FAILED_ID, "counter": 77, "status": "error", "status_detail": None, **changes})
    return detail


def log(*lines: str) -> dict[str, Any]:
    events = [{"time": "2026-11-20T09:14:05.000000", "stream": "stderr", "message": line} for line in lines]
    return {"total": len(events), "truncated": False, "events": events}


@pytest.fixture(autouse=True)
def controller_execution(config_dir: Path) -> None:
    """This process is an execution of the step retry-controller."""
    set_tags(config_dir, [], **{"execution-step": "retry-controller", "execution-counter": 90})


@pytest.fixture
def run_controller(config_dir: Path, runtime: retry.Runtime) -> Callable[..., int]:
    def run(**changes: Any) -> int:
        return controller.control(FAILED_ID, settings(**changes), runtime)

    return run


def test_a_failure_without_a_verdict_is_retried_once_from_its_newest_checkpoint(
    api: responses.RequestsMock, run_controller: Callable[..., int], clock: FakeClock
) -> None:
    api.get(FAILED_URL, json=crashed(), match=[AUTH])
    api.get(EVENTS_URL, json=log("Epoch 3", "Killed"), match=[AUTH])
    api.get(LIST_URL, json={"count": 1, "next": None, "results": [crashed()]}, match=[AUTH])
    datum = {"id": "d-2", "name": "checkpoint-epoch-0002.json", "ctime": "2026-11-20T09:14:20Z"}
    datum["output_execution"] = {"id": FAILED_ID, "counter": 77}  # type: ignore[assignment]
    api.get(DATA_URL, json={"count": 1, "next": None, "results": [datum]}, match=[AUTH])
    created = {"id": "id-78", "counter": 78}

    def is_the_retry(request: Any) -> tuple[bool, str]:
        body = json.loads(request.body)
        ok = body["tags"] == ["nightly", "retry: 1"] and body["inputs"]["checkpoint"] == ["datum://d-2"]
        ok = ok and body["environment_variables"]["RETRY_PARENT"] == FAILED_ID
        return ok, "" if ok else f"not the retry: {body}"

    api.post(LIST_URL, json=created, status=201, match=[AUTH, is_the_retry])
    api.post(STATUS_URL)

    assert run_controller() == 0
    assert clock.slept == 60  # the failed execution's delay parameter, waited here
    why = "ended 'error' without a verdict (killed, crashed, or its machine was lost)"
    assert records(api)[1:] == [retry.Record("started", 1, "id-78", f"ExecutionLost: {why}", failed=FAILED_ID)]
    assert status_details(api) == [
        "Waiting 60 s here before starting retry 1/3 of #77",
        f"Started retry 1/3 of #77 as #78: #77 {why}",
    ]
    assert records(api)[0] == retry.Record("waiting", 1, cause=f"ExecutionLost: {why}", failed=FAILED_ID)  # not a chain
    assert len(api.calls) <= 8


@pytest.mark.parametrize(
    ("detail", "said"),
    [
        (crashed(status="stopped"), "Nothing to do: #77 was stopped by a user"),
        (crashed(status="complete"), "Nothing to do: #77 has not failed (it is complete)"),
        (
            crashed(status_detail=retry.status_with_record("Gave up", retry.Record("gave_up", 3))),
            "Nothing to do: retry.py dealt with #77 itself (its record says gave_up)",
        ),
        (
            crashed(pipeline={"id": "p-1", "counter": 4}),
            "Nothing to do: #77 ran in a pipeline, which owns retrying: give its node on-error: retry",
        ),
        (crashed(step="retry-controller"), "Nothing to do: #77 is a retry controller itself; read its log"),
    ],
    ids=["stopped", "complete", "recorded", "pipeline", "controller"],
)
def test_nothing_is_started_for_what_needs_no_retry(
    api: responses.RequestsMock, run_controller: Callable[..., int], detail: dict[str, Any], said: str
) -> None:
    api.get(FAILED_URL, json=detail)
    api.post(STATUS_URL)

    assert run_controller() == 0
    assert status_details(api) == [said]
    assert [record.outcome for record in records(api)] == ["stood_down"]  # the report leaves it out
    assert records(api)[0].failed == FAILED_ID


def test_a_failure_a_restart_cannot_fix_is_not_retried(
    api: responses.RequestsMock, run_controller: Callable[..., int]
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log("Traceback (most recent call last):", "ModuleNotFoundError: No module named 'torch'"))
    api.post(STATUS_URL)

    assert run_controller() == 0
    assert status_details(api) == [
        "Not retried (not a transient error) for #77: ValueError: its log shows 'Traceback (most recent call last)'"
    ]


def test_signatures_are_a_setting(api: responses.RequestsMock, run_controller: Callable[..., int]) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log("CUDA error: an illegal memory access was encountered"))
    api.post(STATUS_URL)

    assert run_controller(not_transient="illegal memory access") == 0
    assert "its log shows 'illegal memory access'" in status_details(api)[0]


def test_a_chain_out_of_retries_gives_up(api: responses.RequestsMock, run_controller: Callable[..., int]) -> None:
    detail = crashed(tags=["nightly", "retry: 3"])
    api.get(FAILED_URL, json=detail)
    api.get(EVENTS_URL, json=log("Killed"))
    api.post(STATUS_URL)

    assert run_controller() == 0
    assert status_details(api)[0].startswith("Gave up after 3 retries for #77: ExecutionLost: ended 'error'")


def test_the_chain_settings_come_from_the_failed_execution_else_from_the_controller() -> None:
    assert controller._chain_settings(crashed(), settings(retries=9, delay=5)) == {"retries": 3, "delay": 60}
    odd = crashed(parameters={"retries": "three", "delay": True})
    assert controller._chain_settings(odd, settings(retries=9, delay=5)) == {"retries": 9, "delay": 5.0}


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        ({"data": {"valohai.execution-id": FAILED_ID}}, FAILED_ID),
        ({"data": {"valohai.project-id": PROJECT_ID, "valohai.execution-counter": 77}}, f"{PROJECT_ID}:77"),
    ],
)
def test_the_failed_execution_is_read_from_the_payloads_data(payload: dict[str, Any], found: str) -> None:
    assert controller.failed_execution(payload) == found


@pytest.mark.parametrize("payload", [{}, {"data": "x"}, {"data": {"valohai.execution-counter": 7}}])
def test_a_payload_that_names_no_execution_is_one_line(payload: dict[str, Any]) -> None:
    with pytest.raises(retry.ConfigError, match=r"the payload names no execution"):
        controller.failed_execution(payload)


def test_without_a_payload_the_controller_says_how_it_is_launched(
    config_dir: Path, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from valohai.internals import global_state

    monkeypatch.setattr(global_state, "loaded", False)
    monkeypatch.setattr(global_state, "inputs", {})
    assert controller.main([], runtime=runtime) == retry.EXIT_BAD_CONFIG
    assert "no payload: this step is launched by a notification trigger whose Payload input name is payload" in (
        capsys.readouterr().err
    )


def test_an_api_that_fails_leaves_a_record_that_the_failed_execution_was_not_relaunched(
    api: responses.RequestsMock, config_dir: Path, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": {"valohai.execution-id": FAILED_ID}})
    api.get(FAILED_URL, status=403, json={"detail": "You do not have permission to perform this action."})
    api.post(STATUS_URL)

    assert controller.main([], runtime=runtime) == retry.EXIT_RELAUNCH_FAILED
    assert records(api) == [retry.Record("not_started", 0, failed=FAILED_ID)]
    assert status_details(api)[0].startswith("The retry controller could not act: ")
    assert "[retry-controller] The retry controller could not act: " in capsys.readouterr().err


def test_a_create_that_may_have_gone_through_is_recorded_as_unconfirmed(
    api: responses.RequestsMock, run_controller: Callable[..., int]
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log("Killed"))
    api.get(LIST_URL, json={"count": 1, "next": None, "results": [crashed()]})
    api.get(DATA_URL, json={"count": 0, "next": None, "results": []})
    for _ in range(retry.MAX_CREATES):
        api.post(LIST_URL, status=502)
    api.post(STATUS_URL)

    assert run_controller() == retry.EXIT_RETRY_UNCONFIRMED
    assert [record.outcome for record in records(api)] == ["waiting", "unconfirmed"]
    assert status_details(api)[1].startswith("Retry 1/3 of #77 may have been started, but the API never confirmed it")


def test_the_failure_of_a_retry_controller_starts_nothing_and_asks_no_api(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Controllers that fail (no token, API down) must not launch one another without end.
    data = {
        "valohai.execution-id": FAILED_ID,
        "valohai.execution-counter": 77,
        "valohai.execution-step": "retry-controller",
    }
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": data})
    monkeypatch.delenv("VH_API_TOKEN")
    api.post(STATUS_URL)

    assert controller.main([], runtime=runtime) == 0
    assert status_details(api) == ["Nothing to do: #77 is a retry controller itself; read its log"]


def test_a_search_for_an_existing_retry_that_hits_its_bound_still_starts_the_retry(
    api: responses.RequestsMock, run_controller: Callable[..., int], capsys: Any
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log("Killed"))
    endless = {"next": "more", "results": [{"id": "id-x", "counter": 99_999, "tags": []}]}
    api.get(LIST_URL, json=endless)  # one page only: past it, the copies settle which one works
    api.get(DATA_URL, json={"count": 0, "next": None, "results": []})
    api.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    api.post(STATUS_URL)

    assert run_controller() == 0
    assert [record.outcome for record in records(api)] == ["waiting", "started"]
    assert "could not check that #77 has no retry 1/3 yet, so starting it: " in capsys.readouterr().err
