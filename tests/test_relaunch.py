"""A failed attempt on Valohai: the API calls it makes, its status detail and exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import (
    AUTH,
    CREATE_URL,
    CREATED,
    DETAIL_URL,
    EXECUTION_ID,
    HOST,
    STATUS_URL,
    TOKEN,
    FakeClock,
    expect_detail,
    expect_status_detail,
    expected_payload,
    fail,
    instant,
    load_fixture,
    raised,
    records,
    set_tags,
)
from responses import matchers

import retry


def test_transient_failure_creates_the_retry_and_exits_at_once(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    payload = expected_payload(["nightly", "retry: 1"], instant(clock.now_value + 60))
    expect_detail(api)
    api.post(
        CREATE_URL, json=CREATED, status=201, match=[AUTH, matchers.json_params_matcher(payload, strict_match=True)]
    )
    summary = "ConnectionError: could not connect to db.internal:5432"
    heir = retry.Record("started", 1, heir=CREATED["id"], cause=summary)
    expect_status_detail(api, f"{summary} - retry 1/3 started as #42", heir)

    code = fail(runtime, retries=3, delay=60)

    assert code == retry.EXIT_RETRY_STARTED
    assert clock.sleeps == []  # the failed execution does not hold its machine
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "#42: https://app.valohai.com/p/acme/churn-model/execution/0193a8e9/" in err


def test_waiting_in_the_failed_execution_is_still_possible(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    expect_detail(api)
    payload = expected_payload(["nightly", "retry: 1"], None)
    api.post(CREATE_URL, json=CREATED, status=201, match=[matchers.json_params_matcher(payload, strict_match=True)])
    expect_status_detail(api, "ConnectionError: could not connect to db.internal:5432 - retry 1/3 started as #42")

    assert fail(runtime, retries=3, delay=60, wait_in="failed") == retry.EXIT_RETRY_STARTED
    assert clock.slept == 60


def test_a_retry_counts_on_from_its_own_tag(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    set_tags(config_dir, ["nightly", "retry: 1"])
    detail = load_fixture("execution-detail.json")
    detail["tags"] = ["nightly", "retry: 1"]
    detail["environment_variables"]["RETRY_PARENT"] = {"value": "older-id", "secret": False}
    detail["environment_variables"]["RETRY_NOT_BEFORE"] = {"value": "2020-01-01T00:00:00Z", "secret": False}
    expect_detail(api, detail)
    payload = expected_payload(["nightly", "retry: 2"], instant(clock.now_value + 60))
    api.post(CREATE_URL, json={**CREATED, "counter": 43}, status=201, match=[matchers.json_params_matcher(payload)])
    expect_status_detail(api, "ConnectionError: could not connect to db.internal:5432 - retry 2/3 started as #43")

    code = fail(runtime, retries=3, delay=60)
    assert code == retry.EXIT_RETRY_STARTED


def test_exhausted_retries_fail_with_a_clear_status_and_no_api_call(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    set_tags(config_dir, ["nightly", "retry: 3"])
    summary = "ConnectionError: could not connect to db.internal:5432"
    expect_status_detail(api, f"Gave up after 3 retries: {summary}", retry.Record("gave_up", 3, cause=summary))

    code = fail(runtime, retries=3)
    assert code == retry.EXIT_GAVE_UP


def test_a_bug_is_not_retried(config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime) -> None:
    record = retry.Record("not_retried", 0, cause="ValueError: shape mismatch")
    expect_status_detail(api, "Not retried (not a transient error): ValueError: shape mismatch", record)

    code = fail(runtime, ValueError("shape mismatch"))
    assert code == retry.EXIT_GAVE_UP


def test_missing_token_is_explained_and_nothing_is_sent_to_the_api(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("VH_API_TOKEN", "  ")
    api.post(STATUS_URL)  # the status detail is still set

    code = fail(runtime)

    assert code == retry.EXIT_RELAUNCH_FAILED
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "VH_API_TOKEN is not set" in last_line
    assert "secret project environment variable" in last_line
    assert json.loads(api.calls[0].request.body)["status_detail"].startswith("ConnectionError")


@pytest.mark.parametrize(
    ("status", "body", "explained"),
    [
        (
            400,
            {"step": ["Step 'train' not found in commit"], "parameters": {"delay": ["Not an integer"]}},
            "step: Step 'train' not found in commit; parameters: delay: Not an integer",
        ),
        (401, {"detail": "Invalid token."}, "VH_API_TOKEN was refused"),
        (403, {"detail": "Forbidden"}, "is not allowed to do this"),
        (404, {"detail": "Not found."}, "not found: check VALOHAI_HOST"),
    ],
)
def test_each_api_error_ends_with_one_clear_line(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    capsys: Any,
    status: int,
    body: dict[str, Any],
    explained: str,
) -> None:
    expect_detail(api)
    api.post(CREATE_URL, json=body, status=status)
    api.post(STATUS_URL)

    code = fail(runtime)

    assert code == retry.EXIT_RELAUNCH_FAILED
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert explained in last_line
    assert "could not start retry 1/3" in last_line
    detail = json.loads(api.calls[-1].request.body)["status_detail"]
    assert explained in detail


def test_a_flaky_api_is_asked_again_honouring_retry_after(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    api.get(DETAIL_URL, status=503, headers={"Retry-After": "7"})
    api.get(DETAIL_URL, status=429, headers={"Retry-After": "3"})
    expect_detail(api)
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)

    code = fail(runtime)

    assert code == retry.EXIT_RETRY_STARTED
    assert clock.sleeps == [7, 3]


def test_an_unreachable_api_gives_up_within_the_budget(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    for _ in range(8):
        api.get(DETAIL_URL, body=requests.ConnectionError("connection refused"))
    api.post(STATUS_URL)

    code = fail(runtime)

    assert code == retry.EXIT_RELAUNCH_FAILED
    assert clock.slept <= retry.API_BUDGET
    assert clock.sleeps == [0.5, 1, 2, 4, 8, 16, 16]  # 47.5 s; 16 more would pass the 60 s budget
    assert "could not reach https://app.valohai.com" in capsys.readouterr().err


def test_valohai_host_selects_a_self_hosted_installation(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALOHAI_HOST", "https://valohai.acme.internal/")
    host = "https://valohai.acme.internal"
    api.get(f"{host}/api/v0/executions/{EXECUTION_ID}/", json=load_fixture("execution-detail.json"), match=[AUTH])
    api.post(f"{host}/api/v0/executions/", json=CREATED, status=201, match=[AUTH])
    api.post(STATUS_URL)

    code = fail(runtime)
    assert code == retry.EXIT_RETRY_STARTED


def test_plain_http_host_is_refused_before_the_token_travels(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("VALOHAI_HOST", "http://valohai.acme.internal")
    api.post(STATUS_URL)

    assert fail(runtime) == 3
    assert "plain http" in capsys.readouterr().err


def test_a_failing_status_detail_does_not_hide_the_outcome(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    set_tags(config_dir, ["retry: 3"])
    api.post(STATUS_URL, status=500)

    code = fail(runtime, retries=3)

    assert code == retry.EXIT_GAVE_UP
    err = capsys.readouterr().err
    assert err.count("could not set the status detail") == retry.RECORD_TRIES  # the record is asked again
    assert "Gave up after 3 retries" in err


def test_inside_a_pipeline_the_pipeline_owns_retrying(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    set_tags(config_dir, [], **{"pipeline-id": "0193aaaa-pipe"})
    api.post(STATUS_URL)

    code = fail(runtime)

    assert code == retry.EXIT_RELAUNCH_FAILED
    assert "on-error: retry" in json.loads(api.calls[0].request.body)["status_detail"]


def test_a_lost_create_answer_is_sent_again_and_the_record_names_the_confirmed_one(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    # The lost create may have made a copy all the same: it stands down, as the record names #43.
    expect_detail(api)
    api.post(CREATE_URL, body=requests.ConnectionError("Connection aborted: RemoteDisconnected"))
    api.post(CREATE_URL, json={**CREATED, "id": "the-confirmed-one", "counter": 43}, status=201)
    summary = "ConnectionError: could not connect to db.internal:5432"
    heir = retry.Record("started", 1, heir="the-confirmed-one", cause=summary)
    expect_status_detail(api, f"{summary} - retry 1/3 started as #43", heir)

    assert fail(runtime) == retry.EXIT_RETRY_STARTED
    assert [call.request.method for call in api.calls] == ["GET", "POST", "POST", "POST"]  # no search of the project
    assert "the answer was lost (Connection aborted: RemoteDisconnected); asking once more" in capsys.readouterr().err


def test_creates_that_are_never_confirmed_end_as_unconfirmed_after_three_tries(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    expect_detail(api)
    for _ in range(3):
        api.post(CREATE_URL, status=504)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RETRY_UNCONFIRMED
    assert records(api)[-1] == retry.Record(
        "unconfirmed", 1, cause="ConnectionError: could not connect to db.internal:5432"
    )
    err = capsys.readouterr().err
    assert "may have been started, but the API never confirmed it" in err.splitlines()[-1]
    assert err.count("asking once more (a copy made all the same will stand down)") == 2  # not after the last


def test_a_refusal_after_a_lost_answer_is_unconfirmed_not_could_not_start(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    expect_detail(api)
    api.post(CREATE_URL, status=502)
    api.post(CREATE_URL, status=403, json={"detail": "Forbidden"})
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RETRY_UNCONFIRMED
    assert records(api)[-1].outcome == "unconfirmed"  # type: ignore[union-attr]


def test_the_token_never_appears_in_output_or_status_details(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    expect_detail(api)
    api.post(CREATE_URL, status=401, json={"detail": "Invalid token."})
    api.post(STATUS_URL)

    fail(runtime, requests.ConnectionError(f"proxy echoed {TOKEN}"))

    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert TOKEN not in api.calls[-1].request.body.decode()
    assert (
        "Authorization" not in api.calls[-1].request.headers
        or TOKEN not in api.calls[-1].request.headers["Authorization"]
    )


def test_a_detail_without_parameters_or_inputs_is_completed_from_this_executions_config(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    detail = load_fixture("execution-detail.json")
    del detail["parameters"], detail["inputs"]
    expect_detail(api, detail)
    payload = expected_payload(["nightly", "retry: 1"], instant(clock.now_value + 60))
    assert payload["parameters"] == load_fixture("parameters.json")  # the same, from parameters.json
    assert payload["inputs"] == {"dataset": ["s3://acme-ml-data/churn/train.csv"]}  # and from inputs.json
    api.post(CREATE_URL, json=CREATED, status=201, match=[matchers.json_params_matcher(payload, strict_match=True)])
    expect_status_detail(api, "ConnectionError: could not connect to db.internal:5432 - retry 1/3 started as #42")

    assert fail(runtime, retries=3, delay=60) == retry.EXIT_RETRY_STARTED


def test_payload_never_copies_secrets_or_the_token() -> None:
    detail = load_fixture("execution-detail.json")
    detail["environment_variables"] = {
        "LOG_LEVEL": {"value": "info", "secret": False},
        "DB_PASSWORD": {"value": None, "secret": True},
        "LEAKY": {"value": "shown-but-secret", "secret": True},
        "VH_API_TOKEN": {"value": "plain-token", "secret": False},
        "EMPTY": {"value": "", "secret": False},
    }
    payload = retry.build_retry_payload(detail, 1, parent_id="p")
    assert payload["environment_variables"] == {"LOG_LEVEL": "info", "EMPTY": "", "RETRY_PARENT": "p"}


def test_payload_never_copies_a_variable_that_holds_the_token() -> None:
    token = "0123456789abcdef0123456789abcdef01234567"
    retry._remember_secret(token)
    detail = load_fixture("execution-detail.json")
    detail["environment_variables"] = {
        "LOG_LEVEL": {"value": "info", "secret": False},
        **{
            name: {"value": value, "secret": False}
            for name, value in {
                "AUTH_HEADER": f"Token {token}",
                "QUOTED": f'"{token}"',
                "WITH_NEWLINE": f"{token}\n",
                "REGISTRY": f"https://user:{token}@registry.example",
            }.items()
        },
    }
    payload = retry.build_retry_payload(detail, 1, parent_id="p")
    assert payload["environment_variables"] == {"LOG_LEVEL": "info", "RETRY_PARENT": "p"}


@pytest.mark.parametrize("placeholder", ["1", "-", "e", "TODO"])
def test_a_placeholder_token_is_refused_and_garbles_nothing(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    monkeypatch: pytest.MonkeyPatch,
    placeholder: str,
    capsys: Any,
) -> None:
    # A refused token is never sent, so it is not masked either: masking "e" would garble every
    # line, and "-" or "1" the record's JSON, which the next copy and the controller read.
    monkeypatch.setenv("VH_API_TOKEN", placeholder)
    api.post(STATUS_URL)

    assert retry.handle_failure(raised(requests.ConnectionError("db down")), retry.Policy(), runtime=runtime) == 3
    assert records(api) == [retry.Record("not_started", 1, cause="ConnectionError: db down")]
    err = capsys.readouterr().err
    assert "***" not in err and "VH_API_TOKEN is too short to be an API token" in err


def test_payload_refuses_partial_data() -> None:
    detail = load_fixture("execution-detail.json")
    del detail["commit"]
    with pytest.raises(retry.RetryError, match="lacks commit"):
        retry.build_retry_payload(detail, 1, parent_id="p")


def test_the_payload_is_built_from_the_detail_alone(config_dir: Path) -> None:
    # The controller builds another execution's retry: its own config files must not leak in.
    detail = load_fixture("execution-detail.json")
    del detail["parameters"], detail["inputs"]
    payload = retry.build_retry_payload(detail, 1, parent_id="p")
    assert (payload["parameters"], payload["inputs"]) == ({}, {})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not readable JSON"),
        ('["a list"]', "does not hold a JSON object"),
        ('{"valohai.execution-id": "x"}', "lacks valohai.execution-counter, valohai.project-id"),
    ],
)
def test_bad_execution_json_stops_the_relaunch(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    capsys: Any,
    content: str | None,
    message: str,
) -> None:
    path = config_dir / "execution.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    api.post(STATUS_URL)

    assert fail(runtime) == 3
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_huge_retry_tag_ends_the_chain_with_a_clear_message(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime
) -> None:
    set_tags(config_dir, ["retry: 999999999999"])
    api.post(STATUS_URL)

    assert fail(runtime, retries=100) == 1
    detail = json.loads(api.calls[0].request.body)["status_detail"]
    assert detail.startswith("Not retried: this execution is tagged as retry 1000000000, above the ceiling of 100;")


def test_inside_a_task_the_retry_is_started_and_said_to_run_outside_it(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    set_tags(config_dir, ["nightly"], **{"task-id": "0193bbbb-task"})
    expect_detail(api)
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)

    assert fail(runtime) == 75
    assert "this execution belongs to a task; the retry will run outside the task" in capsys.readouterr().err


def test_a_redirect_is_not_followed_so_the_token_stays_home(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    api.get(DETAIL_URL, status=302, headers={"Location": "https://elsewhere.example.com/api/"})
    api.post(STATUS_URL)

    assert fail(runtime) == 3
    assert all("elsewhere" not in call.request.url for call in api.calls)
    assert "redirected to https://elsewhere.example.com/api/" in capsys.readouterr().err


def test_a_rate_limit_longer_than_the_budget_gives_up_at_once(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    api.get(DETAIL_URL, status=429, headers={"Retry-After": "3600"})
    api.post(STATUS_URL)

    assert fail(runtime) == 3
    assert clock.sleeps == []
    assert "HTTP 429, rate limited (gave up after 1 tries)" in capsys.readouterr().err


def test_the_budget_is_shared_by_all_calls_of_one_relaunch(clock: FakeClock, api: responses.RequestsMock) -> None:
    client = retry.ValohaiAPI(TOKEN, HOST, budget=10, sleep=clock.sleep, clock=clock.now)
    for _ in range(3):
        api.get(DETAIL_URL, status=503)
    api.get(DETAIL_URL, json={})
    api.get(CREATE_URL, status=503)  # answers every try

    client.get(f"/api/v0/executions/{EXECUTION_ID}/")  # spends 0.5 + 1 + 2 s of the 10
    with pytest.raises(retry.APIError, match=r"gave up after 4 tries"):
        client.get("/api/v0/executions/")  # 0.5 + 1 + 2 more; 4 more would pass the budget
    assert clock.sleeps == [0.5, 1, 2, 0.5, 1, 2]  # a budget per call would have allowed 4 more


def test_status_detail_errors_are_swallowed_and_reported(
    config_dir: Path, api: responses.RequestsMock, capsys: Any
) -> None:
    api.post(STATUS_URL, body=requests.ReadTimeout("read timed out"))
    assert retry.set_status_detail("Waiting 5 s before retry 1/3 starts work") is False
    assert "could not set the status detail: read timed out" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "expected"), [("", (5.0, 30.0)), ("2.5", (2.5, 2.5)), ("120", (5.0, 120.0))])
def test_request_timeout_follows_the_variable(value: str, expected: tuple[float, float]) -> None:
    assert retry.request_timeout({"RETRY_API_TIMEOUT": value}) == expected


@pytest.mark.parametrize("value", ["0", "-1", "soon", "601"])
def test_a_bad_request_timeout_is_refused(value: str) -> None:
    with pytest.raises(retry.ConfigError, match="RETRY_API_TIMEOUT"):
        retry.request_timeout({"RETRY_API_TIMEOUT": value})


def test_a_token_with_inner_whitespace_is_refused_without_quoting_it(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("VH_API_TOKEN", "tok-3f9a\n1c7e5b2d")
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    err = capsys.readouterr().err
    assert "VH_API_TOKEN contains spaces, control characters or non-ASCII characters: paste it again" in err
    assert "3f9a" not in err


def test_an_answer_that_is_not_an_object_is_explained(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any
) -> None:
    api.get(DETAIL_URL, json=["not", "an", "object"])
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    assert "HTTP 200 with JSON that is not an object" in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_unexpected_error_while_relaunching_still_ends_with_one_clear_line(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("urls")

    monkeypatch.setattr(retry, "build_retry_payload", broken)
    expect_detail(api)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 2  # the attempt's and the relaunch's
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(
        "[retry] ConnectionError: could not connect to db.internal:5432 - could not start retry"
    )
    assert last_line.endswith("unexpected KeyError: 'urls'")


@pytest.mark.parametrize("status", [500, 503])
def test_a_create_answered_5xx_is_sent_again_and_the_record_names_the_confirmed_one(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, capsys: Any, status: int
) -> None:
    # A gateway's 5xx does not prove that nothing was created: a copy made all the same stands down.
    expect_detail(api)
    api.post(CREATE_URL, status=status, json={"detail": "upstream reset"})
    api.post(CREATE_URL, json=CREATED, status=201)
    summary = "ConnectionError: could not connect to db.internal:5432"
    heir = retry.Record("started", 1, CREATED["id"], summary)
    expect_status_detail(api, f"{summary} - retry 1/3 started as #42", heir)

    assert fail(runtime) == retry.EXIT_RETRY_STARTED
    assert f"HTTP {status}" in capsys.readouterr().err


def test_a_detail_answered_500_is_asked_again(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    api.get(DETAIL_URL, status=500, json={"detail": "oops"})
    expect_detail(api)
    api.post(CREATE_URL, json=CREATED, status=201)
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RETRY_STARTED
    assert clock.sleeps == [0.5]
