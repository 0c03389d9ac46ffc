"""Scale benchmark: what a relaunch and a retry's start cost in a herd and in a large project.

Runs real chains on the local Valohai stand-in (``benchmarks/scale_job.py``: the first
attempt fails in its second epoch with a transient error, its retry works), with abridged
list entries (neither environment variables nor status details, as a real API may serve
them), in two scenarios, each without and with ``checkpoint=``:

- herd: N chains (default 50), all started at once and failing on the same outage;
- crowd: K chains (default 10) in a project where M executions of look-alike chains
  (default 5,000) appear after the parents, as the first create call is served: every
  retry starts with M executions between it and its parent.

Per chain it counts the requests of two moments, and reports their maximum and mean:

- relaunch: what the failed execution asked to start its retry, from reading its own detail
  to its end (its detail, its outputs list with checkpoints, the create call, the status
  detail that ends in its record);
- start: what the retry asked before its work started (its ``Waiting N s`` status
  detail, its parent's detail, and whatever else it needed).

Limits: a start at most 4 requests, a relaunch at most 3 (4 with checkpoints); no request
lists the project's executions. A retry that starts after its delay has passed sends no
``Waiting N s``: the table says how many did. Every wait is bounded (60 s per scenario).

Usage: python benchmarks/scale.py [--chains 50] [--crowd-chains 10] [--others 5000] [--delay 10] [--check]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from standin import Call, Execution, Fault, Platform  # noqa: E402

import retry  # noqa: E402

JOB = str(ROOT / "benchmarks" / "scale_job.py")
CREATE = "/api/v0/executions/"
START_LIMIT = 4
RELAUNCH_LIMITS = {False: 3, True: 4}  # by whether checkpoints are on
RUN_TIMEOUT = 60.0  # seconds for one scenario's chains to end
# The stand-in's jobs time requests out after 1 s (fast fault tests); under a herd's load an
# answer can take longer, and the request asked again would be counted twice. 10 s, as
# retry.py's own 30 s, leaves room for load, not for faults.
READ_TIMEOUT = 10.0
WAITING = "status detail (Waiting N s)"


@dataclass(frozen=True)
class Chain:
    checkpoint: bool  # whether its retry.run had checkpoint= set
    relaunch: tuple[str, ...]  # what each request of the relaunch was, in order
    start: tuple[str, ...]  # likewise, for the retry's start
    problems: tuple[str, ...]  # how the chain went other than planned


@dataclass(frozen=True)
class Run:
    chains: list[Chain]
    executions: int  # in the project when the run ended, look-alikes included
    lists: int  # requests that listed the project's executions
    seconds: float


def label(call: Call, own: Execution, parent: Execution | None = None) -> str:
    """What a request was, in a few words."""
    if "status-detail" in call.path:
        text = str(call.body.get("status_detail", "")) if isinstance(call.body, dict) else ""
        if retry.RECORD_MARK in text:
            return "status detail (record)"
        if text.startswith("Waiting for the failed execution"):
            return "status detail (waiting for the record)"
        return WAITING if text.startswith("Waiting ") else "status detail (other)"
    if call.method == "GET" and call.path == f"{CREATE}{own.id}/":
        return "own detail"
    if call.method == "GET" and parent is not None and call.path == f"{CREATE}{parent.id}/":
        return "parent's detail"
    if call.method == "GET" and call.path == CREATE:
        return "execution list"
    if call.method == "GET" and re.fullmatch(f"{CREATE}[^/]+/", call.path):
        return "another execution's detail"
    if call.method == "POST" and call.path == CREATE:
        return "create"
    return "outputs list" if call.path == "/api/v0/data/" else f"{call.method} {call.path}"


def measure(checkpoints: Sequence[bool], others: int, delay: float, workdir: Path, timeout: float = RUN_TIMEOUT) -> Run:
    """Start one chain per item of ``checkpoints`` at once (with ``checkpoint=`` where True), with
    ``others`` look-alikes created as the first create call is served; count their requests.
    Raises TimeoutError if the chains have not all ended after ``timeout`` seconds."""
    began = time.monotonic()
    with Platform(
        workdir, script=JOB, extra_env={"SCALE_DELAY": str(delay)}, read_timeout=READ_TIMEOUT, abridged_lists=True
    ) as platform:
        if others:  # "slow" by 0 s: served as usual, once the look-alikes exist
            platform.inject(Fault("POST", CREATE, "slow", seconds=0.0, others=others))
        firsts = [platform.start(variables={"SCALE_CHECKPOINT": "1" if on else "0"}) for on in checkpoints]
        executions = platform.wait_until_idle(timeout=timeout)
        retries = collections.defaultdict(list)
        for execution in executions:
            retries[execution.environment_variables.get("RETRY_PARENT")].append(execution)
        chains = [measure_chain(platform, first, retries[first.id], on) for first, on in zip(firsts, checkpoints)]
        total, lists = len(platform.executions), len(platform.list_calls())
    return Run(chains, total, lists, time.monotonic() - began)


def measure_chain(platform: Platform, first: Execution, retries: list[Execution], checkpoint: bool) -> Chain:
    """The requests of one chain's relaunch and of its retry's start, and what went other than planned."""
    relaunch = tuple(label(call, first) for call in platform.relaunch_calls(first))
    problems = []
    if (first.status, first.exit_code) != ("error", retry.EXIT_RETRY_STARTED):
        problems.append(f"#{first.counter} ended {first.status} with exit code {first.exit_code}")
    if len(retries) != 1:
        problems.append(f"#{first.counter} has {len(retries)} retries")
    record = first.record
    heir = next((e for e in retries if record is not None and e.id == record.heir), None)
    if heir is None:
        problems.append(f"#{first.counter}'s record names none of its retries: {record}")
        return Chain(checkpoint, relaunch, (), tuple(problems))
    if heir.status != "complete" or heir.work_started_at is None:
        problems.append(f"retry #{heir.counter} ended {heir.status} (exit code {heir.exit_code})")
    resumed = "Training epoch 1" not in heir.log_text()
    if resumed != checkpoint:
        problems.append(f"retry #{heir.counter} {'resumed' if resumed else 'started over'}")
    start = tuple(label(call, heir, first) for call in platform.start_calls(heir))
    return Chain(checkpoint, relaunch, start, tuple(problems))


def limit_failures(name: str, run: Run) -> list[str]:
    """Each request count above its limit, each list request and each chain that went wrong."""
    failures = []
    for chain in run.chains:
        limit = RELAUNCH_LIMITS[chain.checkpoint]
        if len(chain.relaunch) > limit:
            failures.append(f"{name}: a relaunch made {len(chain.relaunch)} requests (limit {limit})")
        if len(chain.start) > START_LIMIT:
            failures.append(f"{name}: a retry's start made {len(chain.start)} requests (limit {START_LIMIT})")
        failures += [f"{name}: {problem}" for problem in chain.problems]
    return failures + ([f"{name}: {run.lists} requests listed the project's executions"] if run.lists else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chains", type=int, default=50, help="chains in the herd (default 50)")
    parser.add_argument("--crowd-chains", type=int, default=10, help="chains in the crowded project (default 10)")
    parser.add_argument("--others", type=int, default=5000, help="look-alike executions in it (default 5000)")
    parser.add_argument("--delay", type=float, default=10.0, help="the retries' delay in seconds (default 10)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a limit is exceeded or a chain went wrong")
    args = parser.parse_args(argv)
    runs = []
    for scenario, chains, others in (("herd", args.chains, 0), ("crowd", args.crowd_chains, args.others)):
        for checkpoint in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                try:
                    run = measure([checkpoint] * chains, others, args.delay, Path(folder))
                except TimeoutError as exc:
                    print(f"{scenario}, checkpoint {checkpoint}: {exc}")
                    return 1
            runs.append((scenario, checkpoint, run))
    print(f"delay {args.delay:g} s; requests per chain; list entries abridged\n")
    print(
        "| scenario | chains | executions in the project | checkpoints | relaunch max | relaunch mean "
        "| start max | start mean | starts with Waiting N s | execution lists | seconds |"
    )
    print("|---" * 11 + "|")
    failures = []
    for scenario, checkpoint, run in runs:
        relaunches = [len(chain.relaunch) for chain in run.chains]
        starts = [len(chain.start) for chain in run.chains]
        waited = sum(WAITING in chain.start for chain in run.chains)
        print(
            f"| {scenario} | {len(run.chains)} | {run.executions:,} | {'with' if checkpoint else 'without'} "
            f"| {max(relaunches)} | {sum(relaunches) / len(relaunches):.2f} "
            f"| {max(starts)} | {sum(starts) / len(starts):.2f} | {waited} | {run.lists} | {run.seconds:.1f} |"
        )
        failures += limit_failures(f"{scenario}, {'with' if checkpoint else 'without'} checkpoints", run)
    print("\nThe requests in order, and how many chains made them:\n")
    print("| scenario | checkpoints | moment | requests | chains |")
    print("|---" * 5 + "|")
    for scenario, checkpoint, run in runs:
        for moment in ("relaunch", "start"):
            seen = collections.Counter(getattr(chain, moment) for chain in run.chains)
            for requests, count in seen.most_common():
                print(
                    f"| {scenario} | {'with' if checkpoint else 'without'} | {moment} "
                    f"| {', '.join(requests) or '-'} | {count} |"
                )
    print()
    if failures:
        print("\n".join(failures))
    else:
        print(f"Every chain within the limits: start <= {START_LIMIT}, relaunch <= 3 (4 with checkpoints).")
        print("No request listed the project's executions.")
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
