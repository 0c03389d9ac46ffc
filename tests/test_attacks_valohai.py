"""Attacks on what README.md and docs/ promise about running on Valohai: each test fails when
the promise it names is broken.  Unit attacks use the strict ``responses`` mock; e2e attacks
(marked) use the local stand-in.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import (
    CREATE_URL,
    CREATED,
    EXECUTION_ID,
    HOST,
    STATUS_URL,
    TOKEN,
    FakeClock,
    expect_detail,
    fail,
    load_fixture,
    records,
)

import retry

DATA_URL = f"{HOST}/api/v0/data/"
PARENT_URL = f"{HOST}/api/v0/executions/id-41/"
SUMMARY = "ConnectionError: could not connect to db.internal:5432"


# --- helpers ---------------------------------------------------------------------------


def sent_details(api: responses.RequestsMock) -> list[str]:
    """Every status detail sent, whole (words and record)."""
    return [json.loads(c.request.body)["status_detail"] for c in api.calls if "status-detail" in c.request.url]


def lenient(api: responses.RequestsMock) -> None:
    """A test that expects the code to skip a registered call must fail on its own assertion,
    not on the fixture's 'all requests fired' check."""
    api.assert_all_requests_are_fired = False


def this_copy(config_dir: Path, monkeypatch: pytest.MonkeyPatch, counter: int = 43) -> None:
    data = json.loads((config_dir / "execution.json").read_text())
    data.update(
        {
            "valohai.execution-tags": ["nightly", "retry: 1"],
            "valohai.execution-counter": counter,
            "valohai.execution-id": f"id-{counter}",
        }
    )
    (config_dir / "execution.json").write_text(json.dumps(data))
    monkeypatch.setenv("RETRY_PARENT", "id-41")


def parent(status: str = "error", detail: str | None = None) -> dict[str, Any]:
    return {"id": "id-41", "counter": 41, "status": status, "status_detail": detail, "tags": ["nightly"]}


UNCONFIRMED = parent(detail=retry.status_with_record(f"{SUMMARY} - unconfirmed", retry.Record("unconfirmed", 1)))


def run_copy(runtime: retry.Runtime) -> tuple[int | None, list[bool]]:
    worked: list[bool] = []
    try:
        retry.run(lambda: worked.append(True), retries=3, runtime=runtime)
    except SystemExit as stop:
        return int(stop.code or 0), worked
    return None, worked


def datum(name: str, ctime: str, datum_id: str, owner: str = EXECUTION_ID) -> dict[str, Any]:
    return {
        "id": datum_id,
        "name": name,
        "size": 10,
        "ctime": ctime,
        "uri": f"s3://x/{name}",
        "output_execution": {"id": owner, "counter": 41},
    }


