"""Attacks on what README.md and docs/ promise of chains.py (report, chain) and controller.py.

Each test fails when the promise it names is broken.  Unit tests mock the API strictly (or loosely,
where a broken promise would otherwise surface as a teardown error); e2e tests use tests/standin.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import HOST, PROJECT_ID, STATUS_URL, TOKEN, FakeClock, load_fixture, records, set_tags
from responses import matchers

import chains
import controller
import retry

LIST_URL = f"{HOST}/api/v0/executions/"
PROJECT_URL = f"{HOST}/api/v0/projects/{PROJECT_ID}/"
DATA_URL = f"{HOST}/api/v0/data/"
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
HOUR = 3600.0
COUNTER_TYPE: Any = str  # int: the control case, which passes
CONNECTION = "ConnectionError: could not connect to db.internal:5432: connection refused"


def eid(counter: int) -> str:
    return f"0193a8e2-55c1-7d0e-8b1a-{counter:012d}"


def ctime(hours_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - hours_ago * HOUR)) + ".000000Z"


def entry(
    counter: int,
    status: str,
    detail: str | None = None,
    *,
    step: str = "train",
    retry_number: int = 0,
    hours_ago: float = 1.0,
    duration: Any = 10,
    **extra: Any,
) -> dict[str, Any]:
    """A list entry (no environment variables), as tests/test_report.py shapes them."""
    return {
        "id": eid(counter),
        "counter": counter,
        "urls": {"display": f"{HOST}/p/acme/churn-model/execution/{eid(counter)}/"},
        "ctime": ctime(hours_ago),
        "duration": duration,
        "status": status,
        "status_detail": detail,
        "step": step,
        "title": "Nightly training",
        "tags": ["nightly", *([f"retry: {retry_number}"] if retry_number else [])],
        **extra,
    }


def said(words: str, record: retry.Record) -> str:
    return retry.status_with_record(words, record)


def page(results: list[dict[str, Any]], more: bool, count: int = 10_000) -> dict[str, Any]:
    return {"count": count, "next": f"{LIST_URL}?offset=x" if more else None, "previous": None, "results": results}


def expect_project(api: responses.RequestsMock, name: str = "churn-model") -> None:
    api.get(PROJECT_URL, json={"id": PROJECT_ID, "name": name})


def expect_page(api: responses.RequestsMock, offset: int, results: list[dict[str, Any]], more: bool) -> None:
    api.get(
        LIST_URL,
        json=page(results, more),
        match=[matchers.query_param_matcher({"offset": str(offset)}, strict_match=False)],
    )


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"the report slept {seconds} s")


@pytest.fixture
def token(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    clean_env.setenv("VH_API_TOKEN", TOKEN)
    return clean_env


@pytest.fixture
def loose() -> Iterator[responses.RequestsMock]:
    """A mock that does not insist every registered answer is asked for (a broken promise must FAIL,
    not error at teardown)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def run_report(*arguments: str, bounds: chains.Bounds | None = None, **kwargs: Any) -> int:
    return chains.main(
        ["report", "--project", PROJECT_ID, "--days", "7", *arguments],
        now=lambda: NOW,
        sleep=kwargs.pop("sleep", no_sleep),
        bounds=bounds,
        **kwargs,
    )


def json_report(capsys: Any, *arguments: str, **kwargs: Any) -> dict[str, Any]:
    assert run_report("--json", *arguments, **kwargs) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


# =====================================================================================
# chains.py report
# =====================================================================================


