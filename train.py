"""The sample step ``train``: a short training run that sometimes fails like real jobs do.

With probability ``failure_rate`` the run fails at a random epoch with a real exception of
the kind ``failure_type`` names; ``retry.run`` then starts a retry (or gives up).  After
every epoch it saves a checkpoint and live-uploads it, so a retry (or Valohai's own
restart after a spot interruption) resumes after the last finished epoch.

Two environment variables help demos and tests: ``TRAIN_OUTAGE_ATTEMPTS=N`` makes the
simulated outage deterministic (the first N attempts fail, each halfway through the
epochs it has left; later ones succeed, whatever ``failure_rate`` says), and
``TRAIN_EPOCH_SECONDS`` sets how long an epoch takes (0.3).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import requests
import valohai

import retry

#: The step's parameters and their defaults (valohai.yaml declares the same).
DEFAULT_PARAMETERS: dict[str, Any] = {
    "retries": 3,
    "delay": 60,
    "failure_rate": 0.5,
    "failure_type": "connection",
}
PARAMETER_HELP = {
    "retries": "retries after the first attempt, 0 to 100",
    "delay": "seconds between a failure and the start of the retry's work",
    "failure_rate": "probability that an attempt fails, 0 to 1",
    "failure_type": "connection, timeout or rate-limit (retried), bug (not retried), or crash (killed)",
}
DEMO_VARIABLES = """environment variables for demos and tests:
  TRAIN_OUTAGE_ATTEMPTS=N  the first N attempts fail (halfway through the epochs they have
                           left), later ones succeed, whatever --failure_rate says
  TRAIN_EPOCH_SECONDS=S    how long an epoch takes (default 0.3)"""
EPOCHS = 5
EPOCH_SECONDS = float(os.environ.get("TRAIN_EPOCH_SECONDS", "0.3"))
#: The step's input through which a retry gets the checkpoint to resume from.
CHECKPOINT_INPUT = "checkpoint"
FAILURE_TYPES = ("connection", "timeout", "rate-limit", "bug", "crash")
OUTAGE_VARIABLE = "TRAIN_OUTAGE_ATTEMPTS"
T = TypeVar("T")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line and exit code 2 (retry.EXIT_BAD_CONFIG)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"train.py: invalid parameter: {message} (python train.py --help lists them)\n")
        sys.exit(retry.EXIT_BAD_CONFIG)


def check_command_line(arguments: list[str]) -> None:
    """Refuse unknown parameters and values of the wrong type; answer ``--help``.

    valohai-utils only warns about an argument it does not know, so a misspelled
    ``--failure-rate=1`` would otherwise run with the default and say nothing.
    """
    parser = _OneLineParser(
        prog="train.py",
        description="The sample step 'train': a short training run that sometimes fails, retried by retry.py.",
        epilog=DEMO_VARIABLES,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, default in DEFAULT_PARAMETERS.items():
        parser.add_argument(f"--{name}", type=type(default), help=f"{PARAMETER_HELP[name]} (default: {default})")
    _, unknown = parser.parse_known_args(arguments)
    if unknown:
        flag = unknown[0].split("=")[0]
        close = difflib.get_close_matches(flag.replace("-", "_"), [f"__{name}" for name in DEFAULT_PARAMETERS], n=1)
        hint = f" (did you mean --{close[0][2:]}?)" if close else ""
        known = ", ".join(f"--{name}" for name in DEFAULT_PARAMETERS)
        parser.error(f"unknown parameter {quote(flag)}{hint}; the parameters are {known}")


def quote(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


if __name__ == "__main__":  # before valohai-utils reads the command line
    check_command_line(sys.argv[1:])

valohai.prepare(step="train", default_parameters=DEFAULT_PARAMETERS)


@dataclass(frozen=True)
class Settings:
    """The step's parameters, validated."""

    retries: int
    delay: int
    failure_rate: float
    failure_type: str


def parameter(name: str, kind: type[T]) -> T:
    """One parameter's value, checked to be of ``kind`` (an integer passes as a float)."""
    value = valohai.parameters(name).value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be of type {kind.__name__}, got {value!r}")
    return value


def read_settings() -> Settings:
    """Read the parameters; raise ``ValueError`` naming the first invalid one."""
    settings = Settings(
        retries=parameter("retries", int),
        delay=parameter("delay", int),
        failure_rate=parameter("failure_rate", float),
        failure_type=parameter("failure_type", str),
    )
    if not 0.0 <= settings.failure_rate <= 1.0:
        raise ValueError(f"failure_rate must be from 0 to 1, got {settings.failure_rate}")
    if settings.failure_type not in FAILURE_TYPES:
        raise ValueError(f"failure_type must be one of {', '.join(FAILURE_TYPES)}, got {settings.failure_type!r}")
    return settings


