"""The decision on a failure is a pure function of the policy, the chain's state and the error: a table."""

from __future__ import annotations

from typing import Any

import pytest
import requests

import retry

NOW = 1_800_000_000.0


def http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


def broken_predicate(error: BaseException) -> bool:
    raise RuntimeError("the predicate broke")


TIMEOUT = requests.Timeout("feature store")

# (policy settings, retries done, error) -> (outcome, number, wait, reason)
TABLE: list[tuple[dict[str, Any], int, BaseException, tuple[str, int, float, str]]] = [
    ({}, 0, TIMEOUT, ("retry", 1, 60.0, "")),
    ({}, 2, TIMEOUT, ("retry", 3, 60.0, "")),
    ({}, 3, TIMEOUT, ("gave_up", 3, 0.0, "Gave up after 3 retries")),
    ({"retries": 1}, 1, TIMEOUT, ("gave_up", 1, 0.0, "Gave up after 1 retry")),
    ({}, 7, TIMEOUT, ("gave_up", 7, 0.0, "Gave up after 7 retries")),  # a count past the policy's
    ({"retries": 0}, 0, TIMEOUT, ("not_retried", 0, 0.0, "Not retried: retrying is off (retries=0)")),
    ({}, 0, ValueError("shape"), ("not_retried", 0, 0.0, "Not retried (not a transient error)")),
    ({}, 2, KeyboardInterrupt(), ("not_retried", 2, 0.0, "Not retried (not a transient error)")),
    (
        {"retries": 100},
        101,
        TIMEOUT,
        (
            "not_retried",
            101,
            0.0,
            "Not retried: this execution is tagged as retry 101, above the ceiling of 100;"
            " remove its 'retry:' tag to start a new chain",
        ),
    ),
    (
        {"retry_on": broken_predicate},
        0,
        TIMEOUT,
        ("not_retried", 0, 0.0, "Not retried: retry_on raised RuntimeError: the predicate broke"),
    ),
    ({"retry_on": ValueError}, 0, ValueError("x"), ("retry", 1, 60.0, "")),
    ({"retry_on": (KeyError, ValueError)}, 0, TIMEOUT, ("not_retried", 0, 0.0, "Not retried (not a transient error)")),
    ({"delay": 10, "backoff": 2}, 2, TIMEOUT, ("retry", 3, 40.0, "")),
    ({"delay": 10, "backoff": 2, "max_delay": 30}, 2, TIMEOUT, ("retry", 3, 30.0, "")),
    ({"delay": 10, "jitter": 5}, 0, TIMEOUT, ("retry", 1, 15.0, "")),  # the draw is the upper bound
    ({"delay": 10}, 0, http_error(429, "45"), ("retry", 1, 45.0, "")),  # Retry-After wins when longer
    ({"delay": 10, "max_delay": 20}, 0, http_error(503, "45"), ("retry", 1, 20.0, "")),
    ({"delay": 0}, 0, TIMEOUT, ("retry", 1, 0.0, "")),
]


@pytest.mark.parametrize(("settings", "done", "error", "expected"), TABLE)
def test_the_decision_table(
    settings: dict[str, Any], done: int, error: BaseException, expected: tuple[str, int, float, str]
) -> None:
    decision = retry.decide(
        retry.Policy(**settings), retry.ChainState(done), error, now=NOW, uniform=lambda low, high: high
    )
    outcome, number, wait, reason = expected
    assert (decision.outcome, decision.number, decision.wait, decision.reason) == (outcome, number, wait, reason)
    assert decision.not_before == (NOW + wait if outcome == "retry" else 0.0)


def test_the_same_inputs_give_the_same_decision() -> None:
    policy, state = retry.Policy(delay=3, jitter=7), retry.ChainState(1, parent="p")
    decisions = {retry.decide(policy, state, TIMEOUT, now=NOW, uniform=lambda low, high: 2.5) for _ in range(20)}
    assert decisions == {retry.Decision("retry", 2, wait=5.5, not_before=NOW + 5.5)}
