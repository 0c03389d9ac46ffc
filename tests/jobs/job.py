"""A small job for the end-to-end tests: its first attempts fail, then it works.

Its settings come from the command line (``--retries=N --delay=S``, as a step passes its
parameters; others are ignored) and from the environment:

- ``JOB_FAIL_ATTEMPTS``: how many attempts fail (those whose retry number is lower; default 1)
- ``JOB_EVENTS``: a file to which every attempt appends JSON lines with its own timestamps
  (``start``, ``fail``, ``work``; ``exit`` as the process ends, with ``JOB_RECORD_EXIT=1``),
  process id and retry number
- ``JOB_THREAD=1``: call ``retry.run`` from a worker thread
- ``JOB_CHDIR``: change to this folder before failing
- ``JOB_HELPER=1``: start a helper program that uses ``retry.run``, and record what it says
- ``JOB_HEARTBEAT=1``: a failing attempt leaves a thread running (not a daemon) behind
- ``JOB_IGNORE_SIGTERM=1``: ignore SIGTERM from then on, as some jobs do
- ``JOB_DAEMON_CHILD=1``: start a daemonic multiprocessing worker, and record its process id
- ``JOB_CHILD=S``: start a multiprocessing child (not a daemon) that works S seconds and records its
  end; ``JOB_CHILD_WAIT=W`` sets how long a local retry waits for it (``retry.CHILD_WAIT``)
- ``JOB_EPOCHS=N``: train N epochs with a live-uploaded checkpoint after each, resuming
  from ``retry.checkpoint_path()``; ``JOB_FAIL_EPOCHS=3,1`` makes the first attempt fail
  in epoch 3 and the second in epoch 1 (recorded as ``resume`` and ``epoch`` events)
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

if Path(globals().get("__file__", "-")).is_file():  # read from stdin, it relies on PYTHONPATH instead
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import valohai

import retry

HELPER = "import retry; retry.run(lambda: None, retries=2, delay=0)"


def record(event: str, **fields: object) -> None:
    path = os.environ.get("JOB_EVENTS")
    if path:
        line = {"event": event, "attempt": retry.current_retry(), "pid": os.getpid(), "time": time.time(), **fields}
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")


def work() -> None:
    record("start")
    if os.environ.get("JOB_IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("JOB_DAEMON_CHILD"):
        worker = multiprocessing.Process(target=time.sleep, args=(60,), daemon=True)
        worker.start()
        record("child", child=worker.pid)
    if os.environ.get("JOB_CHILD") and retry.current_retry() == 0:
        retry.CHILD_WAIT = float(os.environ.get("JOB_CHILD_WAIT", retry.CHILD_WAIT))
        child = multiprocessing.Process(target=child_work, args=(float(os.environ["JOB_CHILD"]),))
        child.start()
        record("child", child=child.pid)
    if os.environ.get("JOB_HELPER"):
        helper = subprocess.run([sys.executable, "-c", HELPER], capture_output=True, text=True, check=False)
        record("helper", output=helper.stderr)
    if os.environ.get("JOB_CHDIR"):
        os.chdir(os.environ["JOB_CHDIR"])
    if os.environ.get("JOB_EPOCHS"):
        train_epochs(int(os.environ["JOB_EPOCHS"]))
        return
    if retry.current_retry() < int(os.environ.get("JOB_FAIL_ATTEMPTS", "1")):
        if os.environ.get("JOB_HEARTBEAT"):  # still running when the attempt fails
            threading.Thread(target=time.sleep, args=(60,), name="heartbeat").start()
        record("fail")
        raise ConnectionError("simulated outage")
    print("Training 1 epoch", flush=True)  # the stand-in marks the start of work here
    record("work")


def child_work(seconds: float) -> None:
    time.sleep(seconds)
    record("child-end")


def train_epochs(epochs: int) -> None:
    path = retry.checkpoint_path()
    done = json.loads(path.read_text())["epoch"] if path else 0
    record("resume", epoch=done, checkpoint=path.name if path else None)
    failing = [int(epoch) for epoch in os.environ.get("JOB_FAIL_EPOCHS", "").split(",") if epoch]
    attempt = retry.current_retry()
    for epoch in range(done + 1, epochs + 1):
        record("epoch", epoch=epoch)
        if attempt < len(failing) and epoch == failing[attempt]:
            raise ConnectionError(f"simulated outage in epoch {epoch}")
        name = f"checkpoint-epoch-{epoch:04d}.json"
        Path(valohai.outputs().path(name)).write_text(json.dumps({"epoch": epoch}))
        valohai.outputs().live_upload(name)
    print("Training complete", flush=True)


def setting(name: str, default: float) -> float:
    prefix = f"--{name}="
    values = [argument[len(prefix) :] for argument in sys.argv[1:] if argument.startswith(prefix)]
    return float(values[-1]) if values else default


def main() -> None:
    if os.environ.get("JOB_RECORD_EXIT"):
        atexit.register(record, "exit")
    settings: dict[str, Any] = {"retries": int(setting("retries", 1)), "delay": setting("delay", 0)}
    if os.environ.get("JOB_EPOCHS"):
        settings["checkpoint"] = "checkpoint"
    if os.environ.get("JOB_THREAD"):
        worker = threading.Thread(target=retry.run, args=(work,), kwargs=settings)
        worker.start()
        worker.join()
    else:
        retry.run(work, **settings)


if __name__ == "__main__":
    main()
