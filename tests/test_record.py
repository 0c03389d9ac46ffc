"""One record decides: the parent names its heir, and every copy of a retry reads it.

A retry's start costs one request (its parent's detail) whatever the project holds; only
a parent that ended without naming an heir leaves a copy to look for others, bounded.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import (
    AUTH,
    CREATE_URL,
    HOST,
    PROJECT_ID,
    STATUS_URL,
    FakeClock,
    records,
    set_tags,
    status_details,
)
from responses import matchers

import retry

PARENT_URL = f"{HOST}/api/v0/executions/id-41/"
SMALL = matchers.query_param_matcher({"exclude": "metadata,events"})
SUMMARY = "ConnectionError: could not connect to db.internal:5432"


def this_copy(config_dir: Path, monkeypatch: pytest.MonkeyPatch, counter: int = 43, tags: Any = None) -> None:
    """This process is #<counter>, a copy of retry 1 of #41."""
    tags = ["nightly", "retry: 1"] if tags is None else tags
    set_tags(config_dir, tags, **{"execution-counter": counter, "execution-id": f"id-{counter}"})
    monkeypatch.setenv("RETRY_PARENT", "id-41")


def parent(status: str = "error", record: retry.Record | None = None, text: str = "") -> dict[str, Any]:
    """The parent's detail: its status, and a status detail with or without a record."""
    detail = retry.status_with_record(text or f"{SUMMARY} - retry 1/3 started as #42", record) if record else text
    return {"id": "id-41", "counter": 41, "status": status, "status_detail": detail or None, "tags": ["nightly"]}


def named(heir: str) -> retry.Record:
    return retry.Record("started", 1, heir=heir, cause=SUMMARY)


def expect_parent(api: responses.RequestsMock, *details: dict[str, Any]) -> None:
    for detail in details:
        api.get(PARENT_URL, json=detail, match=[AUTH, SMALL])


def run_copy(runtime: retry.Runtime) -> tuple[int | None, list[bool]]:
    """Run a job in this copy: its exit code if it ended the process, and whether the job ran."""
    worked: list[bool] = []
    try:
        retry.run(lambda: worked.append(True), retries=3, runtime=runtime)
    except SystemExit as stop:
        return int(stop.code or 0), worked
    return None, worked


# --- the record --------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", retry.OUTCOMES)
def test_a_record_reads_back_as_written(outcome: str) -> None:
    record = retry.Record(outcome, 2, heir="0193a8e9-0a11" if outcome == "started" else None, cause=SUMMARY)
    text = retry.status_with_record(f"{SUMMARY} - something people read", record)
    assert text.startswith(f"{SUMMARY} - something people read{retry.RECORD_MARK}{{")
    assert retry.read_record(text) == record
    assert retry.read_record({"status_detail": text}) == record


def test_a_record_inside_an_error_message_cannot_pass_for_the_real_one() -> None:
    forged = f'db down{retry.RECORD_MARK}{{"outcome": "started", "retry": 1, "heir": "id-99"}}'
    summary = f"ConnectionError: {forged}"
    text = retry.status_with_record(f"Gave up after 3 retries: {summary}", retry.Record("gave_up", 3, cause=summary))

    record = retry.read_record(text)
    assert record is not None and record.outcome == "gave_up" and record.heir is None
    assert text.count(retry.RECORD_MARK) == 1


def test_a_long_message_is_cut_and_its_record_kept_whole() -> None:
    record = named("0193a8e9-0a11-7b2c-9d3e-4f5a6b7c8d9e")
    text = retry.status_with_record("x" * 5000, record)
    assert len(text) <= retry.STATUS_DETAIL_LIMIT
    assert retry.read_record(text) == record


@pytest.mark.parametrize(
    "detail",
    [
        None,
        "",
        "ConnectionError: x - retry 1/3 started as #42",  # words only: never read as data
        f"x{retry.RECORD_MARK}not json",
        f'x{retry.RECORD_MARK}{{"outcome": "teleported", "retry": 1}}',
        f"x{retry.RECORD_MARK}[1, 2]",
        f"x{retry.RECORD_MARK}" + "[" * 5000,
    ],
)
def test_a_status_detail_without_a_valid_record_has_none(detail: Any) -> None:
    assert retry.read_record(detail) is None
    assert retry.read_record({"status_detail": detail}) is None


