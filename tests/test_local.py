"""Local chains as real processes: one process at a time, from anywhere, with signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from greppable import not_greppable, retry_lines

import retry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

JOB = ROOT / "tests" / "jobs" / "job.py"


def job_environ(events: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a local job: no Valohai, no chain variables of ours."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "JOB_EVENTS": str(events),
        **extra,
    }


def events_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_job(command: list[str], cwd: Path, environ: dict[str, str], **options: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=100, check=False, **options
    )
    assert not_greppable(retry_lines(result.stderr)) == [], "messages that grep -F cannot find in the source"
    return result


def test_each_retry_replaces_the_failed_process(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = run_job(
        [sys.executable, str(JOB), "--retries=3", "--delay=0"],
        tmp_path,
        job_environ(events, JOB_FAIL_ATTEMPTS="2"),
    )
    assert result.returncode == 0, result.stderr
    attempts = [event for event in events_of(events) if event["event"] == "start"]
    assert [event["attempt"] for event in attempts] == [0, 1, 2]
    # One process id for the whole chain: each attempt took over the one before, so no
    # failed attempt (and its memory or GPU context) stays alive beside its retry.
    assert len({event["pid"] for event in attempts}) == 1
    assert result.stderr.count(": the same command, in this process") == 2
    assert result.stderr.rstrip().endswith("[retry] the job succeeded on attempt 3")


def test_a_job_that_changes_folder_is_still_run_again(tmp_path: Path) -> None:
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere" / "deeper" / "still"
    start.mkdir()
    elsewhere.mkdir(parents=True)  # deeper, so that no relative path works from both
    events = tmp_path / "events.jsonl"
    # Relative paths to the interpreter and the script, resolved from where the job started.
    command = [os.path.relpath(sys.executable, start), os.path.relpath(JOB, start), "--retries=1", "--delay=0"]
    result = run_job(command, start, job_environ(events, JOB_CHDIR=str(elsewhere)))
    assert result.returncode == 0, result.stderr
    assert [event["event"] for event in events_of(events)] == ["start", "fail", "start", "work"]


@pytest.mark.skipif(sys.version_info < (3, 9), reason="__main__.__file__ is absolute from Python 3.9 on")
def test_a_script_that_changes_folder_before_it_imports_retry_is_run_again(tmp_path: Path) -> None:
    script = tmp_path / "start" / "sub" / "chdir_first.py"
    script.parent.mkdir(parents=True)
    script.write_text(
        "import os, sys\n"
        "os.chdir(os.path.dirname(os.path.abspath(__file__)))  # a common first line\n"
        "import retry\n"
        "def main():\n"
        "    if retry.current_retry() == 0:\n"
        "        raise ConnectionError('db down')\n"
        "    print('worked in', os.getcwd())\n"
        "retry.run(main, retries=1, delay=0)\n"
    )
    result = run_job([sys.executable, "sub/chdir_first.py"], tmp_path / "start", job_environ(tmp_path / "e"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"worked in {script.parent}"
    assert "[retry] the job succeeded on attempt 2" in result.stderr


def test_a_script_read_from_stdin_is_refused_instead_of_run_empty(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with JOB.open() as script:
        result = run_job([sys.executable, "-", "--retries=2"], tmp_path, job_environ(events), stdin=script)
    assert result.returncode == retry.EXIT_RELAUNCH_FAILED
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("[retry] ConnectionError: simulated outage - could not start retry 1/2:")
    assert "so it cannot be run again" in last
    assert last.endswith("the script was read from standard input, so it cannot be run again: save it to a file")
    assert [event["event"] for event in events_of(events)] == ["start", "fail"]


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.orig_argv, which keeps -c's program, is new in 3.10")
def test_a_program_given_with_dash_c_runs_again(tmp_path: Path) -> None:
    program = (
        "import retry\n"
        "def work():\n"
        "    if retry.current_retry() == 0:\n"
        "        raise TimeoutError('slow feature store')\n"
        "    print('worked on retry', retry.current_retry())\n"
        "retry.run(work, retries=1, delay=0)\n"
    )
    result = run_job([sys.executable, "-u", "-c", program], tmp_path, job_environ(tmp_path / "events.jsonl"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "worked on retry 1"


def test_the_chain_variables_do_not_leak_into_programs_the_job_starts(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = run_job(
        [sys.executable, str(JOB), "--retries=1", "--delay=0"], tmp_path, job_environ(events, JOB_HELPER="1")
    )
    assert result.returncode == 0, result.stderr
    helpers = [event["output"] for event in events_of(events) if event["event"] == "helper"]
    assert len(helpers) == 2  # one per attempt; the second attempt's helper is a first attempt of its own
    assert all("[retry] attempt 1 of up to 3, running locally\n" in output for output in helpers)


@pytest.mark.parametrize("value", ["²", "7" * 5000])
def test_a_garbled_local_retry_number_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    events = tmp_path / "events.jsonl"
    environ = job_environ(events, RETRY_LOCAL_NUMBER=value)
    result = run_job([sys.executable, str(JOB), "--retries=1"], tmp_path, environ)
    assert result.returncode == retry.EXIT_BAD_CONFIG
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "[retry] invalid retry settings: RETRY_LOCAL_NUMBER must be a retry number from 0 to 100, got "
        + repr(value if len(value) <= 20 else value[:20] + "...")
    ]
    assert events_of(events) == []  # no work started on an unknown count


def sigterm_during_the_retrys_wait(command: list[str], cwd: Path, environ: dict[str, str]) -> int:
    """Start a local chain, send SIGTERM once its retry waits out its delay; its exit code."""
    process = subprocess.Popen(
        command, cwd=cwd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the retry has started and waits out its delay
            if re.search(r"retry 1/1 waits [0-9]+ s before it starts work", line):
                break
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()


def test_sigterm_reaches_the_running_retry_and_leaves_no_process_behind(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    marker = f"--marker={uuid.uuid4()}"  # finds every process of this chain in /proc
    command = [sys.executable, str(JOB), "--retries=1", "--delay=30", marker]
    assert sigterm_during_the_retrys_wait(command, tmp_path, job_environ(events)) == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
    assert [event["event"] for event in events_of(events)] == ["start", "fail"]  # the retry never worked


def processes_with(marker: str) -> list[int]:
    """Ids of live processes whose command line holds ``marker`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if marker.encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_script_piped_through_dev_stdin_is_refused_instead_of_run_empty(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = run_job(
        [sys.executable, "/dev/stdin", "--retries=2"], tmp_path, job_environ(events), input=JOB.read_text()
    )
    assert result.returncode == retry.EXIT_RELAUNCH_FAILED
    assert "is not a regular file (a pipe?), so it cannot be run again" in result.stderr.strip().splitlines()[-1]


def test_the_retry_can_be_stopped_even_if_the_failed_job_ignored_sigterm(tmp_path: Path) -> None:
    environ = job_environ(tmp_path / "events.jsonl", JOB_IGNORE_SIGTERM="1")
    command = [sys.executable, str(JOB), "--retries=1", "--delay=30"]
    assert sigterm_during_the_retrys_wait(command, tmp_path, environ) == -signal.SIGTERM


def test_daemonic_workers_of_a_failed_attempt_do_not_outlive_it(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = run_job(
        [sys.executable, str(JOB), "--retries=1", "--delay=0"], tmp_path, job_environ(events, JOB_DAEMON_CHILD="1")
    )
    assert result.returncode == 0, result.stderr
    children = [event["child"] for event in events_of(events) if event["event"] == "child"]
    assert len(children) == 2
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return False
    return state != "Z"


def test_a_child_of_the_failed_attempt_ends_before_the_retry_starts(tmp_path: Path) -> None:
    # One process of a chain at a time, its children included: Python's own exit joins them too.
    events = tmp_path / "events.jsonl"
    result = run_job(
        [sys.executable, str(JOB), "--retries=1", "--delay=0"], tmp_path, job_environ(events, JOB_CHILD="1.5")
    )
    assert result.returncode == 0, result.stderr
    stamps = {(event["event"], event["attempt"]): event["time"] for event in events_of(events)}
    assert stamps[("child-end", 0)] < stamps[("start", 1)]


def test_a_child_that_does_not_end_is_ended_with_a_message(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    environ = job_environ(events, JOB_CHILD="60", JOB_CHILD_WAIT="0.5")
    started = time.monotonic()
    result = run_job([sys.executable, str(JOB), "--retries=1", "--delay=0"], tmp_path, environ)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15  # not the child's 60 s
    [child] = [event["child"] for event in events_of(events) if event["event"] == "child"]
    assert f"ending the child process {child}: still running 0.5 s after the attempt failed" in result.stderr
    assert not alive(child)
