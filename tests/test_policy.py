"""What counts as transient, and how long the policy waits."""

from __future__ import annotations

import email.utils
import socket

import pytest
import requests

import retry


def http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


class DatabaseUnavailableError(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (requests.ConnectionError("refused"), True),
        (requests.ConnectTimeout("connect timed out"), True),
        (requests.ReadTimeout("read timed out"), True),
        (requests.exceptions.SSLError("handshake reset"), True),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (socket.timeout("timed out"), True),
        (http_error(429), True),
        (http_error(500), True),
        (http_error(502), True),
        (http_error(503), True),
        (http_error(504), True),
        (http_error(400), False),
        (http_error(404), False),
        (http_error(501), False),
        (requests.HTTPError("no response attached"), False),
        (ValueError("bad shape"), False),
        (KeyError("column"), False),
        (OSError("disk full"), False),
    ],
)
def test_default_classification(error: BaseException, transient: bool) -> None:
    assert retry.is_transient(error) is transient


def test_an_error_raised_from_a_transient_one_is_transient() -> None:
    try:
        try:
            raise requests.Timeout("feature store")
        except requests.Timeout as exc:
            raise DatabaseUnavailableError("could not load features") from exc
    except DatabaseUnavailableError as error:
        assert retry.is_transient(error)


def test_a_bug_while_handling_a_transient_error_is_not_transient() -> None:
    try:
        try:
            raise requests.Timeout("feature store")
        except requests.Timeout:
            raise NameError("typo in the handler")  # noqa: B904 - the implicit context is the point
    except NameError as error:
        assert not retry.is_transient(error)


def test_caller_can_choose_exception_types() -> None:
    policy = retry.Policy(retry_on=(DatabaseUnavailableError,))
    assert policy.should_retry(DatabaseUnavailableError())
    assert not policy.should_retry(requests.ConnectionError())


def test_caller_can_choose_a_predicate() -> None:
    policy = retry.Policy(retry_on=lambda error: "flaky" in str(error))
    assert policy.should_retry(RuntimeError("flaky GPU driver"))
    assert not policy.should_retry(RuntimeError("out of memory"))


def test_default_wait_is_a_constant_delay() -> None:
    policy = retry.Policy(retries=3, delay=60)
    assert [policy.wait_before(n) for n in (1, 2, 3)] == [60, 60, 60]


def test_backoff_grows_and_is_capped() -> None:
    policy = retry.Policy(retries=5, delay=10, backoff=2, max_delay=50)
    assert [policy.wait_before(n) for n in range(1, 6)] == [10, 20, 40, 50, 50]


def test_jitter_adds_at_most_its_bound() -> None:
    policy = retry.Policy(delay=10, jitter=5)
    assert policy.wait_before(1, uniform=lambda low, high: high) == 15
    assert policy.wait_before(1, uniform=lambda low, high: low) == 10


def test_retry_after_makes_the_wait_at_least_that_long() -> None:
    policy = retry.Policy(delay=10)
    assert policy.wait_before(1, http_error(429, "45")) == 45
    assert policy.wait_before(1, http_error(503, "5")) == 10
    assert policy.wait_before(1, http_error(500, "45")) == 10  # only 429 and 503 carry it


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    error = http_error(429, email.utils.formatdate(now + 120, usegmt=True))
    assert retry.Policy(delay=10).wait_before(1, error, now=now) == 120


def test_retry_after_is_still_capped_by_max_delay() -> None:
    assert retry.Policy(delay=10, max_delay=100).wait_before(1, http_error(429, "86400")) == 100


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 101}, "retries"),
        ({"retries": 2.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"delay": -5}, "delay"),
        ({"delay": 10**9}, "delay"),
        ({"delay": 7200}, "max_delay"),
        ({"backoff": 0.5}, "backoff"),
        ({"jitter": -1}, "jitter"),
        ({"wait_in": "sometime"}, "wait_in"),
        ({"retry_on": "ConnectionError"}, "retry_on"),
    ],
)
def test_invalid_settings_name_the_parameter(settings: dict[str, object], named: str) -> None:
    with pytest.raises(retry.ConfigError, match=named):
        retry.Policy(**settings)  # type: ignore[arg-type]