def simulated_failure(kind: str) -> Exception:
    """A real exception of the given kind, as a flaky dependency would raise it."""
    if kind == "connection":
        return requests.ConnectionError("could not connect to db.internal:5432: connection refused")
    if kind == "timeout":
        return requests.Timeout("read timed out after 30 s waiting for the feature store")
    if kind == "rate-limit":
        response = requests.Response()
        response.status_code = 429
        response.reason = "Too Many Requests"
        response.url = "https://api.example.com/v1/features"
        response.headers["Retry-After"] = "30"
        return requests.HTTPError(f"429 Client Error: Too Many Requests for url: {response.url}", response=response)
    return ValueError("feature matrix has 31 columns, the model expects 32")


@dataclass
class Progress:
    """Where training stands: the last finished epoch, its loss, the model's weights."""

    epoch: int = 0
    loss: float = 1.0
    weights: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)


def failing_epoch(failure_rate: float, rng: random.Random, done: int = 0) -> int | None:
    """The epoch (counted from 1) in which this attempt fails, or None when it succeeds.

    ``done`` epochs are already trained (the checkpoint it resumed from).
    """
    left = EPOCHS - done
    if left <= 0:
        return None
    outage = os.environ.get(OUTAGE_VARIABLE, "")
    if outage.isdigit():  # deterministic: halfway through what is left
        return done + (left + 1) // 2 if retry.current_retry() < int(outage) else None
    return done + 1 + rng.randrange(left) if rng.random() < failure_rate else None


def resume() -> Progress:
    """The progress of the checkpoint to resume from, or a fresh start."""
    path = retry.checkpoint_path(CHECKPOINT_INPUT)
    if path is None:
        return Progress()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        progress = Progress(int(data["epoch"]), float(data["loss"]), tuple(float(w) for w in data["weights"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a checkpoint of this step: {exc!r}") from None
    print(f"Resuming from {path.name}: epoch {progress.epoch} of {EPOCHS} done, loss {progress.loss:.4f}", flush=True)
    return progress


def save_checkpoint(progress: Progress) -> None:
    """Write the checkpoint of a finished epoch and upload it right away (live upload).

    Each epoch gets its own file, named so that names sort by age: Valohai advises
    against re-uploading one name quickly, and a restart picks the last by name.
    """
    name = f"checkpoint-epoch-{progress.epoch:04d}.json"
    path = valohai.outputs().path(name)
    partial = f"{path}.partial"  # written whole first: a crash never leaves half a checkpoint
    with open(partial, "w", encoding="utf-8") as file:
        json.dump({"epoch": progress.epoch, "loss": progress.loss, "weights": list(progress.weights)}, file)
    os.replace(partial, path)
    valohai.outputs().live_upload(name)


def train(settings: Settings, rng: random.Random) -> None:
    """Run the epochs left, log metrics, checkpoint each epoch, write a small model file."""
    progress = resume()
    fail_at = failing_epoch(settings.failure_rate, rng, progress.epoch)
    print(f"Training epochs {progress.epoch + 1} to {EPOCHS}", flush=True)
    for epoch in range(progress.epoch + 1, EPOCHS + 1):
        if epoch == fail_at and settings.failure_type == "crash":  # as an out-of-memory kill would: no except sees it
            print(f"Crashing in epoch {epoch} (SIGKILL)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if epoch == fail_at:
            raise simulated_failure(settings.failure_type)
        time.sleep(EPOCH_SECONDS)
        loss = progress.loss * (0.6 + 0.2 * rng.random())
        weights = tuple(round(weight + rng.uniform(-0.1, 0.1), 4) for weight in progress.weights)
        progress = Progress(epoch, loss, weights)
        with valohai.metadata.logger() as logger:
            logger.log("epoch", epoch)
            logger.log("loss", round(loss, 4))
        save_checkpoint(progress)
    path = valohai.outputs().path("model.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump({"epochs": EPOCHS, "loss": progress.loss, "weights": list(progress.weights)}, file)
    print(f"Training complete: loss {progress.loss:.4f}, model saved to {path}")


def main() -> None:
    try:
        settings = read_settings()
    except ValueError as exc:
        print(f"train.py: invalid parameter: {exc}", file=sys.stderr)
        sys.exit(retry.EXIT_BAD_CONFIG)
    retry.run(
        lambda: train(settings, random.Random()),
        retries=settings.retries,
        delay=settings.delay,
        checkpoint=CHECKPOINT_INPUT,
    )


if __name__ == "__main__":
    main()