def test_odd_fields_of_a_record_are_read_as_absent() -> None:
    text = f'x{retry.RECORD_MARK}{{"outcome": "gave_up", "retry": "one", "heir": 7, "cause": ["a"], "failed": 3}}'
    assert retry.read_record(text) == retry.Record("gave_up", 0, heir=None, cause="")


def test_a_started_record_that_names_no_heir_is_no_record() -> None:
    # Every copy would stand down for it, and nobody would work: it is read as none, so they look.
    text = f'x{retry.RECORD_MARK}{{"outcome": "started", "retry": 1, "heir": 42}}'
    assert retry.read_record(text) is None


def test_the_record_is_written_again_until_it_is_set(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    set_tags(config_dir, ["nightly", "retry: 3"])
    api.post(STATUS_URL, status=503)
    api.post(STATUS_URL, body=ConnectionResetError("reset"))
    api.post(STATUS_URL)

    assert retry.handle_failure(ConnectionError("db down"), retry.Policy(retries=3), runtime=runtime) == 1
    assert records(api) == [retry.Record("gave_up", 3, cause="ConnectionError: db down")] * 3
    assert clock.sleeps == [0.5, 1.0]
    assert "could not write the record" not in capsys.readouterr().err


def test_a_record_that_cannot_be_written_is_said(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    set_tags(config_dir, ["nightly", "retry: 3"])
    api.post(STATUS_URL, status=503)

    assert retry.handle_failure(ConnectionError("db down"), retry.Policy(retries=3), runtime=runtime) == 1
    assert len(api.calls) == retry.RECORD_TRIES
    err = capsys.readouterr().err
    assert "could not write the record of this attempt: its retry, if any, will look for copies itself" in err


# --- a copy of a retry reads its parent's record ------------------------------------------


def test_the_copy_its_parent_named_does_the_work_for_one_request(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    this_copy(config_dir, monkeypatch)
    expect_parent(api, parent(record=named("id-43")))

    assert run_copy(runtime) == (None, [True])
    assert [call.request.url.split("?")[0] for call in api.calls] == [PARENT_URL]  # no list, whatever the project


@pytest.mark.parametrize(
    "tags",
    [["nightly", "retry: 1"], ["nightly"]],
    ids=["tagged", "tag-lost-from-execution-json"],
)
@pytest.mark.parametrize(
    "why",
    [
        "the named copy failed and its status detail was lost",
        "the named copy's verdict was unconfirmed",
        "the named copy said started as (number unknown)",
        "the named copy was stopped by its user",
        "the named copy crashed before its job started",
    ],
)
def test_a_copy_its_parent_did_not_name_stands_down_whatever_became_of_the_named_one(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    tags: list[str],
    why: str,
) -> None:
    # Whatever #42 did or does, #41 named it: #43 stands down, and never even reads #42.
    this_copy(config_dir, monkeypatch, tags=tags)
    expect_parent(api, parent(record=named("id-42")))
    api.post(STATUS_URL)

    assert run_copy(runtime) == (0, [])
    message = "Stood down: #41 named another execution as retry 1/3; this copy did nothing"
    assert status_details(api) == [message]
    assert records(api) == [retry.Record("stood_down", 1, heir="id-42")]
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"[retry] {message}"  # never "the job succeeded"


def test_a_copy_waits_while_its_parent_has_neither_ended_nor_named_one(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    this_copy(config_dir, monkeypatch)
    monkeypatch.setenv("RETRY_NOT_BEFORE", retry.format_instant(clock.now_value + 5))
    expect_parent(api, parent("started", text="ConnectionError: x"), parent("error", record=named("id-43")))
    api.post(STATUS_URL)

    assert run_copy(runtime) == (None, [True])
    assert clock.sleeps == [5]  # its own delay first: time enough for the parent to name it
    assert status_details(api) == [
        "Waiting 5 s before retry 1/3 starts work",
        "Waiting for the failed execution to name its retry",
    ]


def test_the_wait_for_a_silent_parent_is_bounded(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    this_copy(config_dir, monkeypatch)
    expect_parent(api, parent("started"))  # every look: still running, no record
    api.post(STATUS_URL)
    listing = [{"id": "id-43", "counter": 43, "tags": ["nightly", "retry: 1"]}, parent("started")]
    api.get(CREATE_URL, json={"count": 2, "next": None, "results": listing})

    assert run_copy(runtime) == (None, [True])
    assert retry.PARENT_WAIT - 16 <= clock.slept <= retry.PARENT_WAIT
    assert max(clock.sleeps) == 15
    assert "its parent has neither ended nor named its retry after 600 s" in capsys.readouterr().err


def test_a_copy_that_cannot_read_its_parent_does_the_work_and_says_why(
    config_dir: Path, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    this_copy(config_dir, monkeypatch)
    monkeypatch.delenv("VH_API_TOKEN")

    assert run_copy(runtime) == (None, [True])
    assert (
        "could not check that this is the only retry 1 of its parent, so doing the work: VH_API_TOKEN is not set"
        in capsys.readouterr().err
    )


def test_a_second_run_in_the_process_does_not_check_again(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    this_copy(config_dir, monkeypatch)
    expect_parent(api, parent(record=named("id-43")))

    assert run_copy(runtime) == (None, [True])
    assert run_copy(runtime) == (None, [True])
    assert len(api.calls) == 1


# --- a parent that ended without naming one: the lowest copy that works -------------------


def copy_of_retry(counter: int, **fields: Any) -> dict[str, Any]:
    variables = {"RETRY_PARENT": {"value": "id-41", "secret": False}}
    return {
        "id": f"id-{counter}",
        "counter": counter,
        "tags": ["nightly", "retry: 1"],
        "step": "train",
        "environment_variables": variables,
        "status_detail": None,
        **fields,
    }


def page(*items: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(items), "next": None, "results": list(items)}


UNCONFIRMED = parent(record=retry.Record("unconfirmed", 1, cause=SUMMARY))


@pytest.mark.parametrize(
    ("twin", "stands_down"),
    [
        # A crash or a Stop is the chain's fate, as for a named copy: a retry controller retries a
        # crash; were this copy to work too, the crash's retry and this one would both run the chain.
        ({"status": "error", "status_detail": None}, True),
        ({"status": "stopped"}, True),
        ({"status": "system_error"}, True),  # a status never seen
        ({"status": "error", "status_detail": retry.status_with_record("x", retry.Record("stood_down", 1))}, False),
        ({"status": "error", "status_detail": retry.status_with_record("x", retry.Record("invalid", 1))}, False),
        ({"status": "error", "status_detail": retry.status_with_record("x", named("id-47"))}, True),  # lives on
        ({"status": "error", "status_detail": retry.status_with_record("x", retry.Record("gave_up", 1))}, True),
        ({"status": "started"}, True),
        ({"status": "queued"}, True),
        ({"status": "complete"}, True),
    ],
    ids=[
        "crashed",
        "stopped",
        "unknown",
        "stood-down",
        "invalid",
        "relaunched",
        "gave-up",
        "started",
        "queued",
        "complete",
    ],
)
@pytest.mark.parametrize("parent_detail", [UNCONFIRMED, parent(text="Waiting 5 s")], ids=["unconfirmed", "killed"])
def test_without_a_named_heir_the_lowest_copy_that_did_not_stand_down_does_it(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    parent_detail: dict[str, Any],
    twin: dict[str, Any],
    stands_down: bool,
) -> None:
    this_copy(config_dir, monkeypatch, counter=44)
    expect_parent(api, parent_detail)
    mine = {"id": "id-44", "counter": 44, "tags": ["nightly", "retry: 1"]}
    api.get(CREATE_URL, json=page(mine, copy_of_retry(42, **twin), parent_detail), match=[AUTH])
    if stands_down:
        api.post(STATUS_URL)

    code, worked = run_copy(runtime)
    assert (code, worked) == ((0, []) if stands_down else (None, [True]))
    if stands_down:
        assert status_details(api) == [
            "Stood down: #42 is already retry 1/3 of the same failure and does the work; this copy did nothing"
        ]


def test_a_list_entry_without_a_status_detail_is_read_whole_before_it_decides(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The abridged entry shows #42 started (this copy would stand down); its detail shows it stood down.
    this_copy(config_dir, monkeypatch, counter=44)
    expect_parent(api, UNCONFIRMED)
    mine = {"id": "id-44", "counter": 44, "tags": ["nightly", "retry: 1"]}
    abridged = copy_of_retry(42, status="started")
    del abridged["status_detail"]
    api.get(CREATE_URL, json=page(mine, abridged, UNCONFIRMED), match=[AUTH])
    stood = retry.status_with_record("Stood down", retry.Record("stood_down", 1, heir="id-40"))
    api.get(f"{HOST}/api/v0/executions/id-42/", json=copy_of_retry(42, status="error", status_detail=stood))

    assert run_copy(runtime) == (None, [True])
    assert len(api.calls) == 3


@pytest.mark.parametrize("restart", ["a-folder-with-files", "an-empty-folder", "listed-in-inputs-json"])
def test_a_run_valohai_restarted_after_a_spot_interruption_does_the_work(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: Any,
    restart: str,
) -> None:
    # Its parent's record names the interrupted execution; the restart carries on for it, even
    # when the interrupted run had uploaded nothing yet.
    this_copy(config_dir, monkeypatch, counter=45)
    monkeypatch.setenv("VH_INPUTS_DIR", str(tmp_path / "inputs"))
    folder = tmp_path / "inputs" / "_restart"
    if restart == "listed-in-inputs-json":
        (config_dir / "inputs.json").write_text(json.dumps({"_restart": {"files": []}}))
    else:
        folder.mkdir(parents=True)
    if restart == "a-folder-with-files":
        (folder / "checkpoint-epoch-0003.json").write_text("{}")

    assert run_copy(runtime) == (None, [True])
    assert [c.request.url for c in api.calls] == [] and "could not check" not in capsys.readouterr().err


def test_look_alikes_of_a_sweep_are_told_apart_before_any_detail_is_read(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    this_copy(config_dir, monkeypatch, counter=300)
    expect_parent(api, UNCONFIRMED)
    sweep = [
        {"id": f"id-{n}", "counter": n, "tags": ["nightly", "retry: 1"], "step": "train", "parameters": {"lr": n}}
        for n in range(299, 41, -1)
    ]
    mine = {"id": "id-300", "counter": 300, "tags": ["nightly", "retry: 1"]}
    api.get(CREATE_URL, json=page(mine, *sweep, UNCONFIRMED), match=[AUTH])

    assert run_copy(runtime) == (None, [True])
    assert len(api.calls) == 2  # the parent and one page: no detail of the 258 look-alikes


def test_a_server_that_ignores_the_order_asked_is_read_on(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Oldest first: the parent comes before its copies, yet #42 must still be found.
    this_copy(config_dir, monkeypatch)
    expect_parent(api, UNCONFIRMED)
    oldest_first = [UNCONFIRMED, copy_of_retry(42, status="started")]
    api.get(CREATE_URL, json={"count": 3, "next": "more", "results": oldest_first})
    last = {"count": 3, "next": None, "results": [{"id": "id-43", "counter": 43, "tags": ["nightly", "retry: 1"]}]}
    offset = {"project": PROJECT_ID, "ordering": "-counter", "deleted": "false", "limit": "100", "offset": "2"}
    api.get(CREATE_URL, json=last, match=[matchers.query_param_matcher(offset)])
    api.post(STATUS_URL)

    assert run_copy(runtime) == (0, [])
    assert status_details(api)[0].startswith("Stood down: #42")


def test_the_search_without_a_named_heir_is_bounded(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    this_copy(config_dir, monkeypatch, counter=99_999)
    expect_parent(api, UNCONFIRMED)
    endless = {"next": "more", "results": [{"id": "id-x", "counter": 99_999, "tags": []}]}
    api.get(CREATE_URL, json=endless)

    assert run_copy(runtime) == (None, [True])
    assert len(api.calls) == 1 + retry.FALLBACK_PAGES
    assert "could not check that this is the only retry 1 of its parent, so doing the work" in capsys.readouterr().err


def test_a_relaunch_names_the_copy_it_confirmed(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    detail = json.loads((Path(__file__).parent / "fixtures" / "execution-detail.json").read_text())
    api.get(f"{HOST}/api/v0/executions/{detail['id']}/", json=detail)
    api.post(CREATE_URL, json={"id": "id-42", "counter": 42}, status=201)
    api.post(STATUS_URL)

    assert retry.handle_failure(ConnectionError("db down"), retry.Policy(), runtime=runtime) == 75
    assert records(api) == [retry.Record("started", 1, heir="id-42", cause="ConnectionError: db down")]


def test_a_list_entry_without_tags_is_read_whole_so_a_twin_is_not_missed(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    this_copy(config_dir, monkeypatch, counter=44)
    expect_parent(api, UNCONFIRMED)
    abridged = {"id": "id-42", "counter": 42, "status": "started", "step": "train"}  # no tags shown
    api.get(CREATE_URL, json=page({"id": "id-44", "counter": 44}, abridged, UNCONFIRMED), match=[AUTH])
    api.get(f"{HOST}/api/v0/executions/id-42/", json=copy_of_retry(42, status="started"))
    api.post(STATUS_URL)

    assert run_copy(runtime) == (0, [])
    assert records(api) == [retry.Record("stood_down", 1, heir="id-42")]


# --- one turn per process: threads, and a not-before that had to be clamped ----------------


@pytest.fixture
def ended(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The codes os._exit was called with; here each ends only its own thread."""
    codes: list[int] = []
    monkeypatch.setattr(retry.os, "_exit", lambda code: (codes.append(code), sys.exit(code)))
    return codes


def in_another_thread(runtime: retry.Runtime) -> tuple[threading.Thread, list[tuple[int | None, list[bool]]]]:
    """A thread (not started) that runs a job in this copy too, and where its result will be."""
    results: list[tuple[int | None, list[bool]]] = []
    return threading.Thread(target=lambda: results.append(run_copy(runtime))), results


def test_a_not_before_clamped_to_max_delay_is_waited_out_once(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    this_copy(config_dir, monkeypatch)
    monkeypatch.setenv("RETRY_NOT_BEFORE", "not-a-time")
    expect_parent(api, parent("started", text="epoch 3"), parent("error", record=named("id-43")))
    api.post(STATUS_URL)

    worked: list[bool] = []
    retry.run(lambda: worked.append(True), retries=3, max_delay=120, runtime=runtime)
    assert worked == [True]
    assert clock.slept == 120  # the parent still relaunching is read after the one wait, not after a second
    assert status_details(api).count("Waiting 120 s before retry 1/3 starts work") == 1


def test_a_second_thread_in_a_copy_that_stands_down_stands_down_too(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    ended: list[int],
) -> None:
    # The other thread calls run() while this one checks: it waits for the answer, and obeys it.
    this_copy(config_dir, monkeypatch)
    other, results = in_another_thread(runtime)

    def parent_read(request: Any) -> tuple[int, dict[str, str], str]:
        other.start()  # while this thread holds its turn
        return 200, {}, json.dumps(parent(record=named("id-42")))

    api.add_callback(responses.GET, PARENT_URL, callback=parent_read, match=[AUTH, SMALL])
    api.post(STATUS_URL)

    assert run_copy(runtime) == (0, [])
    other.join(timeout=30)
    assert results == [(0, [])] and set(ended) == {0}  # and the main thread ends at once if the other lives
    assert len(status_details(api)) == 1  # one check, one stand-down
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "[retry] Stood down: #41 named another execution as retry 1/3; this copy did nothing"


def test_ctrl_c_during_the_wait_ends_the_turn_for_every_thread(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    ended: list[int],
) -> None:
    # A second thread must not take the turn up again: no second wait, no job, no retry.
    this_copy(config_dir, monkeypatch)
    monkeypatch.setenv("RETRY_NOT_BEFORE", retry.format_instant(clock.now_value + 30))
    other, results = in_another_thread(runtime)

    def interrupted_sleep(seconds: float) -> None:
        other.start()
        raise KeyboardInterrupt  # Ctrl-C while the main thread waits its turn

    api.post(STATUS_URL)
    with pytest.raises(KeyboardInterrupt):
        run_copy(dataclasses.replace(runtime, sleep=interrupted_sleep))
    other.join(timeout=30)
    assert results == [(1, [])] and ended == [1]
    assert status_details(api) == [
        "Waiting 30 s before retry 1/3 starts work",
        "Not retried: attempt 2 was interrupted (KeyboardInterrupt)",
    ]


def test_a_copy_that_stands_down_ends_at_once_whatever_threads_its_job_started(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    ended: list[int],
) -> None:
    this_copy(config_dir, monkeypatch)
    expect_parent(api, parent(record=named("id-42")))
    api.post(STATUS_URL)
    stop = threading.Event()
    heartbeat = threading.Thread(target=stop.wait, name="heartbeat")  # not a daemon: sys.exit would wait
    heartbeat.start()
    try:
        assert run_copy(runtime) == (0, [])
    finally:
        stop.set()
        heartbeat.join()
    assert ended == [0]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "[retry] Stood down: #41 named another execution as retry 1/3; this copy did nothing"


# --- Ctrl-C once a create was sent: the record still tells the copies -----------------------


def test_ctrl_c_after_a_create_was_sent_leaves_an_unconfirmed_record(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    detail = json.loads((Path(__file__).parent / "fixtures" / "execution-detail.json").read_text())
    api.get(f"{HOST}/api/v0/executions/{detail['id']}/", json=detail)
    api.post(CREATE_URL, json={"id": "id-42", "counter": 42}, status=201)
    api.post(STATUS_URL)

    def interrupted_create(api_: retry.ValohaiAPI, payload: dict[str, Any], checkpoint: Any) -> Any:
        api_.post("/api/v0/executions/", payload)  # the server acted; then Ctrl-C, before the answer counted
        raise KeyboardInterrupt

    monkeypatch.setattr(retry, "create_retry", interrupted_create)
    with pytest.raises(KeyboardInterrupt):
        retry.handle_failure(ConnectionError("db down"), retry.Policy(), runtime=runtime)
    assert records(api) == [retry.Record("unconfirmed", 1, cause="ConnectionError: db down")]
    assert status_details(api) == [
        "Not retried: attempt 1 was interrupted (KeyboardInterrupt) after a create was sent:"
        " retry 1 may exist all the same; look for the tag 'retry: 1'"
    ]
    assert retry._process.outcome == retry.EXIT_RETRY_UNCONFIRMED


def test_ctrl_c_while_the_heir_is_named_still_names_it(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    detail = json.loads((Path(__file__).parent / "fixtures" / "execution-detail.json").read_text())
    api.get(f"{HOST}/api/v0/executions/{detail['id']}/", json=detail)
    api.post(CREATE_URL, json={"id": "id-42", "counter": 42}, status=201)
    api.post(STATUS_URL)
    written: list[retry.Record] = []
    real_write = retry.write_record

    def write_then_interrupt(message: str, record: retry.Record, sleep: Any = None) -> bool:
        written.append(record)
        if len(written) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the started record is being written
        return real_write(message, record)

    monkeypatch.setattr(retry, "write_record", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        retry.handle_failure(ConnectionError("db down"), retry.Policy(), runtime=runtime)
    heir = retry.Record("started", 1, heir="id-42", cause="ConnectionError: db down")
    assert written == [heir, heir] and records(api) == [heir]
