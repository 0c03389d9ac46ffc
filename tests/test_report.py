"""`python chains.py report` over a recorded-shape project: exact summary, causes and JSON."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from conftest import HOST, PROJECT_ID, ROOT, TOKEN
from responses import matchers

import chains
import retry

AUTH = matchers.header_matcher({"Authorization": f"Token {TOKEN}"})
SMALL = matchers.query_param_matcher({"exclude": "metadata,events"})
LIST_URL = f"{HOST}/api/v0/executions/"
PROJECT_URL = f"{HOST}/api/v0/projects/{PROJECT_ID}/"
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC; with --days 7 the period starts 2027-01-08 08:00
HOUR = 3600.0

CONNECTION = "ConnectionError: could not connect to db.internal:5432: connection refused"


def execution_id(counter: int) -> str:
    return f"0193a8e2-55c1-7d0e-8b1a-{counter:012d}"


def url(counter: int) -> str:
    return f"{HOST}/p/acme/churn-model/execution/{execution_id(counter)}/"


def ctime(hours_ago: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - hours_ago * HOUR))
    return f"{stamp}.002100Z"


def item(
    counter: int,
    status: str,
    detail: str | None = None,
    *,
    retry_number: int = 0,
    duration: float | None = None,
    hours_ago: float = 1.0,
) -> dict[str, Any]:
    """A list entry shaped like tests/fixtures/execution-list.json's (no environment_variables)."""
    return {
        "id": execution_id(counter),
        "counter": counter,
        "url": f"{HOST}/api/v0/executions/{execution_id(counter)}/",
        "urls": {"display": url(counter)},
        "ctime": ctime(hours_ago),
        "duration": duration,
        "status": status,
        "status_detail": detail,
        "step": "train",
        "title": "Nightly training",
        "tags": ["nightly", *([f"retry: {retry_number}"] if retry_number else [])],
        "project": {"id": PROJECT_ID, "name": "churn-model"},
    }


def detail_of(entry: dict[str, Any], parent: int | None) -> dict[str, Any]:
    """The execution detail: the entry plus its environment variables (RETRY_PARENT among them)."""
    variables: dict[str, Any] = {
        "LOG_LEVEL": {"value": "info", "secret": False},
        "VH_API_TOKEN": {"value": None, "secret": True},
    }
    if parent is not None:
        variables["RETRY_PARENT"] = {"value": execution_id(parent), "secret": False}
    return {**entry, "environment_variables": variables, "parameters": {"retries": 3, "delay": 60}}


