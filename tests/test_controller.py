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


def expect_a_retry_started(api: responses.RequestsMock) -> None:
    """What follows the failed execution's detail and log when nothing stops the controller: no
    retry of it found, no outputs, the create (answered #78) and the status details."""
    api.get(LIST_URL, json={"count": 1, "next": None, "results": [crashed()]})
    api.get(DATA_URL, json={"count": 0, "next": None, "results": []})
    api.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    api.post(STATUS_URL)


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
    policy = controller._policy(settings(retries=9, delay=5), crashed()["parameters"])
    assert (policy.retries, policy.delay) == (3, 60)
    for odd in ({"retries": "three", "delay": True}, {"retries": 101, "delay": retry.MAX_WAIT + 1}, ["retries"], None):
        policy = controller._policy(settings(retries=9, delay=5), odd)
        assert (policy.retries, policy.delay) == (9, 5.0)


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


# --- what the log tells, and answers or settings it cannot use -----------------------------


def test_a_bug_after_a_successful_retry_run_is_not_retried(
    api: responses.RequestsMock, run_controller: Callable[..., int]
) -> None:
    # retry.py's lines come first (its run succeeded); the traceback after them is the job's own.
    lines = ["[retry] attempt 1 of up to 4, running on Valohai", "[retry] the job succeeded on attempt 1"]
    api.get(EVENTS_URL, json=log(*lines, "Traceback (most recent call last):", "ValueError: bad row"))
    api.get(FAILED_URL, json=crashed())
    api.post(STATUS_URL)

    assert run_controller() == 0
    assert [record.outcome for record in records(api)] == ["not_retried"]


def test_a_traceback_retry_py_printed_before_the_machine_was_lost_is_retried(
    api: responses.RequestsMock, run_controller: Callable[..., int]
) -> None:
    traceback = ["Traceback (most recent call last):", "ConnectionError: db down"]
    api.get(EVENTS_URL, json=log(*traceback, "[retry] waiting 60 s in this execution before starting retry 1"))
    api.get(FAILED_URL, json=crashed())
    expect_a_retry_started(api)

    assert run_controller() == 0
    assert [record.outcome for record in records(api)] == ["waiting", "started"]


def test_a_verdict_whose_record_only_reached_the_log_is_respected(
    api: responses.RequestsMock, runtime: retry.Runtime, run_controller: Callable[..., int], capsys: Any
) -> None:
    # retry.py judged a bug not transient, but could not write its status detail: the record it
    # printed with its verdict is what the controller reads.
    for _ in range(3):
        api.post(STATUS_URL, status=503)
    assert retry.handle_failure(ValueError("bad row"), retry.Policy(), runtime=runtime) == retry.EXIT_GAVE_UP
    printed = capsys.readouterr().err.splitlines()
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log(*printed))
    api.post(STATUS_URL)

    assert run_controller() == 0
    said = "Nothing to do: retry.py dealt with #77 itself (the record in its log says not_retried)"
    assert status_details(api)[-1] == said
    assert records(api)[-1] == retry.Record("stood_down", 0, failed=FAILED_ID)


def test_a_log_that_cannot_be_read_costs_only_the_log(
    api: responses.RequestsMock, run_controller: Callable[..., int], capsys: Any
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, status=404, json={"detail": "Not found."})
    expect_a_retry_started(api)

    assert run_controller() == 0
    assert [record.outcome for record in records(api)] == ["waiting", "started"]
    assert "could not read #77's log, so judging it by its status alone: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "odd",
    [{"environment_variables": [{"name": ["LOG_LEVEL"], "value": "x"}]}, {"environment_variables": [{"name": {}}]}],
    ids=["variables-named-by-a-list", "variables-named-by-an-object"],
)
def test_fields_of_a_shape_never_seen_end_in_one_line_and_a_record(
    api: responses.RequestsMock,
    config_dir: Path,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    odd: dict[str, Any],
) -> None:
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": {"valohai.execution-id": FAILED_ID}})
    api.get(FAILED_URL, json=crashed(**odd))
    api.get(EVENTS_URL, json=log("Killed"))
    api.get(LIST_URL, json={"count": 1, "next": None, "results": [crashed()]})
    api.post(STATUS_URL)

    assert controller.main([], runtime=runtime) == retry.EXIT_RELAUNCH_FAILED
    assert records(api)[-1] == retry.Record("not_started", 0, failed=FAILED_ID)  # not left "waiting"
    [line] = [line for line in capsys.readouterr().err.splitlines() if "could not act" in line]
    assert line.startswith("[retry-controller] The retry controller could not act: ")


def test_a_garbled_status_is_a_failure_without_a_verdict(
    api: responses.RequestsMock, run_controller: Callable[..., int]
) -> None:
    api.get(FAILED_URL, json=crashed(status=["error"]))
    api.get(EVENTS_URL, json=log("Killed"))
    expect_a_retry_started(api)

    assert run_controller() == 0
    why = "without a verdict (killed, crashed, or its machine was lost)"
    assert status_details(api)[-1] == f"Started retry 1/3 of #77 as #78: #77 ended ['error'] {why}"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--retires=0"], "invalid parameter: unrecognized arguments: --retires=0"),
        (["--retries=three"], "invalid parameter: argument --retries: invalid int value: 'three'"),
        (["--checkpoint_pattern= "], "checkpoint_pattern must be a file name pattern, got ' '"),
        (["--checkpoint=../x"], "checkpoint must be the name of one of the step's inputs, got '../x'"),
    ],
)
def test_settings_retry_py_would_refuse_are_refused_before_anything_is_read(
    api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any, argv: list[str], said: str
) -> None:
    api.post(STATUS_URL)

    assert controller.main(argv, runtime=runtime) == retry.EXIT_BAD_CONFIG
    assert status_details(api) == [f"The retry controller could not act: {said}"]
    assert capsys.readouterr().err == f"[retry-controller] The retry controller could not act: {said}\n"


@pytest.mark.parametrize("execution_id", ["x" * 3_000_000, "id\nwith a line break", "../../projects/"])
def test_a_payload_id_that_is_no_execution_id_is_refused_in_one_short_line(
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    execution_id: str,
) -> None:
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": {"valohai.execution-id": execution_id}})
    api.post(STATUS_URL)

    assert controller.main([], runtime=runtime) == retry.EXIT_BAD_CONFIG
    [line] = capsys.readouterr().err.splitlines()
    assert "is not an execution id" in line and len(line) < 200


def test_the_token_is_never_printed_by_the_controller(
    api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    token = runtime.environ["VH_API_TOKEN"]
    data = {"valohai.execution-id": token, "valohai.execution-step": "retry-controller"}
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": data})
    api.post(STATUS_URL)

    controller.main([], runtime=runtime)
    assert token not in capsys.readouterr().err
