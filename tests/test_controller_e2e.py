"""The retry controller on the stand-in, launched by its trigger on "Execution fails"."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from standin import Execution, Fault, Platform

import retry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def trains(platform: Platform, executions: list[Execution]) -> list[Execution]:
    return [e for e in executions if e.step == "train"]


def did_work(execution: Execution) -> bool:
    return any(line.startswith("Training epochs") for _, _, line in execution.log)


def epochs_logged(execution: Execution) -> list[int]:
    return [
        json.loads(line)["epoch"] for _, stream, line in execution.log if stream == "stdout" and line.startswith("{")
    ]


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    running = Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"})
    running.trigger_on = {"error"}
    return running


def test_a_crash_is_retried_once_from_the_newest_checkpoint_and_the_retry_completes(platform: Platform) -> None:
    with platform:
        platform.start(failure_type="crash", delay=1, retries=3)
        executions = platform.wait_until_idle(100)
        [controller] = platform.controllers()
        controller_calls = platform.calls_of(controller)
        assert platform.leaks() == []
    crashed, retried = trains(platform, executions)
    assert (crashed.status, crashed.exit_code, crashed.record) == ("error", -9, None)  # killed: no verdict
    assert epochs_logged(crashed) == [1, 2]
    assert (retried.tags, retried.status) == (["nightly", "retry: 1"], "complete")
    assert retried.environment_variables["RETRY_PARENT"] == crashed.id
    assert re.search(r"^Resuming from checkpoint-epoch-0002\.json", retried.log_text(), re.MULTILINE)
    assert epochs_logged(retried) == [3, 4, 5]
    assert controller.record == retry.Record(
        "started",
        1,
        retried.id,
        controller.record.cause,
        failed=crashed.id,  # type: ignore[union-attr]
    )
    started = f"Started retry 1/3 of #{crashed.counter} as #{retried.counter}: #{crashed.counter} ended 'error'"
    assert controller.verdict is not None and controller.verdict.startswith(f"{started} without a verdict")
    assert controller.exit_code == 0 and len(controller_calls) <= 8


def test_a_failure_retry_py_relaunched_itself_gets_nothing_more(platform: Platform) -> None:
    with platform:
        platform.start(failure_type="connection", delay=0, retries=3)
        executions = platform.wait_until_idle(100)
    failed, retried = trains(platform, executions)
    [controller] = platform.controllers()
    assert failed.record is not None and failed.record.heir == retried.id
    assert (
        controller.verdict == f"Nothing to do: retry.py dealt with #{failed.counter} itself (its record says started)"
    )
    assert len(platform.creates()) == 1  # retry.py's own create, nothing from the controller


def test_an_error_judged_not_transient_gets_nothing(platform: Platform) -> None:
    with platform:
        platform.start(failure_type="bug", failure_rate=1.0)
        executions = platform.wait_until_idle(100)
    [failed] = trains(platform, executions)
    [controller] = platform.controllers()
    assert (
        controller.verdict
        == f"Nothing to do: retry.py dealt with #{failed.counter} itself (its record says not_retried)"
    )
    assert platform.creates() == []


def test_a_stopped_execution_gets_nothing(tmp_path: Path) -> None:
    with Platform(tmp_path, epoch_seconds=5) as platform:
        platform.trigger_on = {"stopped"}  # as with a trigger on "Execution is stopped" too
        execution = platform.start(failure_rate=0.0)
        deadline = time.monotonic() + 20
        while execution.status != "started" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        platform.stop(execution)
        platform.wait_until_idle(100)
    [controller] = platform.controllers()
    assert execution.status == "stopped"
    assert controller.verdict == f"Nothing to do: #{execution.counter} was stopped by a user"
    assert platform.creates() == []


def test_a_payload_handled_twice_starts_nothing_the_second_time(platform: Platform) -> None:
    with platform:
        platform.start(failure_type="crash", delay=0, retries=3)
        platform.wait_until_idle(100)
        crashed = trains(platform, list(platform.executions.values()))[0]
        platform.fire_trigger(crashed)  # the same event, delivered again
        platform.wait_until_idle(100)
    first, second = platform.controllers()
    retried = trains(platform, list(platform.executions.values()))[1]
    assert first.record is not None and first.record.heir == retried.id
    assert second.verdict == f"Nothing to do: #{crashed.counter} already has retry 1/3: #{retried.counter}"
    assert len(platform.creates()) == 1


def test_a_trigger_that_fires_twice_at_once_still_leaves_one_retry_working(platform: Platform) -> None:
    with platform:
        platform.trigger_fires = 2
        platform.start(failure_type="crash", delay=0, retries=3)
        executions = platform.wait_until_idle(100)
    crashed, *copies = trains(platform, executions)
    assert 1 <= len(copies) <= 2
    assert [did_work(copy) for copy in copies].count(True) == 1  # a copy made by both stood down
    assert all(copy.environment_variables["RETRY_PARENT"] == crashed.id for copy in copies)


def test_two_controllers_at_once_and_a_copy_that_crashes_leave_one_chain(tmp_path: Path) -> None:
    # One controller's create answer is slow, so its copy starts after the other copy crashed
    # (a repeatable crash). The lower copy counts all the same: its crash gets retry 2 from the
    # next controller, and the higher copy stands down, so the chain does not go on twice.
    with Platform(tmp_path, read_timeout=10) as platform:
        platform.trigger_on = {"error"}
        platform.trigger_fires = 2
        platform.override(1, failure_rate=1.0)  # retry 1 crashes again
        platform.override(2, failure_rate=0.0)
        platform.inject(Fault("POST", r"/api/v0/executions/", "late", seconds=3.0, times=1))
        platform.start(failure_type="crash", failure_rate=1.0, delay=0, retries=3)
        executions = platform.wait_until_idle(100)
    attempts = trains(platform, executions)
    seen = [(e.counter, e.tags, e.status, did_work(e)) for e in attempts]
    assert [did_work(e) for e in attempts if "retry: 1" in e.tags].count(True) == 1, seen  # the other stood down
    assert [did_work(e) for e in attempts if "retry: 2" in e.tags].count(True) == 1, seen
