"""Recovery benchmark: is the delay better spent in the failed execution or in its retry?

Runs real two-attempt chains (fail, then recover) on the local Valohai stand-in, with a
simulated queue time q (queueing, machine start, image pull) before every execution,
for both placements of the delay d:

- ``failed``: the failed execution waits d, then creates the retry (the usual pattern);
- ``retry`` (the default): the failed execution creates the retry at once and exits;
  the retry waits only for what is left of d when it starts.

Per chain it measures, from the failure instant F (the traceback in the log):
- recovery: when the retry starts its work, minus F;
- billed: machine seconds of both executions (process start to exit);
- idle: billed seconds spent neither working nor failing: the failed execution from F
  to its exit, plus the retry from its start to the start of its work;
- requests: API and status-detail calls the failed execution made to relaunch.

Usage: python benchmarks/recovery.py [--delay 4] [--check]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from standin import Platform  # noqa: E402

JOB = str(ROOT / "benchmarks" / "outage_job.py")
TOLERANCE = 1.0  # seconds allowed for process start, API calls and scheduling


@dataclass(frozen=True)
class Result:
    recovery: float
    billed: float
    idle: float
    requests: int
    work_after_failure: float


def measure(wait_in: str, delay: float, queue: float) -> Result:
    """Run one chain and measure it."""
    environ = {"BENCH_DELAY": str(delay), "BENCH_WAIT_IN": wait_in}
    with (
        tempfile.TemporaryDirectory() as folder,
        Platform(Path(folder), queue_time=queue, script=JOB, extra_env=environ, fork=False) as platform,
    ):
        platform.start(failure_rate=1.0)
        failed, retried = platform.wait_until_idle(timeout=3 * (delay + queue) + 30)
        relaunch_calls = platform.relaunch_calls(failed)
    assert failed.failed_at and failed.ended_at and failed.started_at, "the first attempt did not fail"
    assert retried.started_at and retried.ended_at and retried.work_started_at, "the retry did no work"
    failure = failed.failed_at
    return Result(
        recovery=retried.work_started_at - failure,
        billed=(failed.ended_at - failed.started_at) + (retried.ended_at - retried.started_at),
        idle=(failed.ended_at - failure) + (retried.work_started_at - retried.started_at),
        requests=len(relaunch_calls),
        work_after_failure=retried.work_started_at - failure,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=4.0, help="the delay d in seconds (default 4)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the new placement meets its bounds")
    args = parser.parse_args(argv)
    delay = args.delay
    print(f"d = {delay:g} s; times in seconds; old = wait in the failed execution, new = wait in the retry\n")
    print(
        "| q | recovery old | recovery new | new/old | billed old | billed new | idle old | idle new | new/old "
        "| requests old | requests new | max(d,q) | max(0,d-q) |"
    )
    print("|---" * 13 + "|")
    failures = []
    for queue in (0.0, delay / 2, delay, 2 * delay):
        old = measure("failed", delay, queue)
        new = measure("retry", delay, queue)
        best_recovery, best_idle = max(delay, queue), max(0.0, delay - queue)
        print(
            f"| {queue:g} | {old.recovery:.2f} | {new.recovery:.2f} | {new.recovery / old.recovery:.2f} "
            f"| {old.billed:.2f} | {new.billed:.2f} | {old.idle:.2f} | {new.idle:.2f} | {new.idle / old.idle:.2f} "
            f"| {old.requests} | {new.requests} | {best_recovery:g} | {best_idle:g} |"
        )
        if new.recovery > best_recovery + TOLERANCE:
            failures.append(f"q={queue:g}: recovery {new.recovery:.2f} > max(d, q) + {TOLERANCE:g}")
        if new.idle > best_idle + TOLERANCE:
            failures.append(f"q={queue:g}: idle {new.idle:.2f} > max(0, d - q) + {TOLERANCE:g}")
        for name, result in (("old", old), ("new", new)):
            if result.work_after_failure < delay:
                failures.append(f"q={queue:g}: {name} retry worked {result.work_after_failure:.2f} s after the failure")
            if result.requests > 3:
                failures.append(f"q={queue:g}: {name} relaunch made {result.requests} requests")
    print()
    print(
        "\n".join(failures)
        if failures
        else "All bounds hold: recovery <= max(d, q) + 1 s, idle <= max(0, d - q) + 1 s,"
    )
    if not failures:
        print("no retry worked before d had passed, at most 3 requests per relaunch.")
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
