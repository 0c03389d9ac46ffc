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


def said(words: str, outcome: str, number: int, heir: int | None = None, cause: str = "") -> str:
    """A status detail as retry.py writes it: words for people, then the record."""
    record = retry.Record(outcome, number, heir=execution_id(heir) if heir else None, cause=cause)
    return retry.status_with_record(words, record)


TOO_MANY = "HTTPError: 429 Client Error: Too Many Requests for url: https://api.example.com/v1/features"
UNAVAILABLE = "HTTPError: 503 Server Error: Service Unavailable for url: https://features.internal/v1/batch/"
TIMEOUT = "Timeout: read timed out after 30 s waiting for the feature store"
BUG = "ValueError: feature matrix has 31 columns, the model expects 32"
CONNECTION_5433 = "ConnectionError: could not connect to db.internal:5433: connection refused"
STOOD_DOWN = said("Stood down: #107 named another execution as retry 1/3; this copy did nothing", "stood_down", 1, 109)

# The project: newest first, as the list serves it. Retries name their parent's counter.
PROJECT: list[tuple[dict[str, Any], int | None]] = [
    # J: a relaunch whose create was never confirmed
    (
        item(
            118,
            "error",
            said(
                f"{CONNECTION} - retry 2/3 may have been started, but the API never confirmed it: ...",
                "unconfirmed",
                2,
                cause=CONNECTION,
            ),
            retry_number=1,
        ),
        117,
    ),
    (
        item(
            117, "error", said(f"{CONNECTION} - retry 1/3 started as #118", "started", 1, 118, CONNECTION), duration=25
        ),
        None,
    ),
    # I: killed without a word (out of memory after an hour)
    (item(116, "error", None, duration=3600), None),
    # H: the token may not create executions
    (
        item(
            115,
            "error",
            said(
                f"{TOO_MANY} - could not start retry 1/3: POST /api/v0/executions/: HTTP 403",
                "not_started",
                1,
                cause=TOO_MANY,
            ),
            duration=20,
        ),
        None,
    ),
    # G: queued; F: its retry waits
    (item(114, "queued"), None),
    (item(113, "started", "Waiting 12 s before retry 1/3 starts work", retry_number=1), 111),
    # E: recovered on retry 2, with a copy of retry 1 that stood down
    (item(112, "complete", retry_number=2, duration=500), 109),
    (
        item(
            111, "error", said(f"{CONNECTION} - retry 1/3 started as #113", "started", 1, 113, CONNECTION), duration=90
        ),
        None,
    ),
    (item(110, "complete", STOOD_DOWN, retry_number=1, duration=5), 107),
    (
        item(
            109,
            "error",
            said(f"{UNAVAILABLE}0f3e9a2b1c - retry 2/3 started as #112", "started", 2, 112, f"{UNAVAILABLE}0f3e9a2b1c"),
            retry_number=1,
            duration=40,
        ),
        107,
    ),
    # C: gave up after 2 retries
    (
        item(
            108,
            "error",
            said(f"Gave up after 2 retries: {CONNECTION}", "gave_up", 2, cause=CONNECTION),
            retry_number=2,
            duration=30,
        ),
        105,
    ),
    (
        item(
            107,
            "error",
            said(f"{UNAVAILABLE}7a1b2c3d4e - retry 1/3 started as #109", "started", 1, 109, f"{UNAVAILABLE}7a1b2c3d4e"),
            duration=200,
        ),
        None,
    ),
    # D: a bug
    (
        item(
            106, "error", said(f"Not retried (not a transient error): {BUG}", "not_retried", 0, cause=BUG), duration=15
        ),
        None,
    ),
    (
        item(
            105,
            "error",
            said(f"{CONNECTION_5433} - retry 2/2 started as #108", "started", 2, 108, CONNECTION_5433),
            retry_number=1,
            duration=45,
        ),
        103,
    ),
    # B: recovered on retry 1 (its last status detail is the wait)
    (item(104, "complete", "Waiting 52 s before retry 1/3 starts work", retry_number=1, duration=310), 102),
    (item(103, "error", said(f"{TIMEOUT} - retry 1/2 started as #105", "started", 1, 105, TIMEOUT), duration=60), None),
    (
        item(
            102, "error", said(f"{CONNECTION} - retry 1/3 started as #104", "started", 1, 104, CONNECTION), duration=120
        ),
        None,
    ),
    # A: succeeded at once
    (item(101, "complete", duration=300), None),
    # K: a retry whose parent #99 is older than the period
    (item(100, "complete", retry_number=1, duration=280, hours_ago=160), 99),
    (
        item(
            99,
            "error",
            said(f"{CONNECTION} - retry 1/3 started as #100", "started", 1, 100, CONNECTION),
            duration=70,
            hours_ago=170,
        ),
        None,
    ),
]
#: The retries no record in the period names: only they cost a detail read (#110 stood down: it needs none).
UNNAMED = [100]

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
    """Two pages (the second goes on past the period), and a detail read for each retry no record names."""
    entries = [entry for entry, _ in PROJECT]
    expect_project(api)
    expect_page(api, 0, entries[:FIRST_PAGE], more=True)
    expect_page(api, FIRST_PAGE, entries[FIRST_PAGE:], more=True)
    for entry, parent in PROJECT:
        if entry["counter"] in UNNAMED:
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
    # The project, two list pages, and one detail read: #100, whose parent is older than the period.
    assert len(api.calls) == 1 + 2 + 1


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
    "oldest_counter": 100,
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
        if entry["counter"] in (109, 108):  # their parents' records are on the page not read
            expect_detail(api, entry, parent)

    assert report(bounds=chains.Bounds(pages=1)) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(--days 7): 11 executions read")
    assert lines[1] == (
        "Stopped early, at the bound of 1 list pages: this report covers executions since 2027-01-15 07:00 UTC"
        " (#108 and newer), not the whole period."
    )


