"""Recovery benchmark: recovery time and idle machine time, delay in the failed execution or in its retry.

Runs real two-attempt chains (fail, then recover) on the local Valohai stand-in for both
placements of the delay d:

- old, ``wait_in="failed"``: the failed execution waits d, then creates the retry;
- new, ``wait_in="retry"`` (the default): the failed execution creates the retry at once
  and exits; the retry waits only for what is left of d when it starts.

Two cases, because on Valohai an autoscaled machine stays up for a scale-down grace
period g after its last execution ends (15 minutes by default), and a retry queued in the
same environment can start on it:

- COLD: the retry needs a new machine, which takes q to queue, start and pull the image
  (other queued executions took the failed machine first, the platform chose another
  one, or the grace is set to 0, if Valohai allows that: its page names no minimum). The
  failed machine, unless other work takes it, idles through its grace g and goes away.
- WARM: the retry starts on the machine the failed execution left, still in its grace:
  no q for it.

Which case happens depends on the platform, not on the placement: both placements create
the retry as the failed execution ends; the old one ends d later.

In both cases the retry then needs its own start-up s before its job can work: on the
stand-in the process start, imports and its check that it is the only copy; on Valohai
also the container start, the inputs' download and the command's setup. The new placement
runs s during the wait, the old one after it.

The model. From the failure instant F until the retry starts its work W no work is done,
so every machine-second billed in that span is idle machine time:

- WARM: one machine, billed throughout: held by the failed execution from F to its exit
  E, idle in its grace from E until the retry takes it over, held by the retry until W.
  Idle = W - F = recovery. Model: old d + s, new max(d, s).
- COLD: the failed machine is billed from F to E; the new machine from the retry's
  creation C (when it is asked for) to W, all of q counted. Idle = (E - F) + (W - C).
  Model, for recovery and idle alike: old d + q + s, new max(d, q + s). Besides that, both
  placements bill the failed machine's grace g after E (unless other work takes it): the
  same for both, not in the idle column, and usually much longer than d.

So the new placement saves min(d, q + s), in recovery and in idle machine time alike: the
new machine's start and the retry's start-up when COLD, only the start-up s when WARM. It
never saves the grace g. If part of q is spent in a queue before a machine is asked for,
both placements bill that much less; the difference between them stays the same. The
failed execution's relaunch (three requests, then its exit) takes a few tenths of a second
in both placements and is left out of the model, not out of the measurements.

Measured per chain from the stand-in's timestamps of the real processes: F (the traceback
in the log), E (the failed process's end), C (the retry's create call), S (the retry's
process start), W ("Training" in the retry's log), and the requests the failed execution
made to relaunch; s is W - S of the old chain, whose retry does not wait. The first
attempt starts at once (it fails before F); the retry's process starts q after its
creation when COLD, at once when WARM. In WARM, q is only what a new machine would have
taken: its rows repeat the same setup and show the spread of the measurement.

The verdict compares new with old beyond s, which the new placement always saves: better
when it saves more than s + 1 s on both recovery and idle machine time, worse when it
costs more than 1 s more on either, the same otherwise.

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
CASES = ("cold", "warm")


@dataclass(frozen=True)
class Result:
    """One chain's timestamps, in seconds after the failure F, and its relaunch's requests."""

    exited: float  # E: the failed execution's process ended
    created: float  # C: the retry was created (its machine asked for)
    started: float  # S: the retry's process started
    worked: float  # W: the retry started its work; the recovery time
    requests: int

    @property
    def startup(self) -> float:
        """s: from the retry's process start to its work (all of it start-up when the retry does not wait)."""
        return self.worked - self.started

    def idle(self, case: str) -> float:
        """Machine-seconds billed from F to W (see the model above)."""
        return self.worked if case == "warm" else self.exited + (self.worked - self.created)


