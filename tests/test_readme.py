"""The README's commands run as it says, so the README cannot drift from the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from greppable import not_greppable, retry_lines
from standin import PROJECT_ID, Platform

README = (ROOT / "README.md").read_text(encoding="utf-8")

#: Setting up, and the test suite itself: shown to be run by hand, not run here.
BY_HAND = {
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt",
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt && .venv/bin/python -m pytest",
}
#: The local commands, with the exit code and a line of output the README promises.
LOCAL = {
    "TRAIN_OUTAGE_ATTEMPTS=1 .venv/bin/python train.py --delay=5": (0, "[retry] the job succeeded on attempt 2"),
    ".venv/bin/python train.py --failure_rate=1 --retries=2 --delay=1": (
        1,
        "[retry] Gave up after 2 retries: ConnectionError: could not connect to db.internal:5432",
    ),
    ".venv/bin/python train.py --failure_rate=1 --failure_type=bug": (
        1,
        "[retry] Not retried (not a transient error): ValueError: feature matrix has 31 columns",
    ),
    ".venv/bin/python train.py --help": (0, "--failure_rate FAILURE_RATE"),
}
#: Run against the local stand-in, with its token and a project id in place of the placeholders.
REPORT = "VH_API_TOKEN=... .venv/bin/python chains.py report --project <project id>"
#: Starts the stand-in itself, runs chains on it and reports on them: the summary line it must print.
DEMO = {
    ".venv/bin/python tests/demo_report.py": (
        "Chains: 7 | succeeded on the first attempt: 1 | recovered: 4 (retry 1: 3, retry 2: 1) | gave up: 1"
        " | not retried (not transient): 1 | could not relaunch: 0 | still running: 0 | ended without a verdict: 0"
    ),
}


def code_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of ``markdown``: their language (may be empty) and lines."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in markdown.splitlines():
        fence = line.strip().startswith("```")
        if fence and current is None:
            current = []
            blocks.append((line.strip()[3:], current))
        elif fence:
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def shell_commands(markdown: str) -> list[str]:
    """Every command line of the ``bash`` blocks."""
    return [
        line.strip()
        for language, lines in code_blocks(markdown)
        if language == "bash"
        for line in lines
        if line.strip()
    ]


def test_the_readme_shows_exactly_the_commands_tested_here() -> None:
    assert sorted(shell_commands(README)) == sorted([*BY_HAND, *LOCAL, REPORT, *DEMO])


def clone(folder: Path) -> Path:
    """What a clone holds for the local commands, so their outputs land in ``folder``."""
    for name in ("train.py", "retry.py", "chains.py", "valohai.yaml"):
        shutil.copy(ROOT / name, folder / name)
    return folder


def run(command: str, cwd: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """Run a README command as a shell would, with this test's Python for ``.venv/bin/python``."""
    line = command.replace(".venv/bin/python", sys.executable)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environ}
    result = subprocess.run(
        ["sh", "-c", line], cwd=cwd, env=environ, capture_output=True, text=True, timeout=100, check=False
    )
    assert not_greppable(retry_lines(result.stderr)) == [], "messages that grep -F cannot find in the source"
    return result


@pytest.mark.e2e
@pytest.mark.timeout(150)
@pytest.mark.parametrize("command", sorted(LOCAL))
def test_each_local_command_ends_as_the_readme_says(command: str, tmp_path: Path) -> None:
    code, line = LOCAL[command]
    result = run(command, clone(tmp_path), TRAIN_EPOCH_SECONDS="0.02")
    assert result.returncode == code, result.stderr[-2000:]
    assert line in result.stdout + result.stderr


def sample_output(markdown: str) -> list[str]:
    """The quickstart's sample output: the README's first block without a language."""
    return next(lines for language, lines in code_blocks(markdown) if not language)


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_the_quickstart_prints_what_the_readme_shows(tmp_path: Path) -> None:
    [quickstart] = [command for command in LOCAL if command.startswith("TRAIN_OUTAGE_ATTEMPTS")]
    began = time.monotonic()
    result = run(quickstart, clone(tmp_path), TRAIN_EPOCH_SECONDS="0.02")
    took = time.monotonic() - began
    printed = (result.stderr + result.stdout).splitlines()
    shown = [line for line in sample_output(README) if line.startswith(("[retry]", "Training epochs", "Resuming"))]
    assert len(shown) >= 10
    for line in shown:  # "..." stands for folders; losses and what is left of a wait differ from run to run
        pattern = re.escape(line).replace(r"\.\.\.", ".*")
        pattern = re.sub(r"(loss\\ |waits\\ )[0-9]+(\\\.[0-9]+)?", r"\1[0-9.]+", pattern)
        if " waits " in line and took > 6:  # a machine so busy that the relaunch outlasted the delay
            continue
        assert any(re.fullmatch(pattern, printed_line) for printed_line in printed), line


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_the_report_command_reports_on_a_project(tmp_path: Path) -> None:
    with Platform(tmp_path) as platform:
        platform.start(failure_rate=0.0)
        platform.wait_until_idle(100)
        assert platform.token is not None
        command = REPORT.replace("VH_API_TOKEN=...", f"VH_API_TOKEN={platform.token}")
        command = command.replace("<project id>", PROJECT_ID)
        result = run(command, ROOT, VALOHAI_HOST=platform.host)
    assert result.returncode == 0, result.stderr
    assert "Chains: 1 | succeeded on the first attempt: 1 | recovered: 0" in result.stdout


@pytest.mark.e2e
@pytest.mark.timeout(150)
@pytest.mark.parametrize("command", sorted(DEMO))
def test_the_demo_prints_a_real_report_without_a_token(command: str) -> None:
    began = time.monotonic()
    result = run(command, ROOT)  # no VH_API_TOKEN, no VALOHAI_HOST: only PATH
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert DEMO[command] in lines, result.stdout
    assert any(line.startswith("Retry chains of ") for line in lines)
    assert any(line.startswith("$ VALOHAI_HOST=http://127.0.0.1:") for line in lines)
    # README: "in under 30 s"; a machine busier than its cores (four suites at once) is given more.
    assert took < 30 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), took