def abridged(entry: dict[str, Any]) -> dict[str, Any]:
    """A list entry of a server that leaves out status details."""
    return {key: value for key, value in entry.items() if key != "status_detail"}


def test_the_detail_bound_stops_before_the_execution_it_cannot_read(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    entries = [abridged(entry) for entry, _ in PROJECT]
    expect_project(api)
    expect_page(api, 0, entries[:FIRST_PAGE], more=True)
    expect_page(api, FIRST_PAGE, entries[FIRST_PAGE:], more=True)
    expect_detail(api, PROJECT[0][0], 117)  # #118
    expect_detail(api, PROJECT[1][0], None)  # #117; #116 would be the third

    assert report("--json", bounds=chains.Bounds(details=2)) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["executions"] == 2
    assert (document["whole_period"], document["stopped"]) == (False, "the bound of 2 execution detail reads")
    assert (document["chains"], document["relaunch_failed"]) == (1, 1)


def test_the_time_bound_ends_the_reading_between_requests(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    ticks = iter(range(0, 1000, 100))  # every look at the clock is 100 s later
    expect_page(api, 0, [abridged(entry) for entry, _ in PROJECT[:FIRST_PAGE]], more=False)
    expect_detail(api, PROJECT[0][0], 117)

    period = chains.read_period(
        retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep),
        PROJECT_ID,
        NOW - 7 * 24 * HOUR,
        bounds=chains.Bounds(seconds=250),
        clock=lambda: float(next(ticks)),
    )

    assert [attempt.counter for attempt in period.attempts] == [118]
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
    ended = abridged(item(7, "error", duration=10))
    queued = abridged(item(8, "queued"))
    gave_up = said(f"Gave up after 1 retry: {CONNECTION}", "gave_up", 1, cause=CONNECTION)
    expect_page(api, 0, [queued, ended], more=False)
    api.get(f"{LIST_URL}{ended['id']}/", json={**ended, "status_detail": gave_up}, match=[AUTH, SMALL])

    period = chains.read_period(retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24)

    assert [attempt.record for attempt in period.attempts] == [None, retry.read_record(gave_up)]
    assert period.details == 1


def test_a_retry_deleted_between_the_list_and_its_detail_is_left_out(
    token: pytest.MonkeyPatch, api: responses.RequestsMock
) -> None:
    gone = item(9, "complete", retry_number=1)
    kept = item(8, "complete")
    expect_page(api, 0, [gone, kept], more=False)
    api.get(f"{LIST_URL}{gone['id']}/", status=404, json={"detail": "Not found."}, match=[AUTH, SMALL])

    period = chains.read_period(retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep), PROJECT_ID, NOW - HOUR * 24)

    assert [attempt.counter for attempt in period.attempts] == [8]


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
    counter: int,
    status: str = "error",
    record: retry.Record | None = None,
    *,
    retry_number: int = 0,
    parent: int | None = None,
    words: str = "",
) -> chains.Attempt:
    return chains.Attempt(
        id=f"id-{counter}",
        counter=counter,
        number=retry_number,
        parent=f"id-{parent}" if parent is not None else None,
        status=status,
        record=record,
        cause=record.cause if record and record.cause else words,
        duration=None,
        url=url(counter),
        created=None,
    )


