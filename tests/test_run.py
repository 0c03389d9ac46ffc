"""The entry point: waiting for its turn, local relaunches, exit codes."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import STATUS_URL, FakeClock, Spawned, connection_error, set_tags

import retry


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat()


def failing() -> None:
    raise connection_error()


def test_success_returns_the_result(clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned) -> None:
    assert retry.run(lambda: 42, retries=2, runtime=runtime) == 42
    assert spawned.calls == []


def test_invalid_settings_exit_with_the_config_code(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, capsys: Any
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        retry.run(lambda: None, retries=-1, runtime=runtime)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    assert "invalid retry settings: retries must be an integer from 0 to 100, got -1" in capsys.readouterr().err


def test_local_failure_relaunches_the_same_command_as_a_new_process(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, clock: FakeClock, capsys: Any
) -> None:
    clean_env.setitem(retry._ENVIRON_AT_START, "SOME_SETTING", "kept")  # as the command started
    clean_env.setenv("SOME_SETTING", "changed by the job")  # a fresh run of the command does not see it
    spawned.exit_code = 0

    with pytest.raises(SystemExit) as exit_info:
        retry.run(failing, retries=2, delay=5, runtime=runtime)

    assert exit_info.value.code == 0  # the chain's outcome is the last attempt's
    [(argv, env)] = spawned.calls
    assert argv == ["python", "train.py", "--delay=5"]
    assert env["RETRY_LOCAL_NUMBER"] == "1"
    assert env["SOME_SETTING"] == "kept"
    assert retry.parse_instant(env["RETRY_NOT_BEFORE"]) == pytest.approx(clock.now_value + 5)
    assert clock.sleeps == []
    err = capsys.readouterr().err
    assert "attempt 1 of up to 3, running locally" in err
    assert "starting retry 1/2: the same command, in this process" in err


def test_local_retry_waits_for_its_turn_then_works(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    clean_env.setenv("RETRY_NOT_BEFORE", iso(clock.now_value + 23))
    started_at: list[float] = []

    retry.run(lambda: started_at.append(clock.now()), retries=3, runtime=runtime)

    assert started_at == [clock.now_value] and clock.slept == pytest.approx(23)
    assert clock.sleeps == [10, 10, pytest.approx(3)]
    err = capsys.readouterr().err
    assert "attempt 2 of up to 4, running locally as 'retry: 1'" in err
    assert "retry 1/3 waits 23 s before it starts work" in err
    assert "  13 s left of the wait" in err and "  3 s left of the wait" in err


def test_a_passed_not_before_costs_no_wait(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, clock: FakeClock
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    clean_env.setenv("RETRY_NOT_BEFORE", iso(clock.now_value - 100))
    retry.run(lambda: None, runtime=runtime)
    assert clock.sleeps == []


@pytest.mark.parametrize("value", ["tomorrow-ish", "2999-01-01T00:00:00Z"])
def test_a_bad_or_far_not_before_is_clamped_to_the_longest_wait(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, clock: FakeClock, capsys: Any, value: str
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "2")
    clean_env.setenv("RETRY_NOT_BEFORE", value)
    retry.run(lambda: None, delay=5, max_delay=30, runtime=runtime)
    assert clock.slept == 30
    assert "warning: RETRY_NOT_BEFORE" in capsys.readouterr().err


def test_local_exhaustion_gives_up_without_a_new_process(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "2")
    with pytest.raises(SystemExit) as exit_info:
        retry.run(failing, retries=2, runtime=runtime)
    assert exit_info.value.code == retry.EXIT_GAVE_UP
    assert spawned.calls == []
    assert "Gave up after 2 retries: ConnectionError" in capsys.readouterr().err


def test_local_mode_needs_no_token(clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned) -> None:
    with pytest.raises(SystemExit):
        retry.run(failing, runtime=runtime)
    assert len(spawned.calls) == 1


def test_keyboard_interrupt_is_never_retried(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        retry.run(interrupted, runtime=runtime)
    assert spawned.calls == []


def test_a_retry_on_valohai_waits_and_says_so_in_the_status_detail(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_tags(config_dir, ["nightly", "retry: 2"])
    monkeypatch.setenv("RETRY_NOT_BEFORE", iso(clock.now_value + 23))
    api.post(STATUS_URL)

    retry.run(lambda: None, retries=3, runtime=runtime)

    assert clock.slept == pytest.approx(23)
    assert json.loads(api.calls[0].request.body) == {"status_detail": "Waiting 23 s before retry 2/3 starts work"}


def test_missing_token_on_valohai_is_warned_about_at_start(
    config_dir: Path, runtime: retry.Runtime, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VH_API_TOKEN")
    retry.run(lambda: None, runtime=runtime)
    assert "warning: VH_API_TOKEN is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("seconds", "sleeps"),
    [(3, [3]), (8, [1] * 8), (25, [10, 10, 5]), (600, [60] * 10)],
)
def test_countdown_ticks_grow_with_the_wait(
    runtime: retry.Runtime, clock: FakeClock, capsys: Any, seconds: float, sleeps: list[float]
) -> None:
    retry.countdown(seconds, f"retry 1/3 waits {seconds} s before it starts work", runtime)
    assert clock.sleeps == sleeps
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"[retry] retry 1/3 waits {seconds} s before it starts work"
    assert len(lines) == 1 + (len(sleeps) - 1 if len(sleeps) > 1 else 0)


@pytest.mark.parametrize("value", ["-1", "101", "1.5", "٣"])
def test_a_local_retry_number_that_is_not_one_is_refused(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", value)
    with pytest.raises(retry.ConfigError, match="RETRY_LOCAL_NUMBER must be a retry number from 0 to 100"):
        retry.current_retry()
