"""Whole chains of real train.py processes against the local Valohai stand-in."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from standin import Execution, Fault, Platform

import retry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CHAIN_TIMEOUT = 100.0  # a hang guard, sized for a machine many times as busy
CREATE = "/api/v0/executions/"
DETAIL = r"/api/v0/executions/[0-9a-f-]+/"
JOB = str(Path(__file__).resolve().parent / "jobs" / "job.py")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with Platform(tmp_path) as running:
        yield running
        assert running.leaks() == []  # the token never shows up anywhere it should not


def run_chain(platform: Platform, **parameters: object) -> list[Execution]:
    platform.start(**parameters)
    return platform.wait_until_idle(CHAIN_TIMEOUT)


def assert_recovered_on_retry_1(platform: Platform, executions: list[Execution]) -> None:
    first, second = executions
    assert (first.status, first.exit_code) == ("error", retry.EXIT_RETRY_STARTED)
    assert first.verdict is not None
    assert first.verdict.endswith(f"retry 1/3 started as #{second.counter}")
    assert first.record == retry.Record("started", 1, heir=second.id, cause=first.record.cause)  # type: ignore[union-attr]
    assert (second.status, second.tags) == ("complete", ["nightly", "retry: 1"])
    assert second.environment_variables["RETRY_PARENT"] == first.id


def test_success_first_time_creates_nothing(platform: Platform) -> None:
    [execution] = run_chain(platform, failure_rate=0.0)
    assert (execution.status, execution.exit_code) == ("complete", 0)
    assert platform.creates() == []
    assert "Training complete" in execution.log_text()


def test_failure_then_recovery_on_retry_1(platform: Platform) -> None:
    platform.override(1, failure_rate=0.0)
    executions = run_chain(platform, failure_rate=1.0, delay=0)
    assert_recovered_on_retry_1(platform, executions)
    # The retry is an exact copy apart from its tags: same parameters as the user chose.
    assert executions[1].parameters == executions[0].parameters
    assert executions[1].title == "Nightly training"
    assert executions[1].environment_variables["LOG_LEVEL"] == "info"
    assert "VH_API_TOKEN" not in executions[1].environment_variables


def test_a_retry_finds_its_api_in_api_json_and_copies_the_whole_configuration(platform: Platform) -> None:
    platform.override(1, failure_rate=0.0)
    first, second = run_chain(platform, failure_rate=1.0, delay=0)
    assert_recovered_on_retry_1(platform, [first, second])
    # Valohai sets no VALOHAI_HOST: the API's address came from api.json's pre-signed URL.
    assert "VALOHAI_HOST" not in first.environ and "VALOHAI_HOST" not in second.environ
    assert {call.path for call in platform.calls} >= {"/api/v0/executions/", f"/api/v0/executions/{first.id}/"}
    # The same machine settings, priority and environment; the project's secrets inherited.
    assert second.options == {**first.options, "inherit_environment_variables": True}
    assert second.options["runtime_config"] == {"autorestart": False, "no_output_timeout": 3600}
    assert (second.environment, second.image, second.time_limit) == (first.environment, first.image, first.time_limit)
    assert second.environ["VH_API_TOKEN"] == platform.token


def test_never_recovers_after_three_retries(platform: Platform) -> None:
    executions = run_chain(platform, failure_rate=1.0, delay=0, retries=3)
    assert [e.tags for e in executions] == [["nightly"], *(["nightly", f"retry: {n}"] for n in (1, 2, 3))]
    assert [e.status for e in executions] == ["error"] * 4
    assert [e.exit_code for e in executions] == [75, 75, 75, retry.EXIT_GAVE_UP]
    assert executions[-1].verdict is not None
    assert executions[-1].verdict.startswith("Gave up after 3 retries: ConnectionError")
    assert [e.record.outcome for e in executions] == ["started"] * 3 + ["gave_up"]  # type: ignore[union-attr]
    assert len(platform.creates()) == 3


def test_a_bug_fails_once_and_creates_nothing(platform: Platform) -> None:
    [execution] = run_chain(platform, failure_rate=1.0, failure_type="bug")
    assert (execution.status, execution.exit_code) == ("error", retry.EXIT_GAVE_UP)
    assert execution.verdict is not None
    assert execution.verdict.startswith("Not retried (not a transient error): ValueError")
    assert platform.creates() == []


def test_missing_token_fails_clearly_and_creates_nothing(tmp_path: Path) -> None:
    with Platform(tmp_path, token=None) as platform:
        [execution] = run_chain(platform, failure_rate=1.0, delay=0)
    assert (execution.status, execution.exit_code) == ("error", retry.EXIT_RELAUNCH_FAILED)
    assert execution.status_detail is not None
    assert "VH_API_TOKEN is not set" in execution.status_detail
    stderr = [line for _, stream, line in execution.log if stream == "stderr"]  # stdout may come later
    assert "secret project environment variable" in stderr[-1]
    assert platform.creates() == []


def test_a_retry_without_the_token_warns_at_its_start_and_says_so_when_it_fails(tmp_path: Path) -> None:
    # The token was a secret of the first execution only: its value never leaves Valohai.
    with Platform(tmp_path, token_on_project=False) as platform:
        first, second = run_chain(platform, failure_rate=1.0, delay=0)
        assert platform.leaks() == []
    assert first.record is not None and first.record.heir == second.id
    assert "warning: VH_API_TOKEN is not set, so a failure here cannot start a retry" in second.log_text()
    assert (second.exit_code, second.tags) == (retry.EXIT_RELAUNCH_FAILED, ["nightly", "retry: 1"])
    assert second.verdict is not None and "VH_API_TOKEN is not set" in second.verdict


def recorded_times(events: Path) -> dict[tuple[str, int], float]:
    """What the job's processes stamped, by their own clocks: ``(event, attempt) -> time``."""
    return {
        (event["event"], event["attempt"]): event["time"] for event in map(json.loads, events.read_text().splitlines())
    }