def started(heir: int, cause: str = CONNECTION) -> retry.Record:
    return retry.Record("started", 1, heir=f"id-{heir}", cause=cause)


def test_a_copy_its_parent_did_not_name_is_a_duplicate_with_what_followed_it() -> None:
    grouping = chains.group_chains(
        [
            attempt(1, record=started(3)),
            attempt(2, retry_number=1, parent=1),  # a copy that could not read the record, worked, failed
            attempt(3, "complete", retry_number=1),  # named: its RETRY_PARENT need not even be read
            attempt(4, "complete", retry_number=2, parent=2),
        ]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[1, 3]]
    assert [a.counter for a in grouping.duplicates] == [2, 4]
    assert grouping.stood_down == []


def test_without_a_named_heir_the_lowest_copy_goes_on() -> None:
    grouping = chains.group_chains(
        [
            attempt(1, record=retry.Record("unconfirmed", 1, cause=CONNECTION)),
            attempt(3, "complete", retry_number=1, parent=1),
            attempt(2, "complete", retry_number=1, parent=1),
        ]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[1, 2]]
    assert [a.counter for a in grouping.duplicates] == [3]


def test_retries_of_a_parent_older_than_the_period_make_one_chain() -> None:
    grouping = chains.group_chains(
        [
            attempt(5, "complete", retry_number=1, parent=4),
            attempt(6, "complete", retry.Record("stood_down", 1, heir="id-5"), retry_number=1, parent=4),
            attempt(7, "queued", retry_number=1, parent=4),  # a copy that has not read the record yet
        ]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[5]]
    assert [a.counter for a in grouping.stood_down] == [6]
    assert [a.counter for a in grouping.duplicates] == [7]


def test_a_tampered_parent_or_record_cannot_make_a_loop() -> None:
    grouping = chains.group_chains(
        [
            attempt(1, record=started(2), retry_number=1, parent=2),
            attempt(2, "complete", started(1), retry_number=1, parent=1),
        ]
    )
    assert [[a.counter for a in path] for path in grouping.chains] == [[1, 2]]


def test_a_controllers_record_speaks_for_the_crash_it_retried_and_the_controller_is_no_chain() -> None:
    lost = "#1 ended 'error' without a verdict (killed, crashed, or its machine was lost)"
    controlled = [
        attempt(1),  # killed: no record of its own
        attempt(2, "complete", retry.Record("started", 1, "id-3", lost, failed="id-1")),  # the controller
        attempt(3, "error", retry_number=1, parent=1, words="Waiting 5 s before retry 1/3 starts work"),  # crashed
        attempt(4, "complete", retry.Record("stood_down", 0, failed="id-3")),  # a second firing for #3
        attempt(5, "complete", retry.Record("gave_up", 2, cause="out of memory", failed="id-3")),
        attempt(6, "error", retry.Record("not_retried", 0, cause="KeyError: 'x'")),
        attempt(7, "complete", retry.Record("stood_down", 0, failed="id-6")),  # retry.py dealt with #6
    ]
    attempts = chains.controller_verdicts(controlled)
    grouping = chains.group_chains(attempts)

    assert [[a.counter for a in path] for path in grouping.chains] == [[1, 3], [6]]
    assert [chains.outcome(path)[0] for path in grouping.chains] == [chains.GAVE_UP, chains.NOT_RETRIED]
    assert [a.cause for a in attempts] == [lost, "out of memory", "KeyError: 'x'"]
    assert grouping.duplicates == grouping.stood_down == []