# The project: newest first, as the list serves it. Retries name their parent's counter.
STOOD_DOWN = (
    "Stood down: #109 is already retry 1/3 of the same failure and does the work;"
    f" this duplicate did nothing {url(109)}"
)
PROJECT: list[tuple[dict[str, Any], int | None]] = [
    # J: a relaunch whose create was never confirmed
    (
        item(
            118,
            "error",
            f"{CONNECTION} - retry 2/3 may have been started, but the API never confirmed it: POST /api/v0/executions/:"
            " the answer was lost (Connection aborted); look for the tag 'retry: 2' in the project's executions"
            " before starting anything",
            retry_number=1,
        ),
        117,
    ),
    (item(117, "error", f"{CONNECTION} - retry 1/3 started as #118", duration=25), None),
    # I: killed without a word (out of memory after an hour)
    (item(116, "error", None, duration=3600), None),
    # H: the token may not create executions
    (
        item(
            115,
            "error",
            "HTTPError: 429 Client Error: Too Many Requests for url: https://api.example.com/v1/features"
            " - could not start retry 1/3: POST /api/v0/executions/: HTTP 403, VH_API_TOKEN is not allowed to do"
            " this: its user needs rights to run executions here",
            duration=20,
        ),
        None,
    ),
    # G: queued; F: its retry waits
    (item(114, "queued"), None),
    (item(113, "started", "Waiting 12 s before retry 1/3 starts work", retry_number=1), 111),
    # E: recovered on retry 2, with a duplicate of retry 1 that stood down
    (item(112, "complete", retry_number=2, duration=500), 109),
    (item(111, "error", f"{CONNECTION} - retry 1/3 started as #113", duration=90), None),
    (item(110, "complete", STOOD_DOWN, retry_number=1, duration=5), 107),
    (
        item(
            109,
            "error",
            "HTTPError: 503 Server Error: Service Unavailable for url: https://features.internal/v1/batch/0f3e9a2b1c"
            " - retry 2/3 started as #112",
            retry_number=1,
            duration=40,
        ),
        107,
    ),
    # C: gave up after 2 retries
    (
        item(108, "error", f"Gave up after 2 retries: {CONNECTION}", retry_number=2, duration=30),
        105,
    ),
    (
        item(
            107,
            "error",
            "HTTPError: 503 Server Error: Service Unavailable for url: https://features.internal/v1/batch/7a1b2c3d4e"
            " - retry 1/3 started as #109",
            duration=200,
        ),
        None,
    ),
    # D: a bug
    (
        item(
            106,
            "error",
            "Not retried (not a transient error): ValueError: feature matrix has 31 columns, the model expects 32",
            duration=15,
        ),
        None,
    ),
    (
        item(
            105,
            "error",
            "ConnectionError: could not connect to db.internal:5433: connection refused - retry 2/2 started as #108",
            retry_number=1,
            duration=45,
        ),
        103,
    ),
    # B: recovered on retry 1 (its last status detail is the wait)
    (item(104, "complete", "Waiting 52 s before retry 1/3 starts work", retry_number=1, duration=310), 102),
    (
        item(
            103,
            "error",
            "Timeout: read timed out after 30 s waiting for the feature store - retry 1/2 started as #105",
            duration=60,
        ),
        None,
    ),
    (item(102, "error", f"{CONNECTION} - retry 1/3 started as #104", duration=120), None),
    # A: succeeded at once
    (item(101, "complete", duration=300), None),
    # K: a retry whose parent #99 is older than the period
    (item(100, "complete", retry_number=1, duration=280, hours_ago=160), 99),
    (item(99, "error", f"{CONNECTION} - retry 1/3 started as #100", duration=70, hours_ago=170), None),
]

FIRST_PAGE = 11  # the server serves fewer than the 100 asked for: the next page starts at 11


def expect_project(api: responses.RequestsMock, name: str = "churn-model") -> None:
    api.get(PROJECT_URL, json={"id": PROJECT_ID, "name": name}, match=[AUTH])


def expect_page(api: responses.RequestsMock, offset: int, results: list[dict[str, Any]], more: bool) -> None:
    query = {"project": PROJECT_ID, "ordering": "-counter", "deleted": "false", "limit": "100"}
    page = {
        "count": 500,
        "next": f"{LIST_URL}?project={PROJECT_ID}&limit=100&offset={offset + len(results)}" if more else None,
        "previous": None,
        "results": results,
    }
    api.get(LIST_URL, json=page, match=[AUTH, matchers.query_param_matcher({**query, "offset": str(offset)})])


def expect_detail(api: responses.RequestsMock, entry: dict[str, Any], parent: int | None) -> None:
    api.get(f"{LIST_URL}{entry['id']}/", json=detail_of(entry, parent), match=[AUTH, SMALL])


def expect_whole_project(api: responses.RequestsMock) -> None:
    """Two pages (the second goes on past the period), and one detail read per retry."""
    entries = [entry for entry, _ in PROJECT]
    expect_project(api)
    expect_page(api, 0, entries[:FIRST_PAGE], more=True)
    expect_page(api, FIRST_PAGE, entries[FIRST_PAGE:], more=True)
    for entry, parent in PROJECT[:-1]:  # #99 is older than the period: never read in detail
        if parent is not None:
            expect_detail(api, entry, parent)


@pytest.fixture
def token(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    clean_env.setenv("VH_API_TOKEN", TOKEN)
    return clean_env


def report(*arguments: str, bounds: chains.Bounds | None = None) -> int:
    return chains.main(["report", "--project", PROJECT_ID, *arguments], now=lambda: NOW, sleep=no_sleep, bounds=bounds)


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"the report slept {seconds} s")


