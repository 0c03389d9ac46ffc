"""Checkpoint benchmark: how much work a retry redoes, with and without checkpoints.

Runs real two-attempt chains on the local Valohai stand-in: a job of E epochs whose first
attempt fails in epoch k, for several k, once with ``checkpoint="checkpoint"`` (the retry
resumes from the failed attempt's newest checkpoint) and once without (it starts over).
Both runs save and live-upload a checkpoint after every epoch; only the setting differs.

Per chain it measures:
- epochs started across the chain (E is the least possible; every epoch more is redone work);
- the time from the failure to the end of the retry's last epoch;
- machine seconds billed for both attempts (process start to exit);
- the requests the failed execution made to relaunch.

Usage: python benchmarks/checkpoints.py [--epochs 10] [--epoch-seconds 0.2] [--check]
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

JOB = str(ROOT / "benchmarks" / "checkpoint_job.py")


@dataclass(frozen=True)
class Result:
    epochs_started: int
    finish: float
    billed: float
    requests: int


def measure(with_checkpoints: bool, epochs: int, fail_epoch: int, epoch_seconds: float) -> Result:
    """Run one chain and measure it."""
    environ = {
        "BENCH_CHECKPOINT": "1" if with_checkpoints else "0",
        "BENCH_EPOCHS": str(epochs),
        "BENCH_FAIL_EPOCH": str(fail_epoch),
        "BENCH_EPOCH_SECONDS": str(epoch_seconds),
    }
    with (
        tempfile.TemporaryDirectory() as folder,
        Platform(Path(folder), script=JOB, extra_env=environ, fork=False) as platform,
    ):
        platform.start()
        failed, retried = platform.wait_until_idle(timeout=2 * epochs * epoch_seconds + 60)
        relaunch_calls = platform.relaunch_calls(failed)
    assert failed.failed_at and failed.ended_at and failed.started_at, "the first attempt did not fail"
    assert retried.status == "complete" and retried.ended_at and retried.started_at, "the retry did not finish"
    started = sum(line.startswith("Epoch ") for execution in (failed, retried) for _, _, line in execution.log)
    return Result(
        epochs_started=started,
        finish=retried.ended_at - failed.failed_at,
        billed=(failed.ended_at - failed.started_at) + (retried.ended_at - retried.started_at),
        requests=len(relaunch_calls),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the job (default 10)")
    parser.add_argument("--epoch-seconds", type=float, default=0.2, help="seconds an epoch takes (default 0.2)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless checkpoints keep their promises")
    args = parser.parse_args(argv)
    epochs, seconds = args.epochs, args.epoch_seconds
    print(f"{epochs} epochs of {seconds:g} s; the first attempt fails in epoch k; times in seconds\n")
    print(
        "| k | epochs started, without | with | redone, without | with "
        "| failure to finish, without | with | billed, without | with | relaunch requests, without | with |"
    )
    print("|---" * 11 + "|")
    failures = []
    for fail_epoch in sorted({1, max(1, epochs // 2), epochs - 1, epochs}):
        without = measure(False, epochs, fail_epoch, seconds)
        with_ = measure(True, epochs, fail_epoch, seconds)
        print(
            f"| {fail_epoch} | {without.epochs_started} | {with_.epochs_started} "
            f"| {without.epochs_started - epochs} | {with_.epochs_started - epochs} "
            f"| {without.finish:.2f} | {with_.finish:.2f} | {without.billed:.2f} | {with_.billed:.2f} "
            f"| {without.requests} | {with_.requests} |"
        )
        if without.epochs_started != epochs + fail_epoch:
            failures.append(f"k={fail_epoch}: without checkpoints {without.epochs_started} epochs started")
        if with_.epochs_started != epochs + 1:  # only the epoch the failure cut short is done again
            failures.append(f"k={fail_epoch}: with checkpoints {with_.epochs_started} epochs started")
        if with_.requests > 5:
            failures.append(f"k={fail_epoch}: a relaunch with checkpoints made {with_.requests} requests")
    print()
    print("\n".join(failures) if failures else "With checkpoints, only the epoch the failure cut short is done again.")
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