@pytest.mark.parametrize(
    ("status", "record", "expected"),
    [
        ("complete", None, chains.FIRST_ATTEMPT),
        ("queued", None, chains.RUNNING),
        ("stopping", None, chains.RUNNING),
        ("error", retry.Record("gave_up", 1, cause=CONNECTION), chains.GAVE_UP),
        ("error", retry.Record("not_retried", 0, cause="KeyError: 'x'"), chains.NOT_RETRIED),
        ("error", retry.Record("started", 1, heir="id-42"), chains.RUNNING),  # its retry is not listed yet
        ("error", retry.Record("started", 1), chains.RUNNING),
        ("error", retry.Record("not_started", 1, cause=CONNECTION), chains.RELAUNCH_FAILED),
        ("error", retry.Record("unconfirmed", 1, cause=CONNECTION), chains.RELAUNCH_FAILED),
        ("error", retry.Record("invalid", 0), chains.NO_VERDICT),
        ("error", None, chains.NO_VERDICT),
        ("crashed", None, chains.NO_VERDICT),
        ("stopped", None, chains.NO_VERDICT),
    ],
)
def test_a_chain_ends_as_its_last_attempts_record_says(status: str, record: retry.Record | None, expected: str) -> None:
    assert chains.outcome([attempt(1, status, record)]) == (expected, 0)


@pytest.mark.parametrize(
    "words",
    [
        f"Gave up after 1 retry: {CONNECTION}",
        "Not retried (not a transient error): KeyError: 'x'",
        f"{CONNECTION} - retry 1/3 started as #42",
        f"{CONNECTION} - could not start retry 1/3: VH_API_TOKEN is not set",
    ],
)
def test_words_alone_decide_nothing(words: str) -> None:
    # Reworded or written by the job itself: without a record, it is a failure without a verdict.
    assert chains.outcome([attempt(1, words=words)]) == (chains.NO_VERDICT, 0)


def test_a_recovery_counts_by_the_retry_that_succeeded() -> None:
    path = [attempt(1), attempt(2, retry_number=1, parent=1), attempt(3, "complete", retry_number=2, parent=2)]
    assert chains.outcome(path) == (chains.RECOVERED, 2)


# --- causes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "normalized"),
    [
        (CONNECTION, "ConnectionError: could not connect to db.internal:<n>: connection refused"),
        ("KeyError: 'run-0193a8e2-55c1-7d0e-8b1a-2f3e4d5c6b7a'", "KeyError: 'run-<id>'"),
        (
            "OSError: [Errno 28] No space left on device: '/tmp/ckpt-7f3e9a2b1c4d.pt'",
            "OSError: [Errno <n>] No space left on device: '/tmp/ckpt-<id>.pt'",
        ),
        (
            "ReadTimeout: HTTPSConnectionPool(host='s3.eu-west-1.amazonaws.com', port=443): Read timed out."
            " (read timeout=30.5)",
            "ReadTimeout: HTTPSConnectionPool(host='s3.eu-west-<n>.amazonaws.com', port=<n>): Read timed out."
            " (read timeout=<n>)",
        ),
        ("RuntimeError: step #3 of job #12 - failed", "RuntimeError: step #<n> of job #<n> - failed"),
        ("ValueError: model v2 on ipv6   host\tdeadbeef12", "ValueError: model v2 on ipv6 host <id>"),
        (
            "ConnectionError: node12 and node19 of v10 down for 30 s",
            "ConnectionError: node12 and node19 of v10 down for <n> s",
        ),
        ("ValueError: release 1.2.3 is older than 1.10", "ValueError: release <n> is older than <n>"),
        ("ValueError: release v1.2.3 is older than v1.10", "ValueError: release v1.2.3 is older than v1.10"),
        (
            "Timeout: no answer after 5003ms (512MB sent in 30.5s), then 5041ms",
            "Timeout: no answer after <n>ms (<n>MB sent in <n>s), then <n>ms",
        ),
    ],
)
def test_causes_keep_the_error_and_drop_what_varies(cause: str, normalized: str) -> None:
    assert chains.normalize(cause) == normalized


