"""A real retry report without a Valohai account: chains run on the local stand-in, then the report.

    .venv/bin/python tests/demo_report.py

Starts the stand-in for Valohai (``tests/standin.py``) on 127.0.0.1 at a free port, with a
temporary folder and a throwaway token; runs seven chains of the sample step at once, each
attempt a real ``python train.py`` process that uses ``retry.py`` (see :data:`CHAINS`);
waits for them; then runs ``chains.py report --project <id>`` as a user would, with the
stand-in's address and token in the environment of that one call, and prints what it
prints. The stand-in is stopped and its folder removed at the end. Nothing leaves this
machine, and it takes a few seconds (at most :data:`WAIT_SECONDS` for the chains).

Exit code: the report's, 1 when the chains or the report did not end in time, 130 on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from standin import PROJECT_ID, Platform  # noqa: E402

#: Seconds an epoch of train.py takes here (0.3 on its own, 5 epochs a run).
EPOCH_SECONDS = 0.2
#: The step's delay parameter in these chains: each retry waits this long (60 by default).
DELAY = 1
#: The most the chains may take before the demo gives up on them.
WAIT_SECONDS = 25.0
#: The most the report may take.
REPORT_SECONDS = 20.0
#: The read timeout of the executions' API calls (the stand-in's 1 s is for tests of slow answers).
READ_TIMEOUT = 5.0
#: Variables of the caller's shell that would point the report elsewhere: replaced or dropped.
API_VARIABLES = ("VH_API_TOKEN", "VALOHAI_HOST", "VH_PROJECT_ID", "VH_CONFIG_DIR", "VH_JOB_ID")


@dataclass(frozen=True)
class Chain:
    """One chain: its title, the parameters of its first attempt, and the retry that succeeds."""

    title: str
    parameters: dict[str, Any]
    recovers_on: int | None = None  # this retry runs with failure_rate 0


CHAINS = [
    Chain("weekly baseline", {"failure_rate": 0.0}),
    Chain("nightly eu", {"failure_rate": 1.0}, recovers_on=1),
    Chain("nightly us", {"failure_rate": 1.0, "failure_type": "timeout"}, recovers_on=1),
    Chain("nightly apac", {"failure_rate": 1.0}, recovers_on=2),
    Chain("backfill 2024", {"failure_rate": 1.0, "retries": 2}),
    Chain("new features", {"failure_rate": 1.0, "failure_type": "bug"}),
    Chain("nightly gpu", {"failure_rate": 1.0, "failure_type": "crash"}, recovers_on=1),
]
SIMULATED = (
    "1 succeeds at once, 3 fail with a connection error or a timeout and recover on retry 1 or 2,\n"
    "1 fails on every attempt and gives up after 2 retries, 1 hits a bug (ValueError: not retried),\n"
    "1 is killed (SIGKILL, as by an out-of-memory kill) and recovers on the retry that the step\n"
    "retry-controller starts, launched by the stand-in's trigger on failed executions."
)


def run_chains(platform: Platform) -> int:
    """Start every chain at once, wait for all to end; return how many executions ran."""
    platform.trigger_on = {"error"}  # a notification trigger on "Execution fails" (docs/controller.md)
    for chain in CHAINS:
        if chain.recovers_on is not None:
            platform.override_chain(chain.title, chain.recovers_on, failure_rate=0.0)
        platform.start(chain.title, **{"delay": DELAY, **chain.parameters})
    return len(platform.wait_until_idle(WAIT_SECONDS))


def report(platform: Platform) -> int:
    """``chains.py report --project <id>`` as a user runs it, pointed at the stand-in; its exit code."""
    assert platform.token is not None
    environ = {name: value for name, value in os.environ.items() if name not in API_VARIABLES}
    environ.update(VALOHAI_HOST=platform.host, VH_API_TOKEN=platform.token)
    print(f"$ VALOHAI_HOST={platform.host} VH_API_TOKEN=... python chains.py report --project {PROJECT_ID}")
    sys.stdout.flush()
    command = [sys.executable, "chains.py", "report", "--project", PROJECT_ID]
    try:
        return subprocess.run(command, cwd=ROOT, env=environ, timeout=REPORT_SECONDS, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"The report did not end within {REPORT_SECONDS:g} s.", file=sys.stderr)
        return 1


def main() -> int:
    began = time.monotonic()
    # A token made for this run: the stand-in refuses any other on every call.
    with contextlib.ExitStack() as stack:  # one statement for both, as Python 3.8 reads it
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="retry-demo-"))
        token, seconds = secrets.token_hex(16), EPOCH_SECONDS
        platform = stack.enter_context(
            Platform(Path(folder), token=token, epoch_seconds=seconds, read_timeout=READ_TIMEOUT)
        )
        print(
            f"A local stand-in for Valohai (tests/standin.py, {platform.host}, a throwaway token) runs"
            f" {len(CHAINS)} chains\nof the sample step train.py at once, every attempt a real process"
            f" that uses retry.py (epochs of {EPOCH_SECONDS:g} s,\nretries after {DELAY} s): {SIMULATED}",
            flush=True,
        )
        try:
            executions = run_chains(platform)
        except TimeoutError as exc:
            print(f"The chains did not end within {WAIT_SECONDS:g} s: {exc}", file=sys.stderr)
            return 1
        print(f"All ended after {time.monotonic() - began:.1f} s: {executions} executions. The report on them:\n")
        code = report(platform)
    if code == 0:
        print("\nThe stand-in has stopped, so the links above lead nowhere; on Valohai they open the executions.")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the stand-in, its processes and its folder are gone already
        print("\nInterrupted: the stand-in and its executions were stopped.", file=sys.stderr)
        sys.exit(130)
