"""The sample step ``train``: a short training run that sometimes fails like real jobs do.

With probability ``failure_rate`` the run fails at a random epoch with a real exception of
the kind ``failure_type`` names; ``retry.run`` then starts a retry (or gives up).

Two environment variables help demos and tests: ``TRAIN_OUTAGE_ATTEMPTS=N`` makes the
simulated outage deterministic (the first N attempts fail, later ones succeed, whatever
``failure_rate`` says), and ``TRAIN_EPOCH_SECONDS`` sets how long an epoch takes (0.3).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import TypeVar

import requests
import valohai

import retry

EPOCHS = 5
EPOCH_SECONDS = float(os.environ.get("TRAIN_EPOCH_SECONDS", "0.3"))
FAILURE_TYPES = ("connection", "timeout", "rate-limit", "bug")
OUTAGE_VARIABLE = "TRAIN_OUTAGE_ATTEMPTS"
T = TypeVar("T")

valohai.prepare(
    step="train",
    default_parameters={
        "retries": 3,
        "delay": 60,
        "failure_rate": 0.5,
        "failure_type": "connection",
    },
)


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


def failing_epoch(failure_rate: float, rng: random.Random) -> int | None:
    """The epoch at which this attempt fails, or None when it succeeds."""
    outage = os.environ.get(OUTAGE_VARIABLE, "")
    fails = retry.current_retry() < int(outage) if outage.isdigit() else rng.random() < failure_rate
    return rng.randrange(EPOCHS) if fails else None


def train(settings: Settings, rng: random.Random) -> None:
    """Run a few epochs, log metrics, write a small model file; maybe fail on the way."""
    fail_at = failing_epoch(settings.failure_rate, rng)
    print(f"Training {EPOCHS} epochs", flush=True)
    loss = 1.0
    for epoch in range(EPOCHS):
        if epoch == fail_at:
            raise simulated_failure(settings.failure_type)
        time.sleep(EPOCH_SECONDS)
        loss *= 0.6 + 0.2 * rng.random()
        with valohai.metadata.logger() as logger:
            logger.log("epoch", epoch + 1)
            logger.log("loss", round(loss, 4))
    path = valohai.outputs().path("model.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump({"epochs": EPOCHS, "loss": loss}, file)
    print(f"Training complete: loss {loss:.4f}, model saved to {path}")


def main() -> None:
    try:
        settings = read_settings()
    except ValueError as exc:
        print(f"train.py: invalid parameter: {exc}", file=sys.stderr)
        sys.exit(retry.EXIT_BAD_CONFIG)
    retry.run(lambda: train(settings, random.Random()), retries=settings.retries, delay=settings.delay)


if __name__ == "__main__":
    main()
