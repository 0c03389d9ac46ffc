"""The job the recovery benchmark runs: its first attempt fails, its retry works briefly.

Settings come from the environment: BENCH_DELAY (seconds) and BENCH_WAIT_IN
("retry" or "failed"), so both placements run the very same code.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import retry


def work() -> None:
    if retry.current_retry() == 0:
        raise ConnectionError("simulated outage")
    print("Training 1 epoch", flush=True)  # the stand-in marks the start of work here
    time.sleep(0.2)


if __name__ == "__main__":
    retry.run(work, retries=1, delay=float(os.environ["BENCH_DELAY"]), wait_in=os.environ["BENCH_WAIT_IN"])