EXPECTED_TEXT = f"""\
Retry chains of churn-model since 2027-01-08 08:00 UTC (--days 7): 19 executions read
Chains: 11 | succeeded on the first attempt: 1 | recovered: 3 (retry 1: 2, retry 2: 1) | gave up: 1 \
| not retried (not transient): 1 | could not relaunch: 2 | still running: 2 | ended without a verdict: 1
Duplicate retries: stood down: 1 | not stood down: 0
Machine time of failed attempts: 1 h 10 min over 12 attempts (1 without a duration)
Top causes of failed attempts:
     6  ConnectionError: could not connect to db.internal:<n>: connection refused
        e.g. {url(118)}
     2  HTTPError: <n> Server Error: Service Unavailable for url: https://features.internal/v1/batch/<id>
        e.g. {url(109)}
     1  (no status detail)
        e.g. {url(116)}
     1  HTTPError: <n> Client Error: Too Many Requests for url: https://api.example.com/v1/features
        e.g. {url(115)}
     1  Timeout: read timed out after <n> s waiting for the feature store
        e.g. {url(103)}
     1  ValueError: feature matrix has <n> columns, the model expects <n>
        e.g. {url(106)}
"""


def test_the_report_sums_up_every_chain_of_the_period(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_whole_project(api)

    assert report() == 0

    assert capsys.readouterr().out == EXPECTED_TEXT
    # The project, two list pages, and one detail read for each of the 9 retries in the period.
    assert len(api.calls) == 1 + 2 + 9


EXPECTED_JSON = {
    "project": PROJECT_ID,
    "project_name": "churn-model",
    "days": 7,
    "since": "2027-01-08T08:00:00Z",
    "executions": 19,
    "chains": 11,
    "first_attempt": 1,
    "recovered": {"1": 2, "2": 1},
    "gave_up": 1,
    "not_retried": 1,
    "relaunch_failed": 2,
    "running": 2,
    "no_verdict": 1,
    "stood_down": 1,
    "duplicates": 0,
    "failed_attempts": 12,
    "failed_seconds": 4245,
    "failed_without_duration": 1,
    "causes": [
        {
            "cause": "ConnectionError: could not connect to db.internal:<n>: connection refused",
            "count": 6,
            "example": url(118),
        },
        {
            "cause": "HTTPError: <n> Server Error: Service Unavailable for url: https://features.internal/v1/batch/<id>",
            "count": 2,
            "example": url(109),
        },
        {"cause": "(no status detail)", "count": 1, "example": url(116)},
        {
            "cause": "HTTPError: <n> Client Error: Too Many Requests for url: https://api.example.com/v1/features",
            "count": 1,
            "example": url(115),
        },
        {"cause": "Timeout: read timed out after <n> s waiting for the feature store", "count": 1, "example": url(103)},
        {"cause": "ValueError: feature matrix has <n> columns, the model expects <n>", "count": 1, "example": url(106)},
    ],
    "whole_period": True,
    "stopped": None,
    "covers_since": "2027-01-08T16:00:00Z",
}


def test_the_json_report_is_one_document_with_the_same_numbers(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_whole_project(api)

    assert report("--json") == 0

    assert json.loads(capsys.readouterr().out) == EXPECTED_JSON


# --- bounds ---------------------------------------------------------------------------------


def test_the_page_bound_ends_the_reading_and_the_report_says_so(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    entries = [entry for entry, _ in PROJECT]
    expect_project(api)
    expect_page(api, 0, entries[:FIRST_PAGE], more=True)
    for entry, parent in PROJECT[:FIRST_PAGE]:
        if parent is not None:
            expect_detail(api, entry, parent)

    assert report(bounds=chains.Bounds(pages=1)) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(--days 7): 11 executions read")
    assert lines[1] == (
        "Stopped early, at the bound of 1 list pages: this report covers executions since 2027-01-15 07:00 UTC"
        " (#108 and newer), not the whole period."
    )


def test_the_detail_bound_stops_before_the_retry_it_cannot_read(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    entries = [entry for entry, _ in PROJECT]
    expect_project(api)
    expect_page(api, 0, entries[:FIRST_PAGE], more=True)
    expect_detail(api, *PROJECT[0])  # #118
    expect_detail(api, *PROJECT[5])  # #113; #112 would be the third

    assert report("--json", bounds=chains.Bounds(details=2)) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["executions"] == 6  # #118 down to #113
    assert (document["whole_period"], document["stopped"]) == (False, "the bound of 2 execution detail reads")
    assert document["covers_since"] == "2027-01-15T07:00:00Z"
    # #117-#118 and #115 could not relaunch, #114 and #113 (its parent not read) still run, #116 no verdict.
    assert (document["chains"], document["relaunch_failed"], document["running"]) == (5, 2, 2)


def test_the_time_bound_ends_the_reading_between_requests(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    ticks = iter(range(0, 1000, 100))  # every look at the clock is 100 s later
    entries = [entry for entry, _ in PROJECT]
    expect_page(api, 0, entries[:FIRST_PAGE], more=True)
    expect_detail(api, *PROJECT[0])

    period = chains.read_period(
        retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep),
        PROJECT_ID,
        NOW - 7 * 24 * HOUR,
        bounds=chains.Bounds(seconds=250),
        clock=lambda: float(next(ticks)),
    )

    assert [attempt.counter for attempt in period.attempts] == [118, 117, 116, 115, 114]
    assert period.stopped == "the time bound of 250 s"


def test_a_list_that_never_ends_is_read_to_the_page_bound_only(
    token: pytest.MonkeyPatch, api: responses.RequestsMock
) -> None:
    for page in range(3):
        expect_page(api, page, [item(1000 - page, "complete")], more=True)

    period = chains.read_period(
        retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24, bounds=chains.Bounds(pages=3)
    )

    assert [attempt.counter for attempt in period.attempts] == [1000, 999, 998]
    assert period.stopped == "the bound of 3 list pages"


def test_the_defaults_allow_thousands_of_executions() -> None:
    bounds = chains.Bounds()
    assert bounds.pages * retry.PAGE_SIZE >= 10_000 and bounds.pages > retry.MAX_PAGES
    assert bounds.details >= 1000
    assert bounds.seconds + chains.API_GRACE <= 300


# --- what list entries lack --------------------------------------------------------------


def test_entries_without_status_details_are_read_once_each(
    token: pytest.MonkeyPatch, api: responses.RequestsMock
) -> None:
    ended = {key: value for key, value in item(7, "error", duration=10).items() if key != "status_detail"}
    queued = {key: value for key, value in item(8, "queued").items() if key != "status_detail"}
    expect_page(api, 0, [queued, ended], more=False)
    api.get(
        f"{LIST_URL}{ended['id']}/",
        json={**ended, "status_detail": f"Gave up after 1 retry: {CONNECTION}"},
        match=[AUTH, SMALL],
    )

    period = chains.read_period(retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24)

    assert [attempt.status_detail for attempt in period.attempts] == ["", f"Gave up after 1 retry: {CONNECTION}"]
    assert period.details == 1


def test_a_retry_deleted_between_the_list_and_its_detail_is_a_chain_of_its_own(
    token: pytest.MonkeyPatch, api: responses.RequestsMock
) -> None:
    gone = item(9, "complete", retry_number=1)
    expect_page(api, 0, [gone], more=False)
    api.get(f"{LIST_URL}{gone['id']}/", status=404, json={"detail": "Not found."}, match=[AUTH, SMALL])

    period = chains.read_period(retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24)

    [attempt] = period.attempts
    assert (attempt.parent, attempt.retry) == (None, 1)
    assert chains.outcome([attempt]) == (chains.RECOVERED, 1)


def test_times_of_any_shape_are_read_and_unreadable_ones_keep_the_execution() -> None:
    assert chains._instant("2027-01-15T08:00:00Z") == NOW
    assert chains._instant("2027-01-15T08:00:00.5Z") == NOW + 0.5
    assert chains._instant("2027-01-15T10:00:00.002100+02:00") == pytest.approx(NOW + 0.0021)
    assert chains._instant("2027-01-15T08:00:00") == NOW  # no zone: UTC, as the API means it
    assert [chains._instant(value) for value in ("yesterday", "2027-13-01T00:00:00Z", None, 5)] == [None] * 4


def test_an_empty_period_reports_zeros(token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any) -> None:
    expect_project(api)
    expect_page(api, 0, [item(5, "complete", hours_ago=200)], more=False)

    assert report("--days", "0.5") == 0

    assert capsys.readouterr().out == (
        "Retry chains of churn-model since 2027-01-14 20:00 UTC (--days 0.5): 0 executions read\n"
        "Chains: 0 | succeeded on the first attempt: 0 | recovered: 0 | gave up: 0 | not retried (not transient): 0"
        " | could not relaunch: 0 | still running: 0 | ended without a verdict: 0\n"
        "Duplicate retries: stood down: 0 | not stood down: 0\n"
        "Machine time of failed attempts: 0 s over 0 attempts\n"
        "Top causes of failed attempts: none\n"
    )


# --- chains and outcomes ------------------------------------------------------------------


def attempt(
    counter: int, status: str = "error", detail: str = "", *, retry_number: int = 0, parent: int | None = None
) -> chains.Attempt:
    return chains.Attempt(
        id=f"id-{counter}",
        counter=counter,
        retry=retry_number,
        parent=f"id-{parent}" if parent is not None else None,
        status=status,
        status_detail=detail,
        duration=None,
        url=url(counter),
        created=None,
    )


def test_a_duplicate_that_did_not_stand_down_is_counted_apart_with_what_followed_it() -> None:
    grouping = chains.group_chains(
        [
            attempt(1, detail=f"{CONNECTION} - retry 1/3 started as #2"),
            attempt(2, "complete", retry_number=1, parent=1),
            attempt(3, retry_number=1, parent=1),  # could not check for copies, worked, failed
            attempt(4, "complete", retry_number=2, parent=3),
        ]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[1, 2]]
    assert [a.counter for a in grouping.duplicates] == [3, 4]
    assert grouping.stood_down == []


def test_retries_of_a_parent_older_than_the_period_make_one_chain() -> None:
    grouping = chains.group_chains(
        [
            attempt(5, "complete", retry_number=1, parent=4),
            attempt(6, "complete", STOOD_DOWN, retry_number=1, parent=4),
            attempt(7, "queued", retry_number=1, parent=4),  # a copy that has not stood down yet
        ]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[5]]
    assert [a.counter for a in grouping.stood_down] == [6]
    assert [a.counter for a in grouping.duplicates] == [7]


def test_a_tampered_parent_cannot_make_a_loop() -> None:
    grouping = chains.group_chains(
        [attempt(1, retry_number=1, parent=2), attempt(2, "complete", retry_number=1, parent=1)]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[1, 2]]


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        ("complete", "", chains.FIRST_ATTEMPT),
        ("complete", "Waiting 3 s before retry 1/3 starts work", chains.FIRST_ATTEMPT),
        ("queued", "", chains.RUNNING),
        ("stopping", "", chains.RUNNING),
        ("error", f"Gave up after 1 retry: {CONNECTION}", chains.GAVE_UP),
        ("error", "Not retried (not a transient error): KeyError: 'x'", chains.NOT_RETRIED),
        ("error", "Not retried: the job called sys.exit(2)", chains.NOT_RETRIED),
        ("error", "Not retried: attempt 2 was interrupted (KeyboardInterrupt)", chains.NOT_RETRIED),
        ("error", f"{CONNECTION} - retry 1/3 started as #42", chains.RUNNING),
        ("error", f"{CONNECTION} - retry 1/3 started as (number unknown)", chains.RUNNING),
        (
            "error",
            f"{CONNECTION} - could not start retry 1/3: VH_API_TOKEN is not set: add ...",
            chains.RELAUNCH_FAILED,
        ),
        (
            "error",
            f"{CONNECTION} - retry 1/3 may have been started, but the API never confirmed it: ...",
            chains.RELAUNCH_FAILED,
        ),
        (
            "error",
            f"{CONNECTION} - not retried: cannot tell which retry this is: /valohai/config/execution.json not found",
            chains.RELAUNCH_FAILED,
        ),
        ("error", "", chains.NO_VERDICT),
        ("crashed", "", chains.NO_VERDICT),
        ("stopped", "Waiting 52 s before retry 1/3 starts work", chains.NO_VERDICT),
        ("error", "something the job wrote itself", chains.NO_VERDICT),
    ],
)
def test_a_chain_ends_as_its_last_attempt_says(status: str, detail: str, expected: str) -> None:
    assert chains.outcome([attempt(1, status, detail)]) == (expected, 0)


def test_a_recovery_counts_by_the_retry_that_succeeded() -> None:
    path = [attempt(1), attempt(2, retry_number=1, parent=1), attempt(3, "complete", retry_number=2, parent=2)]
    assert chains.outcome(path) == (chains.RECOVERED, 2)


# --- causes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detail", "cause"),
    [
        (
            f"{CONNECTION} - retry 1/3 started as #42",
            "ConnectionError: could not connect to db.internal:<n>: connection refused",
        ),
        (
            f"{CONNECTION} - retry 1/3 started as #42; warning: VH_API_TOKEN is not a project variable, so #42"
            " cannot start further retries: add it as a secret in Project settings > Environment variables",
            "ConnectionError: could not connect to db.internal:<n>: connection refused",
        ),
        (
            f"Gave up after 3 retries: {CONNECTION}",
            "ConnectionError: could not connect to db.internal:<n>: connection refused",
        ),
        (
            "Not retried (not a transient error): KeyError: 'run-0193a8e2-55c1-7d0e-8b1a-2f3e4d5c6b7a'",
            "KeyError: 'run-<id>'",
        ),
        (
            "Not retried: this execution is tagged as retry 500, above the ceiling of 100; remove its 'retry:' tag"
            " to start a new chain: TimeoutError: timed out",
            "TimeoutError: timed out",
        ),
        ("Not retried: the job called sys.exit(3)", "Not retried: the job called sys.exit(<n>)"),
        (
            "OSError: [Errno 28] No space left on device: '/tmp/ckpt-7f3e9a2b1c4d.pt' - could not start retry 2/3:"
            " POST /api/v0/executions/: HTTP 400, the request was rejected: commit: Commit 'abc' not found.",
            "OSError: [Errno <n>] No space left on device: '/tmp/ckpt-<id>.pt'",
        ),
        (
            f"{CONNECTION} - retry 2/3 may have been started, but the API never confirmed it: gone; look for the tag",
            "ConnectionError: could not connect to db.internal:<n>: connection refused",
        ),
        (
            "ReadTimeout: HTTPSConnectionPool(host='s3.eu-west-1.amazonaws.com', port=443): Read timed out."
            " (read timeout=30.5) - not retried: cannot tell which retry this is: execution.json not found",
            "ReadTimeout: HTTPSConnectionPool(host='s3.eu-west-<n>.amazonaws.com', port=<n>): Read timed out."
            " (read timeout=<n>)",
        ),
        (
            "RuntimeError: step #3 of job #12 - failed - retry 1/3 started as #44",
            "RuntimeError: step #<n> of job #<n> - failed",
        ),
        ("   ", chains.NO_DETAIL),
        ("", chains.NO_DETAIL),
        ("Waiting 52 s before retry 1/3 starts work", "Waiting <n> s before retry <n>/<n> starts work"),
        ("ValueError: model v2 on ipv6   host\tdeadbeef12", "ValueError: model v2 on ipv6 host <id>"),
    ],
)
def test_causes_keep_the_error_and_drop_what_varies(detail: str, cause: str) -> None:
    assert chains.cause_of(detail) == cause


def test_the_text_lists_ten_causes_and_says_how_many_more(capsys: Any) -> None:
    failed = [attempt(n, detail=f"Error{chr(65 + n)}: broken") for n in range(12)]
    report_ = chains.summarize(
        chains.Period(attempts=failed), project_id=PROJECT_ID, project_name="churn-model", days=7, since=NOW
    )
    lines = chains.format_report(report_).splitlines()
    assert lines[-1] == "  ... and 2 more causes (--json lists them all)"
    assert len(chains.report_json(report_)["causes"]) == 12


# --- bad input: one line and a non-zero exit ------------------------------------------------


@pytest.mark.parametrize("days", ["0", "-1", "abc", "nan", "inf", "1e3", "", "3651", "0.0"])
def test_bad_days_end_with_one_line_before_any_request(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any, days: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report("--days", days)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"[chains] --days must be a number of days above 0 and at most 3650, got {days!r}"


def test_no_project_says_how_to_give_one(token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(["report"])
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    assert capsys.readouterr().err == (
        "[chains] no project: pass --project <id> (Project settings shows it) or set VH_PROJECT_ID\n"
    )


def test_no_token_names_the_variable(clean_env: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report()
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("[chains] VH_API_TOKEN is not set: add your Valohai API token")


def test_an_unknown_project_is_named(token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any) -> None:
    api.get(PROJECT_URL, status=404, json={"detail": "Not found."}, match=[AUTH])

    with pytest.raises(SystemExit) as exit_info:
        report()
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert capsys.readouterr().err == (
        f"[chains] no project {PROJECT_ID} at {HOST}: check the id (Project settings shows it),"
        " VALOHAI_HOST, and that the token's user can see the project\n"
    )


def test_a_refused_token_is_explained(token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any) -> None:
    api.get(PROJECT_URL, status=401, json={"detail": "Invalid token."}, match=[AUTH])

    with pytest.raises(SystemExit) as exit_info:
        report()
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert capsys.readouterr().err == (
        f"[chains] GET /api/v0/projects/{PROJECT_ID}/: HTTP 401, VH_API_TOKEN was refused:"
        " the token is invalid or revoked; create a new one\n"
    )


def test_a_list_page_of_another_shape_ends_with_one_line(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_project(api)
    api.get(LIST_URL, json={"detail": "maintenance"}, match=[AUTH])

    with pytest.raises(SystemExit) as exit_info:
        report()
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert capsys.readouterr().err == "[chains] GET /api/v0/executions/: a list page without results\n"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_network_fails_fast_in_one_line(token: pytest.MonkeyPatch, capsys: Any) -> None:
    token.setenv("VALOHAI_HOST", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()

    with pytest.raises(SystemExit) as exit_info:
        chains.main(["report", "--project", PROJECT_ID])
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert time.monotonic() - started < 6.0  # at once, not after a budget of asking again
    [line] = capsys.readouterr().err.splitlines()
    assert (
        line == f"[chains] GET /api/v0/projects/{PROJECT_ID}/: could not reach {retry.api_host()}: Connection refused"
    )


def test_the_script_runs_by_itself(clean_env: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "chains.py"), "report", "--project", PROJECT_ID, "--days", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (retry.EXIT_BAD_CONFIG, "")
    assert done.stderr == "[chains] --days must be a number of days above 0 and at most 3650, got '0'\n"


# --- chains.py chain: the one-chain query of retry.py -----------------------------------------


@pytest.fixture
def one_chain(api: responses.RequestsMock) -> Iterator[None]:
    first = detail_of(item(41, "error", f"{CONNECTION} - retry 1/3 started as #42", duration=30), None)
    second = detail_of(item(42, "complete", retry_number=1, duration=50), 41)
    api.get(f"{LIST_URL}{PROJECT_ID}:42/", json=second, match=[AUTH, SMALL])
    api.get(f"{LIST_URL}{first['id']}/", json=first, match=[AUTH, SMALL])
    api.get(LIST_URL, json={"results": [second, first], "next": None}, match=[AUTH])
    yield


def test_chain_prints_what_retry_py_chain_prints(token: pytest.MonkeyPatch, one_chain: None, capsys: Any) -> None:
    assert chains.main(["chain", "42", "--project", PROJECT_ID]) == 0
    assert capsys.readouterr().out == (
        f"#41  retry 0  error  {CONNECTION} - retry 1/3 started as #42  {url(41)}\n"
        f"#42  retry 1  complete  -  {url(42)}\n"
    )


def test_the_documented_sample_is_this_output() -> None:
    assert EXPECTED_TEXT in (ROOT / "docs" / "report.md").read_text(encoding="utf-8")


# --- found by an adversarial run -------------------------------------------------------------


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), -7200, 10**400, "3 h"])
def test_a_duration_that_is_no_length_of_time_is_left_out_not_fatal(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, duration: Any
) -> None:
    good = item(8, "error", f"Gave up after 1 retry: {CONNECTION}", duration=60)
    odd = {**item(7, "error", f"Not retried (not a transient error): {CONNECTION}"), "duration": duration}
    expect_page(api, 0, [good, odd], more=False)

    period = chains.read_period(retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24)
    assert [attempt.duration for attempt in period.attempts] == [60.0, None]


def test_a_server_that_lists_oldest_first_is_read_to_the_end(
    token: pytest.MonkeyPatch, api: responses.RequestsMock
) -> None:
    old = item(5, "complete", hours_ago=24 * 30)
    recent = [item(6, "error", f"Gave up after 1 retry: {CONNECTION}"), item(7, "complete")]
    expect_page(api, 0, [old, *recent], more=False)  # ascending: the old one first

    period = chains.read_period(retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24)
    assert [attempt.counter for attempt in period.attempts] == [6, 7]


@pytest.mark.parametrize(
    "arguments", [["report", "--project"], ["report", "--days"], ["chain", "abc"], ["--bogus"], []]
)
def test_a_wrong_command_line_is_one_line(capsys: Any, arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(arguments)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("[chains] invalid arguments: ") and line.endswith("(python chains.py --help)")
