"""Hostile timing and input: threads, garbled answers, tokens in odd places, lying hosts."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import (
    CREATE_URL,
    CREATED,
    DETAIL_URL,
    EXECUTION_ID,
    HOST,
    PROJECT_ID,
    STATUS_URL,
    TOKEN,
    FakeClock,
    Spawned,
    connection_error,
    expect_detail,
    expect_status_detail,
    fail,
    load_fixture,
    raised,
    set_tags,
    status_details,
)
from responses import matchers

import retry

LIST_FIRST_PAGE = matchers.query_param_matcher(
    {"project": PROJECT_ID, "ordering": "-counter", "deleted": "false", "limit": "100", "offset": "0"}
)


def creates(api: responses.RequestsMock) -> int:
    return sum(1 for call in api.calls if call.request.method == "POST" and call.request.url == CREATE_URL)


# --- exactly once ------------------------------------------------------------------------


def test_two_threads_failing_at_once_start_one_retry(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    expect_detail(api)
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)
    start = threading.Barrier(2)
    codes: list[int] = []

    def failing_thread() -> None:
        start.wait()
        codes.append(fail(runtime))

    threads = [threading.Thread(target=failing_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert codes == [retry.EXIT_RETRY_STARTED] * 2
    assert creates(api) == 1
    assert (
        "this process already handled a failure (exit code 75); not starting another retry" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        ({"body": "<html>Created</html>", "content_type": "text/html"}, "HTTP 201 with a body that is not JSON"),
        ({"json": ["not", "an", "object"]}, "HTTP 201 with JSON that is not an object"),
        ({"body": "[" * 5000, "content_type": "application/json"}, "HTTP 201 with a body that is not JSON"),
        ({"json": {"counter": 42}}, "created, but the answer names no new execution id"),
    ],
    ids=["html", "a-list", "nested-5000-deep", "no-id"],
)
def test_a_create_whose_answer_cannot_be_read_is_sent_again_and_only_the_confirmed_one_named(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any, answer: Any, logged: str
) -> None:
    # The unreadable create made a copy: it stands down when it starts, as the record names the other.
    expect_detail(api)
    api.post(CREATE_URL, status=201, **answer)
    api.post(CREATE_URL, json={**CREATED, "id": "id-43", "counter": 43}, status=201)
    summary = "ConnectionError: could not connect to db.internal:5432"
    expect_status_detail(api, f"{summary} - retry 1/3 started as #43", retry.Record("started", 1, "id-43", summary))

    assert fail(runtime) == retry.EXIT_RETRY_STARTED
    assert creates(api) == 2
    assert f"{logged}; asking once more (a copy made all the same will stand down)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("created", "project", "detail"),
    [
        ({"id": "id-42", "counter": "forty-two", "urls": "nope"}, {}, "started (the API did not say its number)"),
        ({**CREATED, "urls": ["odd"]}, {"environment_variables": [{"name": ["odd"]}, 7]}, "started as #42"),
        ({**CREATED, "urls": {"display": 7}}, {"environment_variables": "odd"}, "started as #42"),
    ],
    ids=["odd-counter", "odd-lists", "odd-strings"],
)
def test_odd_shapes_after_a_create_never_turn_it_into_a_failure(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    created: dict[str, Any],
    project: dict[str, Any],
    detail: str,
) -> None:
    expect_detail(api)
    api.post(CREATE_URL, json=created, status=201)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RETRY_STARTED
    [text] = status_details(api)
    assert "retry 1/3 " + detail in text
    assert creates(api) == 1


# --- secrets -----------------------------------------------------------------------------


def test_a_token_that_straddles_the_cut_is_masked_before_cutting(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    api.post(STATUS_URL)
    # "ValueError: " and 285 characters: the 300-character cut falls inside the token.
    error = ValueError("x" * 285 + TOKEN + " and more")

    assert fail(runtime, error) == retry.EXIT_GAVE_UP
    shown = capsys.readouterr().err + "".join(status_details(api))
    assert all(TOKEN[i : i + 6] not in shown for i in range(len(TOKEN) - 5))


def test_the_token_of_a_custom_runtime_is_masked_too(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    other = "tok-runtime-only-7d1e9b2c4a"
    runtime.environ = {"VH_JOB_ID": "job-1", "VH_API_TOKEN": other}
    api.post(STATUS_URL)

    assert fail(runtime, KeyError(f"header was {other}")) == retry.EXIT_GAVE_UP
    shown = capsys.readouterr().err + "".join(status_details(api))
    assert other not in shown and "header was ***" in shown


@pytest.mark.parametrize("token", ["abc", "short-token-15c"])
def test_a_token_too_short_to_mask_is_refused_before_any_request(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("VH_API_TOKEN", token)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    [text] = status_details(api)
    assert f"VH_API_TOKEN is too short to be an API token ({len(token)} characters)" in text


def test_a_token_outside_ascii_gets_a_clear_line(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VH_API_TOKEN", "tok-3f9a1c7e5b2d\u20ac4a6f8e0c")
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    [text] = status_details(api)
    assert text.endswith("VH_API_TOKEN contains spaces, control characters or non-ASCII characters: paste it again")
    assert "3f9a1c" not in text


@pytest.mark.parametrize(
    "host",
    [
        "http://evil.example:8080\\@127.0.0.1",
        "https://user:secret@valohai.example.com",
        "https://valohai.example.com@evil.example",
        "https://valohai.example.com/api?next=1",
        "https://valohai.example.com\t.evil",
        "http://localhost.evil.example",
        "ftp://valohai.example.com",
    ],
)
def test_a_host_that_could_send_the_token_elsewhere_is_refused_before_any_request(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    host: str,
) -> None:
    monkeypatch.setenv("VALOHAI_HOST", host)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    assert [call.request.url for call in api.calls] == [STATUS_URL]
    assert "VALOHAI_HOST" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("https://valohai.example.com/", "https://valohai.example.com"),
        ("https://valohai.example.com:8443", "https://valohai.example.com:8443"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://[::1]:5000", "http://[::1]:5000"),
        ("http://localhost", "http://localhost"),
    ],
)
def test_a_plain_host_is_accepted_as_its_origin(host: str, origin: str) -> None:
    assert retry.api_host({"VALOHAI_HOST": host}) == origin


@pytest.mark.parametrize("link", [":8081/api/v0/executions/?offset=2", "//evil.example/api/v0/executions/?offset=2"])
def test_a_next_link_is_never_followed_to_another_address(api: responses.RequestsMock, link: str) -> None:
    client = retry.ValohaiAPI(TOKEN, "http://127.0.0.1")
    items = [{"id": "a", "counter": 3}, {"id": "b", "counter": 2}]
    api.get("http://127.0.0.1/api/v0/executions/", json={"next": link, "results": items}, match=[LIST_FIRST_PAGE])
    api.get(
        "http://127.0.0.1/api/v0/executions/",
        json={"next": None, "results": [{"id": "c", "counter": 1}]},
        match=[
            matchers.query_param_matcher(
                {"project": PROJECT_ID, "ordering": "-counter", "deleted": "false", "limit": "100", "offset": "2"}
            )
        ],
    )

    listed = [item for page in retry.execution_pages(client, PROJECT_ID) for item in page]
    assert [item["id"] for item in listed] == ["a", "b", "c"]
    assert all(call.request.url.startswith("http://127.0.0.1/api/") for call in api.calls)


# --- time bounds ---------------------------------------------------------------------------


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """A server on 127.0.0.1 that answers 200 and then sends its body one byte every 0.2 s."""

    class Trickle(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._trickle()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._trickle()

        def _trickle(self) -> None:
            body = json.dumps({"padding": " " * 300}).encode()  # a minute at 0.2 s a byte
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for index in range(len(body)):
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the client hung up, as it should

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.e2e
def test_a_trickling_status_detail_endpoint_cannot_hold_the_attempt(
    trickling_server: str, config_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("RETRY_API_TIMEOUT", "1")
    api_json = {"set_status_detail": {"url": f"{trickling_server}/status-detail/", "method": "POST"}}
    (config_dir / "api.json").write_text(json.dumps(api_json))
    started = time.monotonic()

    assert retry.set_status_detail("Waiting 5 s before retry 1/3 starts work") is False
    # 1 s for the whole answer, not a minute; the rest is room for a machine under load.
    assert time.monotonic() - started < 6.0
    assert "could not set the status detail: " in capsys.readouterr().err  # which timer fired first: a race


@pytest.mark.e2e
def test_a_trickling_api_cannot_hold_a_request_past_its_budget(trickling_server: str) -> None:
    client = retry.ValohaiAPI(TOKEN, trickling_server, timeout=(1.0, 1.0), budget=2.0)
    started = time.monotonic()

    with pytest.raises(retry.APIError, match="HTTP 200, but the answer was cut off"):
        client.get("/api/v0/executions/x/")
    assert time.monotonic() - started < 8.0  # the 2 s budget and its last read, not a minute


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_api_budgets_run_on_the_monotonic_clock(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    hours = iter(range(1_800_000_000, 1_900_000_000, 3600))
    runtime.now = lambda: float(next(hours))  # a wall clock that jumps an hour at every look
    api.get(DETAIL_URL, status=503)
    api.get(DETAIL_URL, status=503)
    expect_detail(api)
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RETRY_STARTED
    assert clock.sleeps == [0.5, 1]


# --- the chain's count ---------------------------------------------------------------------


def test_the_count_is_the_highest_of_the_config_and_the_api(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    set_tags(config_dir, [])  # lost from execution.json, still on the execution
    detail = load_fixture("execution-detail.json")
    detail["tags"] = ["nightly", "retry: 3"]
    expect_detail(api, detail)
    expect_status_detail(api, "Gave up after 3 retries: ConnectionError: could not connect to db.internal:5432")

    assert fail(runtime, retries=3) == retry.EXIT_GAVE_UP
    assert creates(api) == 0


def test_an_unreadable_config_fails_closed_instead_of_restarting_the_count(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    (config_dir / "execution.json").write_text("{truncated")
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    [text] = status_details(api)
    assert text.startswith(
        "ConnectionError: could not connect to db.internal:5432 - not retried: cannot tell which retry"
    )
    assert "execution.json is not readable JSON" in text


def test_a_not_before_is_honoured_whatever_the_count_says(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_tags(config_dir, [])  # the tag is gone, the wait is not
    monkeypatch.setenv("RETRY_NOT_BEFORE", retry.format_instant(clock.now_value + 60))
    api.post(STATUS_URL)

    retry.run(lambda: None, retries=3, runtime=runtime)
    assert clock.slept == pytest.approx(60)


def test_the_not_before_instant_is_rounded_up_never_down() -> None:
    assert retry.format_instant(1_800_000_000.0004) == "2027-01-15T08:00:00.001Z"
    assert retry.format_instant(1_800_000_000.0) == "2027-01-15T08:00:00.000Z"
    assert retry.parse_instant(retry.format_instant(1_800_000_000.9991)) >= 1_800_000_000.9991


# --- odd errors and inputs -----------------------------------------------------------------


class UnprintableError(ConnectionError):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def test_a_transient_error_that_cannot_be_printed_is_still_retried_and_summarised(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    assert retry.handle_failure(raised(UnprintableError()), retry.Policy(), runtime=runtime) == 0
    assert len(spawned.calls) == 1
    assert "UnprintableError: (its message could not be shown) - starting retry 1/3" in capsys.readouterr().err


def test_a_retry_on_predicate_that_raises_ends_with_a_summary(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    policy = retry.Policy(retry_on=lambda error: error.missing_attribute)  # type: ignore[attr-defined]

    assert retry.handle_failure(raised(connection_error()), policy, runtime=runtime) == retry.EXIT_GAVE_UP
    assert spawned.calls == []
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("[retry] Not retried: retry_on raised AttributeError:")
    assert last.endswith("ConnectionError: could not connect to db.internal:5432")


@pytest.mark.parametrize("value", ["³", "٣", "1e3", "99999999999"])
def test_a_retry_after_that_is_not_ascii_digits_is_ignored(api: responses.RequestsMock, value: str) -> None:
    clock = FakeClock()
    client = retry.ValohaiAPI(TOKEN, HOST, sleep=clock.sleep, clock=clock.now)
    api.get(DETAIL_URL, status=429, headers={"Retry-After": value})
    api.get(DETAIL_URL, json={"ok": True})

    assert client.get(f"/api/v0/executions/{EXECUTION_ID}/") == {"ok": True}
    assert clock.sleeps == [0.5]  # the backoff, not a crash and not 99999999999 s


def test_tags_given_as_one_string_are_not_split_into_letters() -> None:
    detail = load_fixture("execution-detail.json")
    detail["tags"] = "nightly"
    assert retry.build_retry_payload(detail, 1, parent_id="p")["tags"] == ["nightly", "retry: 1"]


def test_an_async_job_is_run_to_its_end(clean_env: pytest.MonkeyPatch, runtime: retry.Runtime) -> None:
    steps: list[str] = []

    async def job() -> str:
        await asyncio.sleep(0)
        steps.append("ran")
        return "done"

    assert retry.run(job, runtime=runtime) == "done"
    assert steps == ["ran"]


def test_a_failing_async_job_is_retried(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned
) -> None:
    async def job() -> None:
        raise connection_error()

    with pytest.raises(SystemExit) as exit_info:
        retry.run(job, runtime=runtime)
    assert exit_info.value.code == 0 and len(spawned.calls) == 1  # the spawned retry's code


@pytest.mark.parametrize(("code", "expected"), [(75, 1), (3, 1), ("bye", 1), (0, 0), (None, 0)])
def test_a_job_that_calls_sys_exit_is_announced_and_never_looks_like_a_retry(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any, code: object, expected: int
) -> None:
    def job() -> None:
        sys.exit(code)  # type: ignore[arg-type]

    with pytest.raises(SystemExit) as exit_info:
        retry.run(job, runtime=runtime)
    assert exit_info.value.code == expected
    assert spawned.calls == []
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if expected:
        assert last == f"[retry] Not retried: the job called sys.exit({code!r})"
    else:
        assert last == f"[retry] the job succeeded on attempt 1 (it called sys.exit({code!r}))"


def test_the_chain_variables_are_taken_out_of_the_environment(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime
) -> None:
    import os

    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    seen: list[object] = []
    retry.run(lambda: seen.append((os.environ.get("RETRY_LOCAL_NUMBER"), retry.current_retry())), runtime=runtime)
    assert seen == [(None, 1)]


def test_the_budget_bounds_successful_requests_too(api: responses.RequestsMock) -> None:
    ticks = iter(range(0, 1000, 3))  # every look at the clock finds 3 s gone: a slow server
    client = retry.ValohaiAPI(TOKEN, HOST, budget=10, clock=lambda: float(next(ticks)))
    api.get(CREATE_URL, json={"next": "more", "results": [{"id": "x", "counter": 1}]})

    with pytest.raises(retry.APIError, match=r"out of time \(the API calls may take 10 s in all\)"):
        [item for page in retry.execution_pages(client, PROJECT_ID) for item in page]
    assert len(api.calls) == 3  # at 3, 6 and 9 s of 10; the fourth would start past the budget


# --- found by an adversarial run: each broke an earlier version -------------------------------


@pytest.mark.parametrize(
    ("page", "more"),
    [
        ({"count": 150, "results": [{"id": "a"}] * 1}, True),  # no "next" key: count tells
        ({"count": 1, "results": [{"id": "a"}]}, False),
        ({"results": [{"id": str(n)} for n in range(100)]}, True),  # neither: a full page goes on
        ({"results": [{"id": "a"}]}, False),
        ({"next": None, "count": 500, "results": [{"id": "a"}]}, False),  # next says the end
    ],
)
def test_a_list_goes_on_as_its_page_says(api: responses.RequestsMock, page: dict[str, Any], more: bool) -> None:
    api.get(CREATE_URL, json=page, match=[LIST_FIRST_PAGE])
    if more:
        api.get(CREATE_URL, json={"next": None, "results": []})
    client = retry.ValohaiAPI(TOKEN, HOST)
    assert len(list(retry.execution_pages(client, PROJECT_ID))) == (2 if more else 1)


def test_a_program_the_job_starts_retries_itself_locally_never_the_execution(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    spawned: Spawned,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    # The execution's own process (another pid) runs retry.run; this is a helper it started.
    monkeypatch.setenv("RETRY_OWNER_PID", "1")

    with pytest.raises(SystemExit):
        retry.run(lambda: (_ for _ in ()).throw(connection_error()), runtime=runtime)

    assert len(api.calls) == 0  # no create, no detail, and the execution's status detail is not its to write
    assert len(spawned.calls) == 1
    err = capsys.readouterr().err
    assert "attempt 1 of up to 4, running in a program the job started: its retries run as local processes" in err
    assert "starting retry 1/3: the same command, in this process" in err


def test_the_execution_marks_itself_so_programs_it_starts_know(config_dir: Path, runtime: retry.Runtime) -> None:
    import os

    retry.run(lambda: None, runtime=runtime)
    assert os.environ["RETRY_OWNER_PID"] == str(os.getpid())


def test_a_second_run_in_one_process_is_the_same_attempt(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, clock: FakeClock
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    clean_env.setenv("RETRY_NOT_BEFORE", retry.format_instant(clock.now_value + 30))
    seen: list[int] = []
    retry.run(lambda: seen.append(retry.current_retry()), runtime=runtime)  # stage one
    retry.run(lambda: seen.append(retry.current_retry()), runtime=runtime)  # stage two: not attempt 1 again
    assert seen == [1, 1]
    assert clock.slept == pytest.approx(30)  # waited once: the instant has passed for stage two


def test_a_host_with_user_info_is_refused_without_echoing_it() -> None:
    secret = "ml-service-account:3f9a1c7e5b2d4a6f8e0c1b2a3d4e5f6071829"
    with pytest.raises(retry.RetryError) as error:
        retry.api_host({"VALOHAI_HOST": f"https://{secret}@app.valohai.com"})
    assert "3f9a1c7e" not in str(error.value) and "***@app.valohai.com" in str(error.value)


@pytest.mark.parametrize(
    "error", [asyncio.CancelledError(), GeneratorExit("stop")], ids=["cancelled", "generator-exit"]
)
def test_a_base_exception_from_the_job_still_gets_a_summary(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, capsys: Any, error: BaseException
) -> None:
    def job() -> None:
        raise error

    with pytest.raises(SystemExit) as exit_info:
        retry.run(job, runtime=runtime)
    assert exit_info.value.code == retry.EXIT_GAVE_UP
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"[retry] Not retried (not a transient error): {type(error).__name__}")
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"delay": 10**5000}, "invalid retry settings: delay must be a number from 0 to 86400, got <a int>"),
        ({"policy": {"retries": 3}}, "invalid retry settings: policy must be a retry.Policy, got dict"),
        ({"policy": retry.Policy(), "retries": 2}, "invalid retry settings: give a policy or settings, not both"),
    ],
    ids=["huge-number", "not-a-policy", "both"],
)
def test_odd_settings_end_in_one_line(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, capsys: Any, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        retry.run(lambda: None, runtime=runtime, **arguments)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    assert capsys.readouterr().err.startswith(f"[retry] {message}")


def test_a_generator_job_is_refused_before_it_pretends_to_succeed(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, capsys: Any
) -> None:
    def job() -> Iterator[int]:
        yield 1

    with pytest.raises(SystemExit) as exit_info:
        retry.run(job, runtime=runtime)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert "succeeded" not in err and "invalid use of retry.run: the function is a generator" in err


def test_ctrl_c_during_the_wait_is_announced(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    clean_env.setenv("RETRY_NOT_BEFORE", retry.format_instant(clock.now_value + 30))

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    runtime.sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        retry.run(lambda: None, runtime=runtime)
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "[retry] Not retried: attempt 2 was interrupted (KeyboardInterrupt)"
    )


# --- found by a second adversarial run -----------------------------------------------------


def test_a_failure_reason_is_the_apis_not_the_jobs_error_being_handled() -> None:
    try:
        raise ConnectionError("could not connect to db.internal:5432")  # the job's error
    except ConnectionError:
        try:
            raise requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))
        except requests.ConnectionError as api_error:
            assert retry._reason(api_error) == "Connection reset by peer"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY", "all_proxy"])
def test_no_proxy_of_the_environment_sees_a_plain_http_token(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    received: list[str] = []
    api_port, proxy_port, stop = recording_servers(received, 2)
    try:
        for name in ("HTTP_PROXY", "ALL_PROXY", "all_proxy", "http_proxy", "NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy_port}")
        retry.ValohaiAPI(TOKEN, f"http://127.0.0.1:{api_port}").get("/api/v0/executions/x/")
    finally:
        stop()
    assert received == [f"{api_port} Token {TOKEN}"]


def test_a_netrc_entry_cannot_replace_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    received: list[str] = []
    api_port, stop = recording_servers(received, 1)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    try:
        retry.ValohaiAPI(TOKEN, f"http://127.0.0.1:{api_port}").get("/api/v0/executions/x/")
    finally:
        stop()
    assert received == [f"{api_port} Token {TOKEN}"]


def recording_servers(received: list[str], count: int) -> Any:
    """``count`` servers on 127.0.0.1 that answer ``{}`` and record port and Authorization."""

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(f"{self.server.server_address[1]} {self.headers.get('Authorization')}")
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder) for _ in range(count)]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop() -> None:
        for server in servers:
            server.shutdown()
            server.server_close()

    return (*(server.server_address[1] for server in servers), stop)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-11-20T09:14:05Z", 1795166045.0),
        ("2026-11-20T09:14:05z", 1795166045.0),
        ("2026-11-20 09:14:05", 1795166045.0),
        ("2026-11-20T10:14:05+01", 1795166045.0),
        ("2026-11-20T10:14:05+0100", 1795166045.0),
        ("2026-11-20T10:14:05+01:00", 1795166045.0),
        ("2026-11-20T09:14:05.123456789012Z", 1795166045.123456789012),
    ],
)
def test_api_times_are_read_in_every_spelling_of_iso_8601(text: str, seconds: float) -> None:
    assert retry.parse_instant(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("boundary", ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_no_line_boundary_in_a_message_can_forge_a_log_line(capsys: Any, boundary: str) -> None:
    retry._say(f"the retry resumes from the checkpoint /tmp/x{boundary}[retry] the job succeeded on attempt 2")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("[retry] the retry resumes from the checkpoint /tmp/x\\")


def test_control_and_bidi_characters_are_shown_escaped(capsys: Any) -> None:
    retry._say("the retry resumes from the checkpoint \x1b[2J\u202egnp.exe")
    assert capsys.readouterr().err == "[retry] the retry resumes from the checkpoint \\x1b[2J\\u202egnp.exe\n"