def test_a_cause_is_the_records_else_the_words_else_no_detail() -> None:
    failed = [
        attempt(3, record=retry.Record("gave_up", 3, cause="ConnectionError: db at 10.0.0.7 down")),
        attempt(2, words="the job's own status detail 42"),
        attempt(1),
    ]
    assert [(cause["cause"], cause["count"]) for cause in chains.top_causes(failed)] == [
        (chains.NO_DETAIL, 1),
        ("ConnectionError: db at <n> down", 1),
        ("the job's own status detail <n>", 1),
    ]


def test_the_text_lists_ten_causes_and_says_how_many_more(capsys: Any) -> None:
    failed = [attempt(n, words=f"Error{chr(65 + n)}: broken") for n in range(12)]
    report_ = chains.summarize(
        chains.Period(attempts=failed), project_id=PROJECT_ID, project_name="churn-model", days=7, since=NOW
    )
    lines = chains.format_report(report_).splitlines()
    assert lines[-1] == "  ... and 2 more causes (--json lists them all)"
    assert len(report_["causes"]) == 12


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
    assert line == (
        "[chains] VH_API_TOKEN is not set: export VH_API_TOKEN=<your token> in this shell (My profile > Authentication)"
    )


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


@pytest.mark.parametrize(
    ("command", "path"),
    [(["report"], f"/api/v0/projects/{PROJECT_ID}/"), (["chain", "42"], f"/api/v0/executions/{PROJECT_ID}:42/")],
    ids=["report", "chain"],
)
def test_no_network_fails_fast_in_one_line(
    token: pytest.MonkeyPatch, capsys: Any, command: list[str], path: str
) -> None:
    token.setenv("VALOHAI_HOST", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()

    with pytest.raises(SystemExit) as exit_info:
        chains.main([*command, "--project", PROJECT_ID])
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert time.monotonic() - started < 6.0  # at once, not after a budget of asking again
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"[chains] GET {path}: could not reach {retry.api_host()}: Connection refused"


def test_the_script_runs_by_itself(clean_env: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "chains.py"), "report", "--project", PROJECT_ID, "--days", "0"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert (done.returncode, done.stdout) == (retry.EXIT_BAD_CONFIG, "")
    assert done.stderr == "[chains] --days must be a number of days above 0 and at most 3650, got '0'\n"


# --- chains.py chain: the one-chain query of retry.py -----------------------------------------


@pytest.fixture
def one_chain(api: responses.RequestsMock) -> Iterator[None]:
    words = f"{CONNECTION} - retry 1/3 started as #42"
    first = detail_of(item(41, "error", said(words, "started", 1, 42, CONNECTION), duration=30), None)
    second = detail_of(item(42, "complete", retry_number=1, duration=50), 41)
    api.get(f"{LIST_URL}{PROJECT_ID}:42/", json=second, match=[AUTH, SMALL])
    api.get(f"{LIST_URL}{first['id']}/", json=first, match=[AUTH, SMALL])
    yield


def test_chain_walks_back_by_parent_and_forward_by_the_named_heir(
    token: pytest.MonkeyPatch, one_chain: None, api: responses.RequestsMock, capsys: Any
) -> None:
    assert chains.main(["chain", "42", "--project", PROJECT_ID]) == 0
    assert capsys.readouterr().out == (
        f"#41  retry 0  error  {CONNECTION} - retry 1/3 started as #42  {url(41)}\n"
        f"#42  retry 1  complete  -  {url(42)}\n"
    )
    assert len(api.calls) == 2  # one detail per attempt, no list of the project


def test_chain_of_an_execution_the_project_lacks_says_so(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    api.get(f"{LIST_URL}{PROJECT_ID}:2/", status=404, json={"detail": "Not found."})
    with pytest.raises(SystemExit) as exit_info:
        chains.main(["chain", "2", "--project", PROJECT_ID])
    assert exit_info.value.code == retry.EXIT_RELAUNCH_FAILED
    assert capsys.readouterr().err == f"[chains] execution #2 was not found in project {PROJECT_ID}\n"


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
    assert [attempt.counter for attempt in period.attempts] == [7, 6]  # newest first all the same


@pytest.mark.parametrize(
    "arguments", [["report", "--project"], ["report", "--days"], ["chain", "abc"], ["--bogus"], []]
)
def test_a_wrong_command_line_is_one_line(capsys: Any, arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        chains.main(arguments)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("[chains] invalid arguments: ") and line.endswith("(python chains.py --help)")