def test_a_slow_status_detail_endpoint_does_not_hold_the_attempt(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    environ = {"JOB_EVENTS": str(events), "JOB_RECORD_EXIT": "1"}
    with Platform(tmp_path, script=JOB, extra_env=environ) as platform:
        platform.inject(Fault("POST", r".*/status-detail/", "slow", seconds=2.0, times=5))
        first, second = run_chain(platform, delay=0, retries=1)
        asked = max(call.at for call in platform.calls if "status-detail" in call.path and first.id in call.path)
    assert (first.exit_code, second.status) == (retry.EXIT_RETRY_STARTED, "complete")
    # The endpoint answers 2 s after it was asked; the attempt gave up after its 1 s read
    # timeout. Its own exit stamp against the moment the stand-in got the request (which,
    # stamped late under load, only makes the gap look smaller): below 2 s, it did not wait.
    assert recorded_times(events)[("exit", 0)] - asked < 2.0
    # Which of its timers gave up first (the 1 s read timeout, or the deadline for the whole
    # answer) is a race under load: the outcome is what counts.
    assert "could not set the status detail: " in first.log_text()


def test_the_failed_execution_exits_at_once_and_the_retry_keeps_the_delay(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with Platform(tmp_path, script=JOB, extra_env={"JOB_EVENTS": str(events), "JOB_RECORD_EXIT": "1"}) as platform:
        _, second = run_chain(platform, delay=3, retries=1)
        assert platform.leaks() == []
    # The processes' own clocks, not the moments the stand-in read their log lines.
    stamps = recorded_times(events)
    assert stamps[("exit", 0)] - stamps[("fail", 0)] < 3.0  # the failed execution does not wait out the delay
    # The failure is stamped before the not-before instant is computed, and that instant
    # is rounded up, so the retry's work starts no sooner than 3 s after the failure.
    assert stamps[("work", 1)] - stamps[("fail", 0)] >= 3.0
    waits = [detail for detail in second.status_details if detail.startswith("Waiting")]
    assert waits and all(re.fullmatch(r"Waiting [0-3](\.[0-9])? s before retry 1/1 starts work", d) for d in waits)


def did_work(execution: Execution) -> bool:
    return any(line.startswith("Training ") for _, _, line in execution.log)


def assert_one_copy_worked(first: Execution, copies: list[Execution]) -> Execution:
    """Exactly one copy of retry 1 did the work: the one ``first`` named; any other stood down."""
    assert first.record is not None and first.record.outcome == "started"
    [named] = [copy for copy in copies if copy.id == first.record.heir]
    assert did_work(named) and named.status == "complete"
    for copy in copies:
        assert copy.tags == ["nightly", "retry: 1"] and copy.environment_variables["RETRY_PARENT"] == first.id
        if copy is not named:
            assert not did_work(copy) and (copy.status, copy.exit_code) == ("complete", 0)
            stood = f"Stood down: #{first.counter} named another execution as retry 1/3"
            assert copy.verdict == f"{stood}; this copy did nothing"
            assert copy.log_text().splitlines()[-1] == f"[retry] {copy.verdict}"
    return named


@pytest.mark.parametrize(
    ("fault", "creates", "copies", "logged"),
    [
        (Fault("GET", DETAIL, "drop"), 1, 1, "could not reach"),
        (Fault("POST", CREATE, "drop"), 2, 1, "the answer was lost"),
        (Fault("POST", CREATE, "lost"), 2, 2, "the answer was lost"),
        (Fault("POST", CREATE, "slow", seconds=1.5), 2, 2, "the answer was lost"),
        (Fault("POST", CREATE, "status", status=500), 2, 1, "HTTP 500, the Valohai API failed; asking once more"),
        (Fault("POST", CREATE, "truncated"), 2, 2, "HTTP 201, but the answer was cut off"),
        (Fault("POST", CREATE, "trickle", seconds=0.3), 2, 2, "HTTP 201, but the answer was cut off"),
    ],
    ids=["detail-dropped", "create-dropped", "create-answer-lost", "create-slow", "create-500", "cut-off", "trickled"],
)
def test_api_faults_that_the_relaunch_survives_with_one_copy_working(
    platform: Platform, fault: Fault, creates: int, copies: int, logged: str
) -> None:
    platform.inject(fault)
    platform.override(1, failure_rate=0.0)
    first, *rest = run_chain(platform, failure_rate=1.0, delay=0)
    assert fault.times == 0  # the fault did happen
    assert (len(platform.creates()), len(rest)) == (creates, copies)
    assert_one_copy_worked(first, rest)
    assert logged in first.log_text() and "could not start" not in first.log_text()


@pytest.mark.parametrize(
    ("fault", "explained"),
    [
        (Fault("GET", DETAIL, "not-json"), "HTTP 200 with a body that is not JSON"),
        (Fault("POST", CREATE, "status", status=403), "VH_API_TOKEN is not allowed to do this"),
    ],
    ids=["detail-not-json", "create-403"],
)
def test_api_faults_that_end_the_chain_clearly(platform: Platform, fault: Fault, explained: str) -> None:
    platform.inject(fault)
    [execution] = run_chain(platform, failure_rate=1.0, delay=0)
    assert (execution.status, execution.exit_code) == ("error", retry.EXIT_RELAUNCH_FAILED)
    assert execution.status_detail is not None
    assert explained in execution.status_detail
    assert explained in execution.log_text().splitlines()[-1]


def test_the_standin_checks_tokens_and_payloads_like_valohai(platform: Platform) -> None:
    url = f"{platform.host}/api/v0/executions/"
    assert requests.get(url, params={"project": "x"}, timeout=5).status_code == 401
    headers = {"Authorization": f"Token {platform.token}"}
    payload = {"project": "nope", "commit": "main", "step": "evaluate", "parameters": {"delay": "soon"}, "tags": [1]}
    answer = requests.post(url, json=payload, headers=headers, timeout=5)
    assert answer.status_code == 400
    assert set(answer.json()) == {"project", "commit", "step", "parameters", "tags"}
    assert platform.executions == {}


# --- exactly one retry does the work, whatever the API does --------------------------


def test_a_create_stored_after_the_client_gave_up_leaves_one_retry_working(platform: Platform) -> None:
    # The platform stores the first create 2 s late, after the client's 1 s read timeout: the
    # payload goes again, two copies of retry 1 exist, and the record names the confirmed one.
    platform.inject(Fault("POST", CREATE, "late", seconds=2.0))
    platform.override(1, failure_rate=0.0)
    first, *copies = run_chain(platform, failure_rate=1.0, delay=0)
    assert len(copies) == 2
    named = assert_one_copy_worked(first, copies)
    assert first.verdict is not None and first.verdict.endswith(f"started as #{named.counter}")


def test_a_sweep_of_250_look_alikes_costs_a_copy_one_request_to_know_its_place(platform: Platform) -> None:
    # 250 look-alike retries of other chains appear while the answer is lost; each copy of
    # this retry asks its parent only, whatever the project holds.
    platform.inject(Fault("POST", CREATE, "lost", others=250))
    platform.override(1, failure_rate=0.0)
    first, *copies = run_chain(platform, failure_rate=1.0, delay=0)
    assert len(copies) == 2
    assert_one_copy_worked(first, copies)
    assert platform.list_calls() == []
    for copy in copies:
        api_calls = [call for call in platform.start_calls(copy) if "status-detail" not in call.path]
        assert [call.path for call in api_calls] == [f"/api/v0/executions/{first.id}/"]


def test_run_in_a_worker_thread_still_ends_the_failed_execution_as_an_error(tmp_path: Path) -> None:
    with Platform(tmp_path, script=JOB, extra_env={"JOB_THREAD": "1"}) as platform:
        first, second = run_chain(platform, delay=0, retries=1)
        assert platform.leaks() == []
    assert (first.status, first.exit_code) == ("error", retry.EXIT_RETRY_STARTED)
    assert "ending the whole process with exit code 75" in first.log_text()
    assert (second.status, second.exit_code) == ("complete", 0)
    assert did_work(second) and not did_work(first)


def test_a_failed_attempt_whose_job_left_a_thread_running_ends_at_once(tmp_path: Path) -> None:
    with Platform(tmp_path, script=JOB, extra_env={"JOB_HEARTBEAT": "1"}) as platform:
        first, second = run_chain(platform, delay=0, retries=1)
    assert (first.exit_code, second.exit_code) == (retry.EXIT_RETRY_STARTED, 0)
    assert first.ended_at is not None and first.failed_at is not None
    assert first.ended_at - first.failed_at < 15  # not the heartbeat's 60 s
    assert "not waiting for its threads heartbeat" in first.log_text()