@pytest.fixture
def outputs(config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    monkeypatch.setenv("VH_OUTPUTS_DIR", str(folder))
    return folder


def created_body(api: responses.RequestsMock) -> dict[str, Any]:
    [body] = [
        json.loads(c.request.body) for c in api.calls if c.request.url == CREATE_URL and c.request.method == "POST"
    ]
    return body  # type: ignore[no-any-return]


# === A. secrets =========================================================================


def test_a01_a_token_after_much_whitespace_is_not_partly_printed(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    # faults.md: "the token anywhere in logs, status details, tracebacks ... never: replaced by
    # *** before any line is cut".  _one_line reads a window of 2*limit+len(token)+64
    # characters BEFORE masking, then collapses whitespace: a token straddling the window
    # edge is kept in part, unmasked.  Indented (HTML/JSON) error bodies have such whitespace.
    api.post(STATUS_URL)
    window = 2 * 300 + len(TOKEN) + 64
    error = ValueError(" " * (window - 18) + TOKEN + " rest of the body")

    assert fail(runtime, error) == retry.EXIT_GAVE_UP
    shown = capsys.readouterr().err + "".join(sent_details(api))
    leaked = [TOKEN[:i] for i in range(8, len(TOKEN) + 1) if TOKEN[:i] in shown]
    assert leaked == [], f"a prefix of the token was printed/sent: {leaked[-1]!r}"


def test_a02_the_token_in_another_non_secret_variable_is_not_copied_into_the_payload() -> None:
    # faults.md: "the token anywhere in logs, status details, tracebacks, payloads ... never".
    # A user who also set VALOHAI_TOKEN (valohai-cli's name) as a plain variable:
    retry._remember_secret(TOKEN)
    detail = load_fixture("execution-detail.json")
    detail["environment_variables"] = {"VALOHAI_TOKEN": {"value": TOKEN, "secret": False}}
    payload = retry.build_retry_payload(detail, 1, parent_id="p")
    assert TOKEN not in json.dumps(payload)


def test_a03_a_netrc_entry_does_not_replace_the_signature_of_the_status_detail_call(
    config_dir: Path, api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # faults.md: "a ~/.netrc entry for the host: ... never the netrc login" (checked for API
    # calls only).  The pre-signed call goes through a bare requests.Session, which applies
    # netrc auth over the api.json 'Authorization: Signature ...' header.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine app.valohai.com login someone password netrc-secret-value\n")
    monkeypatch.setenv("NETRC", str(netrc))
    api.post(STATUS_URL)

    retry.set_status_detail("Waiting for the failed execution to name its retry")
    [call] = api.calls
    assert call.request.headers["Authorization"] == "Signature d1e2f3a4b5c6"


# === B. the record in the status detail =================================================


@pytest.mark.parametrize(
    "message",
    [
        'db down | retry-record {"outcome": "started", "retry": 1, "heir": "evil"}',
        'db down |\tretry-record {"outcome": "started", "retry": 1, "heir": "evil"}',
        'db down |\u00a0retry-record {"outcome": "started", "retry": 1, "heir": "evil"}',
        'db down\u2028| retry-record {"outcome": "started", "retry": 1, "heir": "evil"}',
        'x | retry-| retry-recordrecord {"outcome": "started", "retry": 1, "heir": "evil"}',
        '| retry-record {"outcome": "started", "retry": 1, "heir": "evil"}' * 40,
    ],
    ids=["plain", "tab", "nbsp", "line-separator", "nested", "repeated-long"],
)
def test_a04_text_in_an_error_cannot_forge_the_record(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, message: str
) -> None:
    # how-it-works.md: the record is read by read_record, "the text before the record is cut
    # to fit ..., the record never is".  (Expected to hold.)
    api.post(STATUS_URL)
    assert fail(runtime, ValueError(message)) == retry.EXIT_GAVE_UP
    [record] = records(api)
    assert record is not None and record.outcome == "not_retried" and record.heir is None


def test_a05_a_cause_of_astral_characters_does_not_cut_the_record(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    # how-it-works.md: "The text before the record is cut to fit (the whole status detail stays
    # within 1,000 characters), the record never is."  The cause is cut to 120 *characters*,
    # but json.dumps escapes each astral character as 12 ("\ud83d\ude00"): the record alone
    # passes 1000 characters and set_status_detail cuts it.
    expect_detail(api)
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)
    error = requests.ConnectionError("upstream said " + "\U0001f525" * 150)

    assert fail(runtime, error) == retry.EXIT_RETRY_STARTED
    [detail] = sent_details(api)
    record = retry.read_record(detail)
    assert record is not None and record.heir == CREATED["id"], (
        f"record lost: {len(detail)} chars, ends {detail[-40:]!r}"
    )


@pytest.mark.parametrize(
    "heir",
    ["x" * 2000, "id-42 | retry-record {}", "id-42\u2028x"],
    ids=["2000-char-id", "id-with-the-mark", "id-with-line-separator"],
)
def test_a06_an_odd_id_in_the_create_answer_does_not_break_the_record(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, heir: str
) -> None:
    # A host that lies (wrong ids): the heir is written into the record unchecked and uncut.
    # Expected: either the record names the heir intact, or the create is treated as unconfirmed.
    expect_detail(api)
    api.post(CREATE_URL, json={"id": heir, "counter": 42}, status=201)
    api.post(STATUS_URL)
    lenient(api)

    code = fail(runtime)
    details = sent_details(api)
    record = retry.read_record(details[-1]) if details else None
    assert (code == retry.EXIT_RETRY_STARTED and record is not None and record.heir == heir) or (
        code == retry.EXIT_RETRY_UNCONFIRMED and record is not None and record.outcome == "unconfirmed"
    ), f"exit {code}, record {record!r}"


def test_a07_a_create_answer_naming_the_failed_execution_itself_is_not_its_heir(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    # A host that lies (wrong ids): the 201 names the failed execution itself (a replayed
    # or cached answer).  The record then says "retry 1/3 started as #41" and names itself.
    expect_detail(api)
    api.post(CREATE_URL, json={"id": EXECUTION_ID, "counter": 41}, status=201)
    api.post(STATUS_URL)
    lenient(api)

    code = fail(runtime)
    [record] = records(api)[-1:]
    assert record is not None and record.heir != EXECUTION_ID, f"exit {code}: the record names itself as heir"


@pytest.mark.parametrize(
    "text",
    ["db said \x00 at byte 7", "db said \udc80 (lone surrogate)"],
    ids=["nul", "lone-surrogate"],
)
def test_a08_control_characters_of_an_error_do_not_reach_the_status_detail_raw(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, text: str
) -> None:
    # faults.md: "a line break, control or bidi character in a path, name or answer that is
    # printed: shown escaped".  The status detail's words go raw; NUL and lone surrogates
    # cannot be stored in a PostgreSQL text column (Django: 'A string literal cannot contain
    # NUL'), so a server like Valohai's would refuse the write: the record is lost.
    api.post(STATUS_URL)
    assert fail(runtime, ValueError(text)) == retry.EXIT_GAVE_UP
    [detail] = sent_details(api)
    raw = [c for c in detail if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF]
    assert raw == [], f"raw characters in the status detail: {raw!r}"


def test_a09_a_started_record_without_an_heir_does_not_make_every_copy_stand_down(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A garbled record: outcome "started", heir missing (or not a string).  how-it-works.md:
    # "If the record names another execution, it stands down".  It names none; yet the copy
    # stands down "named another execution", naming nobody: every copy does, no one works.
    this_copy(config_dir, monkeypatch)
    garbled = f'{SUMMARY} - retry 1/3 started{retry.RECORD_MARK}{{"outcome": "started", "retry": 1, "heir": 42}}'
    api.get(PARENT_URL, json=parent(detail=garbled))
    api.get(CREATE_URL, json={"count": 2, "next": None, "results": [{"id": "id-43", "counter": 43}, parent()]})
    api.post(STATUS_URL)
    lenient(api)

    run_copy(runtime)
    stood = [r for r in records(api) if r is not None and r.outcome == "stood_down"]
    assert not (stood and stood[0].heir is None), "stood down for an heir that was never named"


# === C. exactly one copy works: the start's check =======================================


def test_a11_an_odd_list_entry_does_not_turn_the_check_into_a_job_failure(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    # how-it-works.md: "A copy that cannot check ... does the work and says could not check".
    # A list entry whose 'tags' is a number makes tags_of raise TypeError inside the check; run()
    # takes it for the JOB's error: "Not retried (not a transient error): TypeError", exit 1,
    # the job never ran and the chain ends.
    this_copy(config_dir, monkeypatch, counter=44)
    api.get(PARENT_URL, json=UNCONFIRMED)
    odd = {"id": "id-42", "counter": 42, "step": "train", "tags": 7, "status": "started"}
    page = {"count": 3, "next": None, "results": [{"id": "id-44", "counter": 44}, odd, UNCONFIRMED]}
    api.get(CREATE_URL, json=page)
    api.post(STATUS_URL)
    lenient(api)

    code, worked = run_copy(runtime)
    err = capsys.readouterr().err
    assert "Not retried (not a transient error): TypeError" not in err, err.strip().splitlines()[-1]
    assert worked == [True] or code == 0


@pytest.mark.parametrize("shape", ["oldest-first"])
def test_a12_a_twin_found_on_the_first_page_is_not_thrown_away_by_a_server_ignoring_order(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    shape: str,
) -> None:
    # faults.md: "a list that ignores ordering=-counter ... read on to the end".  In a project of
    # 5,000 executions served oldest first, the running twin #42 is on page 1; the search reads
    # on to its 20-page bound, raises, and the copy "could not check ... so doing the work":
    # #42 and #43 both work, and the cost (21 requests) grew with the project.
    this_copy(config_dir, monkeypatch, counter=43)
    api.get(PARENT_URL, json=UNCONFIRMED)
    twin = {
        "id": "id-42",
        "counter": 42,
        "step": "train",
        "title": "Nightly training",
        "tags": ["nightly", "retry: 1"],
        "status": "started",
        "status_detail": None,
        "environment_variables": {"RETRY_PARENT": {"value": "id-41", "secret": False}},
    }

    def entry(counter: int) -> dict[str, Any]:
        if counter == 42:
            return twin
        if counter == 41:
            return UNCONFIRMED
        return {"id": f"id-{counter}", "counter": counter, "step": "other", "tags": [], "status": "complete"}

    def serve(request: Any) -> tuple[int, dict[str, str], str]:
        offset = int(re.search(r"offset=(\d+)", request.url).group(1))  # type: ignore[union-attr]
        items = [entry(c) for c in range(1 + offset, min(5001, 101 + offset))]
        return 200, {}, json.dumps({"count": 5000, "next": "more", "results": items})

    api.add_callback(responses.GET, CREATE_URL, callback=serve)
    api.post(STATUS_URL)
    lenient(api)

    code, worked = run_copy(runtime)
    lists = [c for c in api.calls if c.request.url.startswith(CREATE_URL + "?")]
    assert (code, worked) == (0, []), f"the copy worked beside its running twin #42 after {len(lists)} list pages"


# === D. checkpoints =====================================================================


@pytest.mark.parametrize("ctime", ["0000-00-00T00:00:00Z", "2026-11-20T09:14:20+99:00", "2026-02-30T09:14:20Z"])
def test_a13_one_output_with_an_unreadable_time_does_not_cost_the_retry(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, ctime: str, capsys: Any
) -> None:
    # checkpoints.md: "a slow or broken list costs the retry its newest checkpoint, never the
    # retry itself".  parse_instant's regex accepts the digits, datetime refuses them, and the
    # ValueError escapes newest_checkpoint: "could not start retry ...: unexpected ValueError".
    expect_detail(api)
    page = [
        datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z", "d-2"),
        datum("model.json", ctime, "d-odd"),
    ]
    api.get(DATA_URL, json={"count": 2, "next": None, "results": page})
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)
    lenient(api)

    code = fail(runtime, checkpoint="checkpoint")
    assert code == retry.EXIT_RETRY_STARTED, capsys.readouterr().err.strip().splitlines()[-1]


# === E. errors: one clear line, non-zero exit; redirects ================================


def test_a16_a_redirected_create_is_not_followed_and_ends_in_one_line(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    # README exit code 3; faults.md: redirecting host -> not followed.  (Expected to hold.)
    expect_detail(api)
    api.post(CREATE_URL, status=307, headers={"Location": "https://evil.example/api/v0/executions/"})
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "redirected to" in last and "could not start retry 1/3" in last
    assert all("evil.example" not in c.request.url for c in api.calls)


# === F. end to end, on the stand-in =====================================================

from standin import Execution, Fault, Platform  # noqa: E402

CREATE = "/api/v0/executions/"


def targeted(platform: Platform, counter: int, fault: Fault) -> Fault:
    """``fault`` applies only to requests whose path holds the id of execution #``counter`` (its
    pattern may use ``{id}``); checked before the stand-in's own faults."""
    original = platform.take_fault
    if not hasattr(platform, "_targeted"):
        platform._targeted = []  # type: ignore[attr-defined]

        def take(method: str, path: str) -> Fault | None:
            with platform._lock:
                for number, wanted in platform._targeted:  # type: ignore[attr-defined]
                    execution = platform.executions.get(number)
                    if execution is None or wanted.times <= 0 or wanted.method != method:
                        continue
                    if re.fullmatch(wanted.path.replace("{id}", execution.id), path):
                        wanted.times -= 1
                        return wanted
            return original(method, path)

        platform.take_fault = take  # type: ignore[method-assign]
    platform._targeted.append((counter, fault))  # type: ignore[attr-defined]
    return fault


def delay_start(platform: Platform, counter: int, seconds: float) -> None:
    """Execution #``counter`` queues ``seconds`` longer (another machine, a busy queue)."""
    original = platform._run

    def run(execution: Execution) -> None:
        if execution.counter == counter:
            time.sleep(seconds)
        original(execution)

    platform._run = run  # type: ignore[method-assign]


def did_work(execution: Execution) -> bool:
    return any(line.startswith("Training ") for _, _, line in execution.log)


def copies_of(executions: list[Execution], parent: Execution) -> list[Execution]:
    return [e for e in executions if e.environment_variables.get("RETRY_PARENT") == parent.id]


STATUS = r"/api/v0/executions/{id}/status-detail/"
PARENT_DETAIL = r"/api/v0/executions/{id}/"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with Platform(tmp_path) as running:
        yield running
        assert running.leaks() == []


def alike_crowd(platform: Platform, parent: list[Execution]) -> None:
    """Look-alikes of a sweep: same step, title, parameters and tag as this chain's retry."""

    def crowd(count: int) -> None:
        for _ in range(count):
            payload = {
                "project": retry_project(),
                "commit": COMMIT_ID,
                "step": "train",
                "title": parent[0].title,
                "parameters": dict(parent[0].parameters),
                "tags": ["nightly", "retry: 1"],
                "environment_variables": {"RETRY_PARENT": str(uuid.uuid4())},
            }
            status, body = platform._create(payload, dummy=True)
            assert status == 201, body

    platform.crowd = crowd  # type: ignore[method-assign]


def retry_project() -> str:
    from standin import PROJECT_ID

    return PROJECT_ID


from standin import COMMIT as COMMIT_ID  # noqa: E402


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a21_three_creates_all_stored_after_timeouts_leave_one_copy_working(platform: Platform) -> None:
    # faults.md: "no create confirmed in 3 tries ... record unconfirmed", exit 4; copies then
    # settle by the lowest copy that works.  (Expected to hold.)
    platform.inject(Fault("POST", CREATE, "slow", seconds=1.5, times=3))
    platform.override(1, failure_rate=0.0)
    first = platform.start(failure_rate=1.0, delay=0)
    copies = copies_of(platform.wait_until_idle(100), first)
    assert first.exit_code == retry.EXIT_RETRY_UNCONFIRMED and len(copies) == 3
    assert [c.counter for c in copies if did_work(c)] == [copies[0].counter]


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a22_a_lost_create_and_a_record_refused_three_times_leave_one_copy_working(platform: Platform) -> None:
    # how-it-works.md: parent ended without naming one -> the lowest copy that works.  (Expected to hold.)
    platform.inject(Fault("POST", CREATE, "lost"))
    targeted(platform, 41, Fault("POST", STATUS, "status", status=500, times=3))
    platform.override(1, failure_rate=0.0)
    first = platform.start(failure_rate=1.0, delay=0)
    copies = copies_of(platform.wait_until_idle(100), first)
    assert first.record is None and len(copies) == 2
    assert [c.counter for c in copies if did_work(c)] == [copies[0].counter]


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a23_a_server_that_cuts_status_details_at_255_still_leaves_one_copy_working(platform: Platform) -> None:
    # platform.md #4: a cap loses the record; copies search.  (Expected to hold: one works.)
    original = platform._set_status_detail

    def capped(key: str, query: Any, authorization: str, body: Any) -> Any:
        if isinstance(body, dict) and isinstance(body.get("status_detail"), str):
            body = {**body, "status_detail": body["status_detail"][:255]}
        return original(key, query, authorization, body)

    platform._set_status_detail = capped  # type: ignore[method-assign]
    platform.inject(Fault("POST", CREATE, "lost"))
    platform.override(1, failure_rate=0.0)
    first = platform.start(failure_rate=1.0, delay=0)
    copies = copies_of(platform.wait_until_idle(100), first)
    assert len(copies) == 2
    assert len([c for c in copies if did_work(c)]) == 1


NUL_JOB = """
import sys
sys.path.insert(0, {root!r})
import retry

def work():
    if retry.current_retry() == 0:
        raise ConnectionError("db protocol error: unexpected byte \\x00 in reply")
    print("Training 1 epoch", flush=True)

retry.run(work, retries=1, delay=0)
"""


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a24_an_error_with_a_nul_byte_still_leaves_a_record(tmp_path: Path) -> None:
    # how-it-works.md: "Every attempt that retry.py ends leaves a record at the end of its status
    # detail".  A stand-in that stores status details as PostgreSQL does (text cannot hold NUL;
    # Django answers an error) - as Valohai's API presumably does: the NUL of the job's error goes
    # raw into the status detail, all three writes are refused, no record.  (Server behaviour modelled.)
    from standin import ROOT

    job = tmp_path / "nul_job.py"
    job.write_text(NUL_JOB.format(root=str(ROOT)))
    with Platform(tmp_path, script=str(job)) as platform:
        original = platform._set_status_detail

        def postgres(key: str, query: Any, authorization: str, body: Any) -> Any:
            if isinstance(body, dict) and "\x00" in str(body.get("status_detail")):
                return 500, {"detail": "A string literal cannot contain NUL (0x00) characters."}
            return original(key, query, authorization, body)

        platform._set_status_detail = postgres  # type: ignore[method-assign]
        first = platform.start()
        platform.wait_until_idle(100)
    assert first.exit_code == retry.EXIT_RETRY_STARTED
    assert first.record is not None, f"no record; log: {first.log_text().splitlines()[-2:]}"


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a26_a_user_stopping_the_named_copy_does_not_wake_the_other(platform: Platform) -> None:
    # how-it-works.md: "if a user stopped it ... no duplicate takes over behind the user's back".
    # (Expected to hold.)  Both copies wait 15 s (delay); the user stops the named one meanwhile.
    platform.inject(Fault("POST", CREATE, "lost"))
    platform.override(1, failure_rate=0.0)
    first = platform.start(failure_rate=1.0, delay=15)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (first.record is None or max(platform.executions) < 43):
        time.sleep(0.05)
    assert first.record is not None
    named = next(e for e in platform.executions.values() if e.id == first.record.heir)
    platform.stop(named)
    copies = copies_of(platform.wait_until_idle(100), first)
    assert named.status == "stopped"
    assert len(copies) == 2 and not any(did_work(c) for c in copies)


def test_a27_a_wait_of_zero_is_not_shown_as_minus_zero() -> None:
    # The log of every delay=0 relaunch says "retry 1/3 will wait -0 s before it starts work"
    # (_seconds: "whole seconds, or tenths below ten, rounded up (never "0")").
    assert retry._seconds(0.0) in ("0", "0.1")  # never "-0"


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a28_a_machine_lost_during_the_relaunch_is_retried_by_the_controller(tmp_path: Path) -> None:
    # README: "Crashes that no except sees are retried from outside ... the controller does
    # nothing when retry.py already left a verdict (or a user stopped it, or a retry exists);
    # otherwise it ... starts retry N+1".  The execution is killed (OOM, lost spot machine)
    # while retry.py relaunches - after it printed the job's traceback, before any create.
    # No verdict, no retry; yet the controller reads 'Traceback (most recent call last)' that
    # retry.py itself printed and answers "Not retried (not a transient error)": the chain dies.
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"}) as platform:
        platform.trigger_on = {"error"}
        platform.inject(Fault("GET", r"/api/v0/executions/[0-9a-f-]+/", "slow", seconds=5.0))
        first = platform.start(failure_type="connection", delay=0, retries=3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "Traceback" not in first.log_text():
            time.sleep(0.01)
        time.sleep(0.3)  # inside the relaunch: its first request is being answered slowly
        for process in list(platform._processes):
            if getattr(process, "execution", None) is first:
                process.kill()  # not a user's Stop: the machine is gone
        executions = platform.wait_until_idle(100)
        [controller] = platform.controllers()
    assert first.exit_code == -9 and first.record is None and len(platform.creates()) == 1  # the controller's
    retries = [e for e in executions if e.step == "train" and "retry: 1" in e.tags]
    assert retries and did_work(retries[0]), f"controller said: {controller.verdict}"


def test_a29_an_outputs_list_that_ignores_its_offset_is_bounded(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    # checkpoints.md: "up to the list's bound ... a slow or broken list costs the retry its newest
    # checkpoint, never the retry itself".  The same page forever (offset ignored, 'next' always
    # set).  (Expected to hold: bounded, the retry is created.)
    expect_detail(api)
    api.get(
        DATA_URL, json={"count": 10**6, "next": "more", "results": [datum("model.json", "2026-11-20T09:14:10Z", "m")]}
    )
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert len([c for c in api.calls if c.request.url.startswith(DATA_URL)]) <= retry.MAX_PAGES