def test_r01_a_controller_still_waiting_out_its_delay_is_not_a_chain(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # docs/controller.md: "the controller's own executions are not counted as chains".
    # The controller waits the delay (60 s by default) with no status detail and no record.
    crashed = entry(50, "error", None)
    words = retry.status_with_record("Waiting 60 s here", retry.Record("waiting", 1, failed=eid(50)))
    waiting = {**entry(51, "started", words, step="retry-controller"), "title": "Retry controller"}
    expect_project(api)
    expect_page(api, 0, [waiting, crashed], more=False)

    document = json_report(capsys)

    assert document["chains"] == 1, document  # only #50's, still running: its retry is on its way
    assert document["running"] == 1, document


@pytest.mark.parametrize("end", ["stopped", "error"])
def test_r01b_a_controller_that_ended_in_its_wait_leaves_the_failure_unrelaunched(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any, end: str
) -> None:
    # Stopped by a user, or its machine lost, while its record said "waiting": no retry comes.
    crashed = entry(50, "error", None)
    words = retry.status_with_record("Waiting 60 s here", retry.Record("waiting", 1, failed=eid(50)))
    ended = {**entry(51, end, words, step="retry-controller"), "title": "Retry controller"}
    expect_project(api)
    expect_page(api, 0, [ended, crashed], more=False)

    document = json_report(capsys)

    assert (document["chains"], document["running"], document["relaunch_failed"]) == (1, 0, 1), document


def test_r02_a_controller_that_could_not_read_its_payload_is_not_a_chain(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # A payload that names no execution leaves a controller's record all the same (failed: "").
    words = retry.status_with_record(
        "The retry controller could not act: no payload: this step is launched by a notification trigger",
        retry.Record("not_started", 0, failed=""),
    )
    broken = {**entry(61, "error", words, step="retry-controller"), "title": "Retry controller"}
    ok = entry(60, "complete", None)
    expect_project(api)
    expect_page(api, 0, [broken, ok], more=False)

    document = json_report(capsys)

    assert document["chains"] == 1, document
    assert document["no_verdict"] == 0, document
    assert all("retry controller" not in cause["cause"] for cause in document["causes"]), document["causes"]


def test_r03_a_server_listing_oldest_first_stopped_by_the_page_bound_does_not_claim_the_newest(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # docs/report.md: "then it reports what it read, newest first without gaps, and says so on the second line"
    # "this report covers executions since ... (#N and newer)".  A server ignoring ordering=-counter
    # (faults.md: "a server listing oldest first ... read to the end") that is cut by the page bound:
    ascending = [entry(c, "complete", hours_ago=20 - c) for c in range(1, 10)]
    expect_project(api)
    expect_page(api, 0, ascending[0:3], more=True)
    expect_page(api, 3, ascending[3:6], more=True)

    document = json_report(capsys, bounds=chains.Bounds(pages=2))

    assert document["whole_period"] is False
    unread = [7, 8, 9]
    claimed = document["oldest_counter"]
    assert claimed is None or not any(c >= claimed for c in unread), (
        f"report claims '#{claimed} and newer' were covered, but #7..#9 were never read"
    )


def test_r04_a_server_listing_oldest_first_stopped_by_the_detail_bound_does_not_claim_the_newest(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # Same promise, the detail bound: entries without status details each cost a read.
    ascending = [
        {k: v for k, v in entry(c, "error", hours_ago=20 - c).items() if k != "status_detail"} for c in range(1, 6)
    ]
    expect_project(api)
    expect_page(api, 0, ascending, more=False)
    for item in ascending[-2:]:  # read newest first, whatever order the server listed
        api.get(f"{LIST_URL}{item['id']}/", json={**item, "status_detail": None})

    document = json_report(capsys, bounds=chains.Bounds(details=2))

    assert document["whole_period"] is False
    claimed = document["oldest_counter"]
    assert claimed is None or not any(c >= claimed for c in (1, 2, 3)), f"claims '#{claimed} and newer'"


def test_r05_counters_served_as_strings_do_not_make_the_report_read_past_the_period(
    token: pytest.MonkeyPatch, loose: responses.RequestsMock, capsys: Any
) -> None:
    # docs/report.md: "Nothing older than the period is read."  retry.counter_of accepts "41" (a number all the
    # same), but read_period compares the raw values: "99" < "100" is False as strings.
    first = [
        {**entry(101, "complete"), "counter": COUNTER_TYPE("101")},
        {**entry(100, "complete"), "counter": COUNTER_TYPE("100")},
        {**entry(99, "complete"), "counter": COUNTER_TYPE("99")},
        {**entry(98, "complete", hours_ago=500), "counter": COUNTER_TYPE("98")},  # older than the period
    ]
    expect_project(loose)
    loose.get(LIST_URL, json=page(first, more=True))  # answers any offset: count the pages asked

    document = json_report(capsys)

    lists = [call for call in loose.calls if call.request.url.startswith(LIST_URL + "?")]
    assert document["executions"] == 3
    assert len(lists) == 1, f"{len(lists)} list pages read: the reading went on past the period"


def test_r06_a_counter_served_as_a_string_among_integers_does_not_lose_the_whole_report(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # faults.md (chains.py): odd answers -> the report; counter_of() accepts "11" as a number.
    expect_project(api)
    expect_page(api, 0, [entry(12, "complete"), {**entry(11, "complete"), "counter": "11"}], more=False)

    code = run_report("--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["executions"] == 2


FORGERIES = [
    "ValueError: x\nChains: 99 | succeeded on the first attempt: 99",
    "ValueError: y\rChains: 98",
    "ValueError: z\u2028Chains: 97",
    "ValueError: w\x1b[2K\x1b[1GChains: 96",
    "ValueError: v\u202eChains: 95",
    "ValueError: u\x85Chains: 94",
    "ValueError: t\x1cChains: 93",
]


def test_r07_no_line_of_the_report_can_be_forged(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # faults.md: "a line break, control or bidi character in a path, name or answer that is printed |
    # shown escaped: a log line cannot be forged"
    items = [
        {**entry(100 + n, "error", text), "urls": {"display": f"https://x/{n}\n    e.g. forged"}}
        for n, text in enumerate(FORGERIES)
    ]
    expect_project(api, name="churn\nChains: 1000")
    expect_page(api, 0, items, more=False)

    assert run_report() == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(out.split("\n")) - 1  # no hidden separators str.splitlines would honour
    assert [line for line in lines if line.startswith("Chains:")] == [lines[1]]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", out)


def test_r08_the_json_report_has_the_documented_shape(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_project(api)
    expect_page(api, 0, [entry(5, "error", "boom 7")], more=False)
    document = json_report(capsys)
    documented = [
        "project",
        "project_name",
        "days",
        "since",
        "executions",
        "chains",
        "first_attempt",
        "recovered",
        "gave_up",
        "not_retried",
        "relaunch_failed",
        "running",
        "no_verdict",
        "stood_down",
        "duplicates",
        "failed_attempts",
        "failed_seconds",
        "failed_without_duration",
        "causes",
        "whole_period",
        "stopped",
        "covers_since",
        "oldest_counter",
    ]
    assert list(document) == documented
    assert document["causes"] == [
        {"cause": "boom <n>", "count": 1, "example": f"{HOST}/p/acme/churn-model/execution/{eid(5)}/"}
    ]


def test_r09_a_record_whose_cause_has_astral_characters_survives_the_status_detail_cap(
    config_dir: Path, api: responses.RequestsMock
) -> None:
    # platform.md 4: "It cuts the words, never the record, to stay within 1000 characters."
    # json.dumps escapes one emoji as 12 characters: 117 of them make the record alone ~1,400.
    cause = "ConnectionError: " + "\U0001f525" * 200
    record = retry.Record("gave_up", 3, cause=cause)
    api.post(STATUS_URL)

    assert retry.write_record(f"Gave up after 3 retries: {cause}", record)
    sent = json.loads(api.calls[0].request.body)["status_detail"]
    assert retry.read_record(sent) is not None, f"record lost: ...{sent[-80:]!r}"
    # and so the report counts the chain as 'gave up', not 'ended without a verdict':
    attempt = chains._attempt({**entry(7, "error"), "status_detail": sent}, None)
    assert chains.outcome([attempt])[0] == chains.GAVE_UP


def test_r11_a_list_that_repeats_the_same_page_is_bounded_and_says_so(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_project(api)
    api.get(LIST_URL, json=page([entry(103, "complete"), entry(102, "complete")], more=True))  # ignores offset

    document = json_report(capsys, bounds=chains.Bounds(pages=5))

    assert document["executions"] == 2
    assert document["stopped"] == "the bound of 5 list pages"
    assert len([c for c in api.calls if c.request.url.startswith(LIST_URL + "?")]) == 5


def test_r12_records_nested_deep_huge_or_garbled_do_not_break_the_report(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    mark = retry.RECORD_MARK
    odd = [
        entry(20, "error", "x" + mark + "[" * 200_000 + "]" * 200_000),
        entry(19, "error", "x" + mark + '{"outcome": "gave_up", "retry": "NaN"}'),
        entry(18, "error", "x" + mark + '{"outcome": ["gave_up"]}'),
        entry(17, "error", "y" * 2_000_000),
        {**entry(16, "error", "z"), "status_detail": {"nested": [1, 2]}},
    ]
    expect_project(api)
    expect_page(api, 0, odd, more=False)

    document = json_report(capsys)
    assert document["executions"] == 5
    assert document["gave_up"] == 1  # the one with a readable outcome ("retry": "NaN" -> 0)


def test_r13_odd_types_in_list_entries_are_tolerated(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    odd = [
        {**entry(30, "error", "a"), "duration": float("nan")},
        {**entry(29, "error", "b"), "ctime": "garbage"},
        {**entry(28, "complete"), "tags": "retry: 1", "environment_variables": [{"name": "RETRY_PARENT", "value": 7}]},
        {**entry(27, "error", "c"), "duration": "10"},
        {**entry(26, "complete"), "counter": True},  # not a counter: left out
        {**entry(25, "complete"), "id": 25},  # not an id: left out
        "not an object",
        None,
    ]
    expect_project(api)
    expect_page(api, 0, odd, more=False)  # type: ignore[arg-type]

    document = json_report(capsys)
    assert document["executions"] == 4
    assert document["failed_without_duration"] == 2


def test_r14_an_api_that_fails_mid_read_still_ends_at_the_time_bound(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # docs/report.md: "It stops at 200 pages, 2,000 detail reads or 180 seconds, whichever comes first;
    # then it reports what it read" / "an unreachable or refused host end with one line and exit code 3, at once".
    clock = FakeClock(now_value=0.0)
    expect_project(api)
    expect_page(api, 0, [entry(c, "complete") for c in range(200, 100, -1)], more=True)
    api.get(LIST_URL, status=503, json={"detail": "unavailable"})  # every later page

    try:
        code = run_report("--json", clock=clock.now, sleep=clock.sleep)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    # The request under way at the bound may take its grace (docs/report.md), no more.
    assert clock.now_value <= chains.REPORT_SECONDS + chains.API_GRACE, f"ran {clock.now_value:g} s: {out.err}"
    assert code == 0 and json.loads(out.out)["executions"] == 100, out.err


def test_r15_bad_project_answers_end_in_one_line_with_exit_3(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    api.get(PROJECT_URL, json=["not", "an", "object"])
    with pytest.raises(SystemExit) as info:
        run_report()
    assert info.value.code == retry.EXIT_RELAUNCH_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"[chains] GET /api/v0/projects/{PROJECT_ID}/: HTTP 200 with JSON that is not an object"


def test_r16_a_page_nested_five_thousand_deep_ends_in_one_line(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_project(api)
    api.get(LIST_URL, body='{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SystemExit) as info:
        run_report()
    assert info.value.code == retry.EXIT_RELAUNCH_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert line == "[chains] GET /api/v0/executions/: HTTP 200 with a body that is not JSON"


def test_r17_a_tampered_parent_loop_and_self_naming_records_make_no_loop() -> None:
    def attempt(counter: int, status: str, record: retry.Record | None, parent: int | None) -> chains.Attempt:
        return chains.Attempt(
            f"id-{counter}", counter, 1, f"id-{parent}" if parent else None, status, record, "", None, "", None
        )

    looped = [
        attempt(1, "error", retry.Record("started", 1, "id-1"), 3),  # names itself, parent newer
        attempt(2, "error", retry.Record("started", 1, "id-3"), 2),  # its own parent
        attempt(3, "complete", retry.Record("started", 1, "id-2"), 1),  # names its parent
    ]
    grouping = chains.group_chains(looped)
    placed = [a.counter for path in grouping.chains for a in path] + [a.counter for a in grouping.duplicates]
    assert sorted(placed) == [1, 2, 3]


def test_r18_a_list_page_over_20_mb_ends_in_one_line_without_asking_again(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_project(api)
    api.get(LIST_URL, body=json.dumps(page([entry(5, "error", "x" * 21_000_000)], more=False)))
    with pytest.raises(SystemExit) as info:
        run_report()
    assert info.value.code == retry.EXIT_RELAUNCH_FAILED
    [line] = capsys.readouterr().err.splitlines()
    assert "the answer is larger than 20000000 bytes" in line
    assert len(api.calls) == 2


def test_r19_two_controllers_that_both_started_a_copy_leave_one_chain(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # controller.md: "Two controllers that run at the very same moment can each create a copy; the copies then
    # settle which one works" / "a crash that was retried joins its chain".  As the stand-in records it
    # (test_e06): #42 started #44, #43 started #45, #45 stood down for #44, #44 recovered.
    lost = "ExecutionLost: ended 'error' without a verdict (killed, crashed, or its machine was lost)"

    def ctl(counter: int, heir: int) -> dict[str, Any]:
        words = f"Started retry 1/3 of #41 as #{heir}: #41 ended 'error' without a verdict"
        record = retry.Record("started", 1, eid(heir), lost, failed=eid(41))
        return {**entry(counter, "complete", said(words, record), step="retry-controller"), "title": "ctl"}

    stood = said("Stood down: #44 is already retry 1/3 ...", retry.Record("stood_down", 1, eid(44)))
    listing = [
        entry(45, "complete", stood, retry_number=1),
        entry(44, "complete", None, retry_number=1),
        ctl(43, 45),
        ctl(42, 44),
        entry(41, "error", None),
    ]
    expect_project(api)
    expect_page(api, 0, listing, more=False)
    # (a detail read of #44 would show RETRY_PARENT #41; the report does not ask for it: #44 is "named")
    api.get(
        f"{LIST_URL}{eid(44)}/",
        json={**listing[1], "environment_variables": {"RETRY_PARENT": {"value": eid(41), "secret": False}}},
    )
    api.assert_all_requests_are_fired = False

    document = json_report(capsys)
    got = {k: document[k] for k in ("chains", "recovered", "running", "stood_down")}
    assert got == {"chains": 1, "recovered": {"1": 1}, "running": 0, "stood_down": 1}, got


def test_r20_a_refired_controller_that_could_not_act_does_not_undo_the_retry_the_first_one_started(
    token: pytest.MonkeyPatch, loose: responses.RequestsMock, capsys: Any
) -> None:
    # controller.md: "a crash that was retried joins its chain"; "a trigger that fires twice is harmless".
    # #42 started #43 for crash #41; #43 recovered; the event was delivered again and #44 hit an API blip.
    lost = "ExecutionLost: ended 'error' without a verdict (killed, crashed, or its machine was lost)"
    started = said("Started retry 1/3 of #41 as #43: ...", retry.Record("started", 1, eid(43), lost, failed=eid(41)))
    blip = said("The retry controller could not act: ...", retry.Record("not_started", 0, failed=eid(41)))
    listing = [
        {**entry(44, "error", blip, step="retry-controller"), "title": "ctl"},
        entry(43, "complete", None, retry_number=1),
        {**entry(42, "complete", started, step="retry-controller"), "title": "ctl"},
        entry(41, "error", None),
    ]
    expect_project(loose)
    loose.get(LIST_URL, json=page(listing, more=False, count=4))
    loose.get(
        f"{LIST_URL}{eid(43)}/",
        json={**listing[1], "environment_variables": {"RETRY_PARENT": {"value": eid(41), "secret": False}}},
    )

    document = json_report(capsys)
    got = {k: document[k] for k in ("chains", "recovered", "relaunch_failed")}
    assert got == {"chains": 1, "recovered": {"1": 1}, "relaunch_failed": 0}, got


# =====================================================================================
# chains.py chain N
# =====================================================================================


def test_c01_chain_of_a_retry_whose_parent_was_deleted_lists_what_is_left(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    # README: "`chains.py chain 42` lists one chain."  report.md: "Deleted executions are left out".
    retry_42 = {
        **entry(42, "complete", retry_number=1),
        "environment_variables": {"RETRY_PARENT": {"value": eid(41), "secret": False}},
    }
    api.get(f"{LIST_URL}{PROJECT_ID}:42/", json=retry_42)
    api.get(f"{LIST_URL}{eid(41)}/", status=404, json={"detail": "Not found."})  # deleted

    try:
        code = chains.main(["chain", "42", "--project", PROJECT_ID])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("#42  retry 1  complete")


def test_c02_chain_with_a_heir_loop_and_a_parent_loop_ends(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    def detail(counter: int, parent: int, heir: int) -> dict[str, Any]:
        record = retry.Record("started", 1, eid(heir), "x")
        return {
            **entry(counter, "error", said("x", record), retry_number=1),
            "environment_variables": {"RETRY_PARENT": {"value": eid(parent), "secret": False}},
        }

    api.get(f"{LIST_URL}{PROJECT_ID}:5/", json=detail(5, 6, 6))
    api.get(f"{LIST_URL}{eid(6)}/", json=detail(6, 5, 5))
    assert chains.main(["chain", "5", "--project", PROJECT_ID]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_c03_chain_of_a_crash_the_controller_retried_lists_its_retry(
    token: pytest.MonkeyPatch, loose: responses.RequestsMock, capsys: Any
) -> None:
    # README: "`chains.py chain 42` lists one chain"; controller.md: "a crash that was retried joins its chain".
    # #41 was killed (no record); the controller started #43 (RETRY_PARENT #41), which recovered.
    crash = {**entry(41, "error", None), "environment_variables": {}}
    retried = {
        **entry(43, "complete", None, retry_number=1),
        "environment_variables": {"RETRY_PARENT": {"value": eid(41), "secret": False}},
    }
    loose.get(f"{LIST_URL}{PROJECT_ID}:41/", json=crash)
    loose.get(f"{LIST_URL}{PROJECT_ID}:43/", json=retried)
    loose.get(f"{LIST_URL}{eid(41)}/", json=crash)
    loose.get(f"{LIST_URL}{eid(43)}/", json=retried)
    listed = [{k: v for k, v in item.items() if k != "environment_variables"} for item in (retried, crash)]
    loose.get(LIST_URL, json={"count": 2, "next": None, "results": listed})  # the search past the crash

    assert chains.main(["chain", "43", "--project", PROJECT_ID]) == 0
    from_retry = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert chains.main(["chain", "41", "--project", PROJECT_ID]) == 0
    from_crash = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert from_retry == ["#41", "#43"]
    assert from_crash == from_retry, f"chain 41 lists {from_crash}, chain 43 lists {from_retry}"


# =====================================================================================
# controller.py
# =====================================================================================

FAILED_ID = "0193a8e2-0000-7d0e-8b1a-00000000c0de"
FAILED_URL = f"{HOST}/api/v0/executions/{FAILED_ID}/"
EVENTS_URL = f"{FAILED_URL}events/"


def crashed(**changes: Any) -> dict[str, Any]:
    detail = load_fixture("execution-detail.json")
    detail.update({"id": FAILED_ID, "counter": 77, "status": "error", "status_detail": None, **changes})
    return detail


def log(*lines: str) -> dict[str, Any]:
    return {"total": len(lines), "truncated": False, "events": [{"message": line} for line in lines]}


def settings(**changes: Any) -> argparse.Namespace:
    return controller._parser().parse_args([f"--{name}={value}" for name, value in changes.items()])


@pytest.fixture
def as_controller(config_dir: Path) -> Path:
    set_tags(config_dir, [], **{"execution-step": "retry-controller", "execution-counter": 90})
    return config_dir


@pytest.fixture
def control(as_controller: Path, runtime: retry.Runtime) -> Callable[..., int]:
    def run(**changes: Any) -> int:
        return controller.control(FAILED_ID, settings(**changes), runtime)

    return run


def api_requests(mock: responses.RequestsMock) -> int:
    return len(mock.calls)


def test_k01_at_most_8_requests_when_a_herd_of_look_alike_retries_exists(
    loose: responses.RequestsMock, control: Callable[..., int]
) -> None:
    # controller.md: "at most 8 API requests for a failure it relaunches".  A spot zone lost 26 identical
    # jobs at once: by the time this controller searches, the other controllers' retries ('retry: 1',
    # same step, title and parameters; list entries lack RETRY_PARENT) are in the list.
    herd = [
        {**crashed(), "id": f"herd-{n}", "counter": 200 - n, "tags": ["nightly", "retry: 1"], "status": "started"}
        for n in range(25)
    ]
    herd = [{k: v for k, v in item.items() if k != "environment_variables"} for item in herd]
    loose.get(FAILED_URL, json=crashed())
    loose.get(EVENTS_URL, json=log("Killed"))
    loose.get(LIST_URL, json=page([*herd, crashed()], more=False, count=26))
    loose.get(
        re.compile(re.escape(LIST_URL) + r"herd-\d+/"),
        json={**crashed(), "id": "h", "environment_variables": {"RETRY_PARENT": {"value": "other", "secret": False}}},
    )
    loose.get(DATA_URL, json=page([], more=False, count=0))
    loose.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    loose.post(STATUS_URL)

    assert control() == 0
    assert [r.outcome for r in records(loose)] == ["waiting", "started"]
    assert api_requests(loose) <= 8, f"{api_requests(loose)} requests for one relaunch"


def test_k02_at_most_8_requests_in_a_busy_project(loose: responses.RequestsMock, control: Callable[..., int]) -> None:
    # 450 executions of other steps were created during the 60 s the controller waited.
    newer = [{"id": f"o-{n}", "counter": 600 - n, "step": "other", "tags": []} for n in range(450)]
    listing = [*newer, crashed()]

    def list_page(request: Any) -> tuple[int, dict[str, str], str]:
        query = dict(re.findall(r"([a-z]+)=([^&]*)", request.url.split("?", 1)[1]))
        offset, limit = int(query["offset"]), int(query["limit"])
        body = page(listing[offset : offset + limit], more=offset + limit < len(listing), count=len(listing))
        return 200, {}, json.dumps(body)

    loose.get(FAILED_URL, json=crashed())
    loose.get(EVENTS_URL, json=log("Killed"))
    loose.add_callback(responses.GET, LIST_URL, callback=list_page)
    loose.get(DATA_URL, json=page([], more=False, count=0))
    loose.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    loose.post(STATUS_URL)

    assert control() == 0
    assert api_requests(loose) <= 8, f"{api_requests(loose)} requests for one relaunch"


def test_k04_a_failing_outputs_list_costs_the_checkpoint_never_the_retry(
    as_controller: Path, loose: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # controller.md: "The retry is built by retry.py's own pieces, exactly as a relaunch from inside would be"
    # troubleshooting.md (retry.py): "Only the checkpoint is lost; the retry is created anyway."
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": {"valohai.execution-id": FAILED_ID}})
    loose.get(FAILED_URL, json=crashed())
    loose.get(EVENTS_URL, json=log("Killed"))
    loose.get(LIST_URL, json=page([crashed()], more=False, count=1))
    loose.get(DATA_URL, status=403, json={"detail": "You do not have permission to perform this action."})
    loose.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    loose.post(STATUS_URL)

    code = controller.main([], runtime=runtime)
    said_ = json.loads(loose.calls[-1].request.body)["status_detail"]
    assert (code, [r.outcome for r in records(loose) if r]) == (0, ["waiting", "started"]), said_


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is not readable JSON"),
        (b"", "is not readable JSON"),
        (b"[1, 2]", "the payload is not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "is not readable JSON"),
        (b'{"data": ["valohai.execution-id"]}', "the payload names no execution"),
        (b'{"data": {"valohai.execution-counter": 77}}', "the payload names no execution"),
        (b'{"data": {"valohai.execution-id": 12345}}', "the payload names no execution"),
        (b'{"data": {"valohai.execution-id": ""}}', "the payload names no execution"),
        (b" " * 5_000_000 + b"{}", "the payload names no execution"),
    ],
    ids=["binary", "empty", "array", "deep", "data-list", "counter-only", "id-int", "id-empty", "huge"],
)
def test_k06_payloads_of_odd_shapes_end_in_one_line_and_exit_2(
    as_controller: Path,
    loose: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: Any,
    content: bytes,
    expected: str,
) -> None:
    from valohai.internals import global_state

    file = tmp_path / "payload" / "payload.json"
    file.parent.mkdir()
    file.write_bytes(content)
    listing = {"payload": {"files": [{"name": "payload.json", "path": str(file), "uri": "datum://x"}]}}
    (as_controller / "inputs.json").write_text(json.dumps(listing))
    monkeypatch.setattr(global_state, "loaded", False)
    monkeypatch.setattr(global_state, "inputs", {})
    monkeypatch.setattr(sys, "argv", ["controller.py"])  # valohai-utils parses sys.argv (pytest's here)
    loose.post(STATUS_URL)

    assert controller.main([], runtime=runtime) == retry.EXIT_BAD_CONFIG
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[retry-controller] The retry controller could not act: ")
    assert expected in lines[0]
    assert [c.request.url for c in loose.calls] == [STATUS_URL]  # no API call


@pytest.mark.parametrize(
    ("detail", "words"),
    [
        (crashed(status="started"), "has not failed (it is started)"),
        (crashed(status="stopping"), "has not failed (it is stopping)"),
        (crashed(status="queued"), "has not failed (it is queued)"),
        (crashed(pipeline="0193a8e2-aaaa"), "ran in a pipeline"),
        (crashed(step="retry-controller"), "is a retry controller itself"),
        (
            crashed(status_detail=said("x", retry.Record("not_started", 1, cause="c"))),
            "retry.py dealt with #77 itself (its record says not_started)",
        ),
    ],
    ids=["running", "stopping", "queued", "pipeline-id", "controller", "not-started-record"],
)
def test_k07_executions_that_need_no_retry_get_none(
    api: responses.RequestsMock, control: Callable[..., int], detail: dict[str, Any], words: str
) -> None:
    api.get(FAILED_URL, json=detail)
    api.post(STATUS_URL)
    assert control() == 0
    [record] = records(api)
    assert record is not None and record.outcome == "stood_down" and record.failed == FAILED_ID
    assert words in json.loads(api.calls[-1].request.body)["status_detail"]


def test_k08_a_lost_create_answer_is_asked_again_and_the_confirmed_copy_is_named(
    api: responses.RequestsMock, control: Callable[..., int]
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log("Killed"))
    api.get(LIST_URL, json=page([crashed()], more=False, count=1))
    api.get(DATA_URL, json=page([], more=False, count=0))
    api.post(LIST_URL, body=requests.exceptions.ConnectionError("Connection aborted."))
    api.post(LIST_URL, json={"id": "id-79", "counter": 79}, status=201)
    api.post(STATUS_URL)

    assert control() == 0
    [_, record] = records(api)
    assert record == retry.Record("started", 1, "id-79", record.cause if record else "", failed=FAILED_ID)
    assert len(api.calls) <= 8


def test_k09_a_log_without_events_or_messages_is_retried_not_fatal(
    api: responses.RequestsMock, control: Callable[..., int]
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json={"events": [{"time": 1}, "x", None, {"message": None}]})
    api.get(LIST_URL, json=page([crashed()], more=False, count=1))
    api.get(DATA_URL, json=page([], more=False, count=0))
    api.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    api.post(STATUS_URL)
    assert control() == 0
    assert [r.outcome for r in records(api) if r] == ["waiting", "started"]


def test_k10_a_traceback_older_than_the_last_200_lines_does_not_block_the_retry(
    api: responses.RequestsMock, control: Callable[..., int]
) -> None:
    api.get(FAILED_URL, json=crashed())
    api.get(EVENTS_URL, json=log("Traceback (most recent call last):", *(f"epoch {n}" for n in range(200))))
    api.get(LIST_URL, json=page([crashed()], more=False, count=1))
    api.get(DATA_URL, json=page([], more=False, count=0))
    api.post(LIST_URL, json={"id": "id-78", "counter": 78}, status=201)
    api.post(STATUS_URL)
    assert control() == 0


def test_k11_bad_controller_settings_end_with_exit_2_and_a_record(
    as_controller: Path, loose: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller, "read_payload", lambda: {"data": {"valohai.execution-id": FAILED_ID}})
    loose.get(FAILED_URL, json=crashed(parameters={}))
    loose.get(EVENTS_URL, json=log("Killed"))
    loose.post(STATUS_URL)
    assert controller.main(["--delay=1e9"], runtime=runtime) == retry.EXIT_BAD_CONFIG
    assert [r.outcome for r in records(loose) if r] == ["not_started"]


# =====================================================================================
# end to end, on the stand-in
# =====================================================================================


def _standin_report(platform: Any, clean_env: pytest.MonkeyPatch, capsys: Any) -> dict[str, Any]:
    clean_env.setenv("VALOHAI_HOST", platform.host)
    clean_env.setenv("VH_API_TOKEN", platform.token)
    capsys.readouterr()
    assert chains.main(["report", "--project", PROJECT_ID, "--days", "1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_e02_a_crash_retried_by_the_controller_that_crashes_again_is_one_chain_that_gave_up(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: Any
) -> None:
    from standin import Platform

    with Platform(tmp_path) as platform:
        platform.trigger_on = {"error"}
        platform.start(failure_type="crash", failure_rate=1.0, delay=0, retries=1)
        platform.wait_until_idle(100)
        document = _standin_report(platform, clean_env, capsys)
        controllers = platform.controllers()
    assert len(controllers) == 2
    assert (document["chains"], document["gave_up"], document["no_verdict"]) == (1, 1, 0), document
    assert document["failed_attempts"] == 2


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_e04_a_controller_with_an_unreadable_payload_is_not_a_chain(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: Any
) -> None:
    from standin import COMMIT, Platform

    with Platform(tmp_path) as platform:
        platform.trigger_on = {"error"}
        platform.start(failure_rate=0.0)
        datum = platform.upload_by_hand("payload.json", "<html>not json</html>")
        platform._create(
            {
                "project": PROJECT_ID,
                "commit": COMMIT,
                "step": "retry-controller",
                "title": "Retry controller",
                "inputs": {"payload": [f"datum://{datum.id}"]},
                "parameters": {},
                "environment_variables": {},
                "inherit_environment_variables": True,
            }
        )
        platform.wait_until_idle(100)
        document = _standin_report(platform, clean_env, capsys)
    assert (document["chains"], document["first_attempt"], document["no_verdict"]) == (1, 1, 0), document


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_e07_a_controller_whose_create_answer_is_lost_once_leaves_one_working_retry(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: Any
) -> None:
    from standin import Fault, Platform

    with Platform(tmp_path) as platform:
        platform.trigger_on = {"error"}
        platform.override(1, failure_rate=0.0)
        platform.start(failure_type="crash", failure_rate=1.0, delay=0, retries=3)
        platform.inject(Fault("POST", "/api/v0/executions/", "lost"))  # the controller's create: the only one
        executions = platform.wait_until_idle(100)
        document = _standin_report(platform, clean_env, capsys)
        [ctl] = platform.controllers()
        calls = platform.calls_of(ctl)
    trains = [e for e in executions if e.step == "train"]
    assert len(trains) == 3  # the crash and two copies of retry 1
    worked = [e for e in trains[1:] if any(line.startswith("Training epochs") for _, _, line in e.log)]
    assert len(worked) == 1
    assert (document["chains"], document["recovered"], document["stood_down"]) == (1, {"1": 1}, 1), document
    assert len(calls) <= 8


# --- found by a later adversarial run -------------------------------------------------------


def test_r40_the_listing_leaves_half_the_time_bound_to_the_details(
    token: pytest.MonkeyPatch, api: responses.RequestsMock
) -> None:
    # Each list page takes 50 s, each detail 1 s: the listing must not use up the 180 s.
    clock = FakeClock(now_value=0.0)

    def listed(request: Any) -> tuple[int, dict[str, str], str]:
        clock.now_value += 50
        offset = int(re.search(r"offset=([0-9]+)", request.url).group(1))  # type: ignore[union-attr]
        results = [entry(1000 - offset - n, "complete", retry_number=1) for n in range(2)]
        return 200, {}, json.dumps(page(results, more=True))

    def detailed(request: Any) -> tuple[int, dict[str, str], str]:
        clock.now_value += 1
        counter = int(request.url.split("?")[0].rstrip("/").rsplit("-", 1)[1])
        return 200, {}, json.dumps({**entry(counter, "complete", retry_number=1), "environment_variables": {}})

    api.add_callback(responses.GET, LIST_URL, callback=listed)
    api.add_callback(responses.GET, re.compile(rf"{LIST_URL}{eid(0)[:-12]}[0-9]+/"), callback=detailed)
    api_client = retry.ValohaiAPI(TOKEN, HOST, sleep=no_sleep, clock=clock.now, budget=240)
    period = chains.read_period(api_client, PROJECT_ID, NOW - 7 * 24 * HOUR, clock=clock.now)

    assert period.stopped == "the time bound of 180 s"
    assert [attempt.counter for attempt in period.attempts] == [1000, 999, 998, 997]


@pytest.mark.parametrize(
    "odd",
    [{"status": ["error"]}, {"status": {"name": "error"}}, {"ctime": "9999-12-31T23:59:59-23:59"}],
    ids=["status-a-list", "status-an-object", "ctime-out-of-range"],
)
def test_r41_one_entry_of_an_odd_shape_does_not_cost_the_report(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any, odd: dict[str, Any]
) -> None:
    expect_project(api)
    odd_one = {**entry(50, "error", said(CONNECTION, retry.Record("gave_up", 0, cause=CONNECTION))), **odd}
    expect_page(api, 0, [entry(51, "complete"), odd_one], more=False)  # the odd one the oldest

    document = json_report(capsys)

    assert (document["executions"], document["chains"]) == (2, 2), document


def test_r42_the_json_report_masks_the_token_as_the_text_does(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any
) -> None:
    expect_project(api, name=f"churn {TOKEN}")
    cause = f"HTTPError: 401 for Token {TOKEN}"
    expect_page(api, 0, [entry(50, "error", said(cause, retry.Record("not_retried", 0, cause=cause)))], more=False)

    document = json_report(capsys)

    assert TOKEN not in json.dumps(document)
    assert document["project_name"] == "churn ***" and document["causes"][0]["cause"].endswith("Token ***")


@pytest.mark.parametrize("days", [".5", "7.", "0000007", "0.0000001"])
def test_r43_days_given_as_any_plain_number_is_taken(
    token: pytest.MonkeyPatch, api: responses.RequestsMock, capsys: Any, days: str
) -> None:
    expect_project(api)
    expect_page(api, 0, [], more=False)

    assert chains.main(["report", "--project", PROJECT_ID, "--days", days], now=lambda: NOW, sleep=no_sleep) == 0