def measure(wait_in: str, delay: float, retry_queue: float) -> Result:
    """Run one chain and measure it; the retry's process starts ``retry_queue`` seconds after its creation."""
    environ = {"BENCH_DELAY": str(delay), "BENCH_WAIT_IN": wait_in}
    with (
        tempfile.TemporaryDirectory() as folder,
        Platform(
            Path(folder), queue_time=0.0, retry_queue_time=retry_queue, script=JOB, extra_env=environ, fork=False
        ) as platform,
    ):
        platform.start(failure_rate=1.0)
        failed, retried = platform.wait_until_idle(timeout=3 * (delay + retry_queue) + 30)
        relaunch_calls = platform.relaunch_calls(failed)
    assert failed.failed_at and failed.ended_at, "the first attempt did not fail"
    assert retried.started_at and retried.work_started_at, "the retry did no work"
    failure = failed.failed_at
    return Result(
        exited=failed.ended_at - failure,
        created=retried.created_at - failure,
        started=retried.started_at - failure,
        worked=retried.work_started_at - failure,
        requests=len(relaunch_calls),
    )


def model(case: str, delay: float, queue: float, startup: float) -> tuple[float, float]:
    """Recovery and idle machine time (the model gives both the same value): (old, new)."""
    before_work = startup if case == "warm" else queue + startup  # what the retry needs before it can work
    return delay + before_work, max(delay, before_work)


def verdict(old: Result, new: Result, case: str) -> str:
    """The new placement against the old one, beyond the start-up s it always saves."""
    savings = (old.worked - new.worked, old.idle(case) - new.idle(case))
    if any(saving < -TOLERANCE for saving in savings):
        return "worse"
    if all(saving > old.startup + TOLERANCE for saving in savings):
        return "better"
    return "same"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=4.0, help="the delay d in seconds (default 4)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the new placement meets its bounds")
    args = parser.parse_args(argv)
    delay = args.delay
    failures = []
    rows = []
    for case in CASES:
        for queue in (0.0, delay / 2, delay, 2 * delay):
            retry_queue = queue if case == "cold" else 0.0
            old = measure("failed", delay, retry_queue)
            new = measure("retry", delay, retry_queue)
            model_old, model_new = model(case, delay, queue, old.startup)
            grace = "g / g" if case == "cold" else "0 / 0"
            rows.append(
                f"| {case} | {queue:g} | {old.startup:.2f} | {old.worked:.2f} | {new.worked:.2f} "
                f"| {old.idle(case):.2f} | {new.idle(case):.2f} | {model_old:.2f} / {model_new:.2f} | {grace} "
                f"| {old.requests} / {new.requests} | {verdict(old, new, case)} |"
            )
            if new.worked > model_new + TOLERANCE:  # max(d, q + s): s, the start-up, is measured, not assumed
                failures.append(f"{case} q={queue:g}: new recovery {new.worked:.2f} > max(d, q + s) + {TOLERANCE:g}")
            for name, result in (("old", old), ("new", new)):
                if result.worked < delay:
                    failures.append(f"{case} q={queue:g}: {name} retry worked {result.worked:.2f} s after the failure")
                if result.requests > 3:
                    failures.append(f"{case} q={queue:g}: {name} relaunch made {result.requests} requests")
    print(
        f"d = {delay:g} s, seconds from the failure; old: the failed execution waits, new: the retry waits (default)\n"
        "cold: the retry starts on a new machine after q; warm: on the failed execution's machine, at once\n"
        "s: the retry's start-up before its work (old chain); recovery: until the retry works\n"
        "idle: machine-seconds billed until then (cold: the failed machine until its execution ends, the new\n"
        "  one from the retry's creation; warm: the one machine throughout)\n"
        "model: recovery and idle alike, old / new: cold d + q + s / max(d, q + s), warm d + s / max(d, s)\n"
        "grace besides: the failed machine's scale-down grace g (15 min by default), billed besides, old / new\n"
        f"verdict: new against old beyond s (saves more than s + {TOLERANCE:g} on both: better; "
        f"costs over {TOLERANCE:g} more on either: worse)\n"
    )
    print(
        "| case | q | s | recovery old | recovery new | idle old | idle new | model old / new | grace besides "
        "| requests old / new | verdict |"
    )
    print("|---" * 11 + "|")
    print("\n".join(rows))
    print()
    if failures:
        print("\n".join(failures))
    else:
        print(f"All bounds hold: new recovery <= max(d, q + s) + {TOLERANCE:g} s (q = 0 when warm),")
        print("no retry worked before d had passed, at most 3 requests per relaunch.")
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
