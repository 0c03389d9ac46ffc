"""The sample step raises real errors of the chosen kind and validates its parameters."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT
from greppable import not_greppable, retry_lines

import retry


@pytest.fixture
def train(monkeypatch: pytest.MonkeyPatch, clean_env: pytest.MonkeyPatch) -> ModuleType:
    """train.py imported with a clean command line (prepare() reads sys.argv)."""
    monkeypatch.setattr(sys, "argv", ["train.py"])
    sys.modules.pop("train", None)
    import train as module

    return module


@pytest.mark.parametrize(
    ("kind", "transient"),
    [("connection", True), ("timeout", True), ("rate-limit", True), ("bug", False)],
)
def test_each_failure_type_is_classified_as_documented(train: ModuleType, kind: str, transient: bool) -> None:
    assert retry.is_transient(train.simulated_failure(kind)) is transient


def test_rate_limit_carries_retry_after(train: ModuleType) -> None:
    error = train.simulated_failure("rate-limit")
    assert error.response.status_code == 429
    assert retry.Policy(delay=10).wait_before(1, error) == 30


def test_failure_rate_decides_whether_an_attempt_fails(train: ModuleType) -> None:
    rng = random.Random(7)
    assert all(train.failing_epoch(1.0, rng) is not None for _ in range(50))
    assert all(train.failing_epoch(0.0, rng) is None for _ in range(50))
    failures = sum(train.failing_epoch(0.5, rng) is not None for _ in range(2000))
    assert 850 < failures < 1150


def test_outage_variable_fails_only_the_first_attempts(train: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(train.OUTAGE_VARIABLE, "1")
    assert train.failing_epoch(0.0, random.Random()) is not None
    retry._process = retry._ProcessState()  # the retry: a new process, which reads its chain afresh
    monkeypatch.setenv("RETRY_LOCAL_NUMBER", "1")
    assert train.failing_epoch(1.0, random.Random()) is None


def run_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="train-outputs-") as outputs:
        result = subprocess.run(
            [sys.executable, "train.py", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
            env={"PATH": "/usr/bin:/bin", "VH_OUTPUTS_DIR": outputs, "TRAIN_EPOCH_SECONDS": "0.02", **(env or {})},
        )
    printed = retry_lines(result.stderr) + [line for line in result.stderr.splitlines() if line.startswith("train.py:")]
    assert not_greppable(printed) == [], "messages that grep -F cannot find in the source"
    return result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--failure_rate=1.5"], "failure_rate must be from 0 to 1, got 1.5"),
        (
            ["--failure_type=meteor"],
            "failure_type must be one of connection, timeout, rate-limit, bug, crash, got 'meteor'",
        ),
        (["--retries=-2"], "retries must be an integer from 0 to 100, got -2"),
        (["--delay=-1"], "delay must be a number from 0 to 86400, got -1"),
    ],
)
def test_invalid_parameters_are_refused_with_a_clear_line(args: list[str], message: str) -> None:
    result = run_train(*args, "--failure_rate=0" if "failure_rate" not in args[0] else "--retries=1")
    assert result.returncode == retry.EXIT_BAD_CONFIG
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_parameter_of_the_wrong_type_in_parameters_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "parameters.json").write_text(
        json.dumps({"retries": "three", "delay": 60, "failure_rate": 0.5, "failure_type": "connection"})
    )
    result = run_train(env={"VH_CONFIG_DIR": str(tmp_path)})
    assert result.returncode == retry.EXIT_BAD_CONFIG
    assert "train.py: invalid parameter: retries must be of type int, got 'three'" in result.stderr


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--failure-rate=1", "unknown parameter '--failure-rate' (did you mean --failure_rate?)"),
        (
            "--bogus=1",
            "unknown parameter '--bogus'; the parameters are --retries, --delay, --failure_rate, --failure_type",
        ),
        ("--fail=1", "unknown parameter '--fail'"),  # no abbreviations: a prefix is not a parameter
        ("--retries=three", "argument --retries: invalid int value: 'three'"),
    ],
)
def test_a_misspelled_or_unknown_flag_is_refused_in_one_line(argument: str, message: str) -> None:
    result = run_train(argument)
    assert result.returncode == retry.EXIT_BAD_CONFIG
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"train.py: invalid parameter: {message}")


def test_help_describes_each_parameter_with_its_default_and_the_demo_variables() -> None:
    result = run_train("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # as wide as the terminal: lines may wrap anywhere
    for name, default in (("retries", 3), ("delay", 60), ("failure_rate", 0.5), ("failure_type", "connection")):
        assert f"--{name}" in text
        assert f"(default: {default})" in text
    assert "TRAIN_OUTAGE_ATTEMPTS=N" in text and "TRAIN_EPOCH_SECONDS=S" in text
