"""`python chains.py report` on real chains: the stand-in runs them, the report must count what it saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from standin import PROJECT_ID, PROJECT_NAME, Execution, Fault, Platform

import chains
import retry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parent.parent
CHAIN_TIMEOUT = 100.0  # a hang guard, sized for a machine many times as busy
CONNECTION = "ConnectionError: could not connect to db.internal:<n>: connection refused"
BUG = "ValueError: feature matrix has <n> columns, the model expects <n>"
INVALID = "invalid retry settings: delay (<n> s) must not exceed max_delay (<n> s)"


def start_mixed_chains(platform: Platform) -> None:
    """Seven chains at once, each ending its own way (delay 0: nothing waits)."""
    platform.override_chain("flaky-1", 1, failure_rate=0.0)
    platform.override_chain("flaky-2", 2, failure_rate=0.0)
    platform.start("steady", failure_rate=0.0)  # succeeds on the first attempt
    platform.start("flaky-1", failure_rate=1.0, delay=0)  # recovers on retry 1
    platform.start("flaky-2", failure_rate=1.0, delay=0)  # recovers on retry 2
    platform.start("down", failure_rate=1.0, delay=0, retries=1)  # gives up after 1 retry
    platform.start("bug", failure_rate=1.0, failure_type="bug")  # not retried
    # The retry cannot be created: the API address is refused before any request.
    platform.start("no-relaunch", failure_rate=1.0, delay=0, variables={"VALOHAI_HOST": "http://example.com"})
    # Invalid retry settings (delay above max_delay): exit 2 before any status detail.
    platform.start("bad-settings", failure_rate=1.0, delay=4000)


def test_the_report_counts_what_the_standin_recorded(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with Platform(tmp_path) as platform:
        start_mixed_chains(platform)
        executions = platform.wait_until_idle(CHAIN_TIMEOUT)
        document = json.loads(report(platform, "--json"))  # the command, as a user runs it
        assert platform.token is not None
        clean_env.setenv("VALOHAI_HOST", platform.host)  # the text, in this process: no second start-up
        clean_env.setenv("VH_API_TOKEN", platform.token)
        assert chains.main(["report", "--project", PROJECT_ID, "--days", "1"]) == 0
        text = capsys.readouterr().out
        assert platform.leaks() == []

    expected = recorded(executions)
    assert {key: document[key] for key in expected} == expected
    assert {cause["cause"]: cause["count"] for cause in document["causes"]} == recorded_causes(executions)
    examples = {cause["cause"]: cause["example"] for cause in document["causes"]}
    assert examples == {text: newest_example(executions, text, platform.host) for text in examples}
    assert document["whole_period"] is True
    # Each way of ending happened, so the comparison above is not vacuous.
    assert expected["recovered"] == {"1": 1, "2": 1}
    assert [expected[key] for key in ("first_attempt", "gave_up", "not_retried", "relaunch_failed")] == [1] * 4
    assert (expected["no_verdict"], expected["running"], expected["chains"]) == (1, 0, 7)
    assert text.splitlines()[1] == (
        "Chains: 7 | succeeded on the first attempt: 1 | recovered: 2 (retry 1: 1, retry 2: 1) | gave up: 1"
        " | not retried (not transient): 1 | could not relaunch: 1 | still running: 0 | ended without a verdict: 1"
    )


def test_a_duplicate_that_stood_down_is_counted_apart(tmp_path: Path) -> None:
    with Platform(tmp_path) as platform:
        # The platform stores the create 1.5 s late, after the client's 1 s read timeout: the
        # failed attempt asks again, and the late copy stands down when it starts.
        platform.inject(Fault("POST", "/api/v0/executions/", "late", seconds=1.5))
        platform.override(1, failure_rate=0.0)
        platform.start(failure_rate=1.0, delay=0)
        executions = platform.wait_until_idle(CHAIN_TIMEOUT)
        document = json.loads(report(platform, "--json"))

    expected = recorded(executions)
    assert {key: document[key] for key in expected} == expected
    assert (expected["stood_down"], expected["chains"], expected["recovered"]) == (1, 1, {"1": 1})


def report(platform: Platform, *options: str) -> str:
    """Run the report as a user would, against the stand-in, and return what it printed."""
    assert platform.token is not None
    environ = {**os.environ, "VALOHAI_HOST": platform.host, "VH_API_TOKEN": platform.token}
    done = subprocess.run(
        [sys.executable, str(ROOT / "chains.py"), "report", "--project", PROJECT_ID, "--days", "1", *options],
        env=environ,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


# --- what the stand-in recorded, read without the report's help --------------------------


def did_work(execution: Execution) -> bool:
    return any(line.startswith("Training ") for _, _, line in execution.log)


def stood_down(execution: Execution) -> bool:
    return execution.exit_code == 0 and not did_work(execution)


def recorded(executions: list[Execution]) -> dict[str, Any]:
    """The report's numbers, from exit codes, tags, RETRY_PARENT and durations as the stand-in saw them."""
    attempts = [execution for execution in executions if not stood_down(execution)]
    parents = {execution.environment_variables.get("RETRY_PARENT") for execution in attempts}
    lasts = [execution for execution in attempts if execution.id not in parents]  # one per chain
    outcomes = Counter(outcome(last) for last in lasts)
    recovered = Counter(str(last.retry) for last in lasts if last.exit_code == 0 and last.retry)
    failed = [execution for execution in executions if execution.exit_code != 0]
    return {
        "executions": len(executions),
        "chains": len(lasts),
        "first_attempt": outcomes["first_attempt"],
        "recovered": dict(recovered),
        "gave_up": outcomes["gave_up"],
        "not_retried": outcomes["not_retried"],
        "relaunch_failed": outcomes["relaunch_failed"],
        "running": outcomes["running"],
        "no_verdict": outcomes["no_verdict"],
        "stood_down": len(executions) - len(attempts),
        "duplicates": 0,
        "failed_attempts": len(failed),
        "failed_seconds": sum(duration(execution) for execution in failed),
        "failed_without_duration": 0,
    }


def outcome(last: Execution) -> str:
    """How a chain ended, by its last attempt's exit code (see retry.py's EXIT_* codes)."""
    if last.exit_code == 0:
        return "recovered" if last.retry else "first_attempt"
    if last.exit_code == retry.EXIT_GAVE_UP:
        return "not_retried" if last.parameters["failure_type"] == "bug" else "gave_up"
    if last.exit_code == retry.EXIT_RELAUNCH_FAILED:
        return "relaunch_failed"
    if last.exit_code == retry.EXIT_BAD_CONFIG:
        return "no_verdict"  # invalid settings: not a verdict on the error, nothing was tried
    return "running"


def duration(execution: Execution) -> int:
    assert execution.ended_at is not None and execution.started_at is not None
    return round(execution.ended_at - execution.started_at)


def cause(execution: Execution) -> str:
    if execution.exit_code == retry.EXIT_BAD_CONFIG:
        return INVALID
    return BUG if execution.parameters["failure_type"] == "bug" else CONNECTION


def recorded_causes(executions: list[Execution]) -> dict[str, int]:
    return dict(Counter(cause(execution) for execution in executions if execution.exit_code != 0))


def newest_example(executions: list[Execution], text: str, host: str) -> str:
    """The display URL of the newest failed execution with this cause."""
    newest = max((e for e in executions if e.exit_code != 0 and cause(e) == text), key=lambda e: e.counter)
    return f"{host}/p/{PROJECT_NAME}/execution/{newest.id}/"
