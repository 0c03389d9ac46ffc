"""The job the checkpoint benchmark runs: BENCH_EPOCHS epochs, the first attempt fails in one.

Every attempt saves and live-uploads a checkpoint after each epoch; only with
BENCH_CHECKPOINT=1 does ``retry.run`` hand the newest one to the retry, so both runs
are the same code but for that one setting. BENCH_FAIL_EPOCH is the epoch (from 1) in
which the first attempt fails; BENCH_EPOCH_SECONDS is how long an epoch takes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import valohai

import retry

EPOCHS = int(os.environ["BENCH_EPOCHS"])


def train() -> None:
    path = retry.checkpoint_path()
    done = json.loads(path.read_text())["epoch"] if path else 0
    for epoch in range(done + 1, EPOCHS + 1):
        print(f"Epoch {epoch}", flush=True)  # the benchmark counts these: epochs started
        if retry.current_retry() == 0 and epoch == int(os.environ["BENCH_FAIL_EPOCH"]):
            raise ConnectionError(f"simulated outage in epoch {epoch}")
        time.sleep(float(os.environ["BENCH_EPOCH_SECONDS"]))
        name = f"checkpoint-epoch-{epoch:04d}.json"
        Path(valohai.outputs().path(name)).write_text(json.dumps({"epoch": epoch}))
        valohai.outputs().live_upload(name)


if __name__ == "__main__":
    carry = "checkpoint" if os.environ["BENCH_CHECKPOINT"] == "1" else None
    retry.run(train, retries=1, delay=0, checkpoint=carry)
