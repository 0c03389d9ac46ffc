"""The job the scale benchmark runs: two epochs; the first attempt fails in epoch 2, its retry works.

Every attempt saves and live-uploads a checkpoint after each epoch; only with
SCALE_CHECKPOINT=1 does ``retry.run`` hand the newest one to the retry (which then starts
at epoch 2), so both runs are the same code but for that one setting. SCALE_DELAY is the
retry's delay in seconds. With ``retries=3`` the chain may go on after its first retry,
as most chains may. Each epoch prints ``Training epoch N``: the stand-in marks the
start of an attempt's work at the first such line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import valohai

import retry

EPOCHS, FAIL_EPOCH = 2, 2


def train() -> None:
    path = retry.checkpoint_path()
    done = json.loads(path.read_text())["epoch"] if path else 0
    for epoch in range(done + 1, EPOCHS + 1):
        print(f"Training epoch {epoch}", flush=True)
        if retry.current_retry() == 0 and epoch == FAIL_EPOCH:
            raise ConnectionError(f"simulated outage in epoch {epoch}")
        name = f"checkpoint-epoch-{epoch:04d}.json"
        Path(valohai.outputs().path(name)).write_text(json.dumps({"epoch": epoch}))
        valohai.outputs().live_upload(name)


if __name__ == "__main__":
    carry = "checkpoint" if os.environ["SCALE_CHECKPOINT"] == "1" else None
    retry.run(train, retries=3, delay=float(os.environ["SCALE_DELAY"]), checkpoint=carry)
